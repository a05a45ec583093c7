"""Unit tests: no model file is loaded and no network socket may be opened."""

from __future__ import annotations

import pytest
import pytest_socket


@pytest.fixture(autouse=True)
def _no_network():
    # Unix sockets stay allowed: asyncio's event loop needs a socketpair.
    pytest_socket.disable_socket(allow_unix_socket=True)
    yield
    pytest_socket.enable_socket()
