"""The HTTP server (``llamachain serve``): the retrieval-plugin API over a knowledge base,
grounded answers (``/ask``) and OpenAI-compatible endpoints on the local model and embedder.

Needs the ``server`` extra (FastAPI, uvicorn, python-multipart).
"""

from __future__ import annotations

from llamachain.server.app import check_bind, create_app, is_loopback
from llamachain.server.state import ServerState

__all__ = ["ServerState", "check_bind", "create_app", "is_loopback"]
