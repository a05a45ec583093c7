"""Placeholder router (being written)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter


def router(state: Any) -> APIRouter:
    return APIRouter()
