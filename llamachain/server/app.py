"""The FastAPI application: routes, bearer-token auth, body limits and error responses.

``create_app(settings)`` builds it; ``llamachain serve`` runs it with uvicorn.  Every endpoint but
``/healthz`` requires ``Authorization: Bearer <token>`` when a token is configured.  Errors are
JSON ``{"detail": "..."}``: 401 (token), 404, 413 (body too large), 415 (file type), 422
(invalid request, with the field that is wrong), 409 (a conflicting operation is running), 503
(model or store unavailable).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from llamachain import __version__
from llamachain.errors import (
    ConfigError,
    ContextOverflowError,
    DocumentLoadError,
    KnowledgeBaseError,
    LlamaChainError,
)
from llamachain.server._limits import BodyLimitMiddleware
from llamachain.server.schemas import ErrorResponse, Health
from llamachain.server.state import ServerState
from llamachain.settings import Settings

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="The server's token (LLAMACHAIN_SERVER_TOKEN).")
# The error bodies the handlers below send, documented on every authenticated route (FastAPI
# would otherwise document its own 422 shape, a list of errors, which these routes never send).
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
    413: {"model": ErrorResponse, "description": "Request body too large."},
    422: {"model": ErrorResponse, "description": "Invalid request; the message names the field."},
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts connections from this machine."""
    if host.strip().lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, settings: Settings, *, allow_no_token: bool = False) -> None:
    """Refuse to serve a non-loopback address without a token (unless explicitly allowed)."""
    if settings.server_token is None and not is_loopback(host) and not allow_no_token:
        raise ConfigError(
            f"refusing to serve {host} without a token: anyone who can reach it could read "
            "and change the knowledge base. Set LLAMACHAIN_SERVER_TOKEN (or --token), bind to "
            "127.0.0.1, or pass --allow-no-token if the network is trusted"
        )


def _auth_dependency(settings: Settings) -> Any:
    expected = settings.server_token.get_secret_value().encode() if settings.server_token else None

    async def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if expected is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        # Constant-time, whatever the lengths (compare_digest hides where they differ).
        if credentials is None or not hmac.compare_digest(given, expected):
            raise StarletteHTTPException(
                status_code=401,
                detail="missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_token


def _status_for(error: LlamaChainError) -> int:
    if isinstance(error, ContextOverflowError | DocumentLoadError | ConfigError):
        return 422
    if isinstance(error, KnowledgeBaseError):
        return 409
    return 503


def validation_message(errors: Sequence[Any], prefix: str = "") -> str:
    """``field.path: message; ...`` for pydantic errors (the first five), each path after
    ``prefix`` (e.g. ``"metadata."`` for a form field validated on its own)."""
    parts = []
    for err in errors[:5]:
        where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        where = prefix + where if where else prefix.rstrip(".") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = len(errors) - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def http_error(exc: StarletteHTTPException) -> tuple[int, str]:
    """``(status, detail)`` to answer an HTTP exception with.  FastAPI's answer to a body it
    cannot decode at all (not UTF-8, a broken multipart stream) is a bare 400; here it is an
    invalid request like any other."""
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        return 422, (
            "invalid request: the body cannot be read (send UTF-8 JSON, or multipart form "
            "data for /upsert-file)"
        )
    return exc.status_code, str(exc.detail)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            status_code=422,
            content={"detail": f"invalid request: {validation_message(exc.errors())}"},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status, detail = http_error(exc)
        return JSONResponse(status_code=status, content={"detail": detail}, headers=exc.headers)

    @app.exception_handler(LlamaChainError)
    async def _library(request: Request, exc: LlamaChainError) -> JSONResponse:
        status = _status_for(exc)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(status_code=status, content={"detail": str(exc)})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return JSONResponse(
            status_code=500,
            content={"detail": f"internal error ({type(exc).__name__}); see the server log"},
        )


def create_app(settings: Settings | None = None, *, state: ServerState | None = None) -> FastAPI:
    """The server's ASGI application over ``state`` (default: one built from ``settings``)."""
    if state is None:
        state = ServerState(settings)
    settings = state.settings
    app = FastAPI(
        title="llamachain",
        version=__version__,
        description=(
            "Retrieval-plugin API (upsert, query, delete) over a llamachain knowledge base, "
            "grounded answers with citations (/ask), and OpenAI-compatible chat completions, "
            "embeddings and models, all on the local model and embedder."
        ),
        # The OpenAPI document is served below, behind the token like everything but health.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.llamachain = state
    _install_error_handlers(app)
    if settings.server_cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.server_cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=int(settings.server_max_body_mb * 1024 * 1024),
        upload_bytes=int(settings.server_max_upload_mb * 1024 * 1024),
        upload_paths=("/upsert-file",),
    )

    @app.get("/healthz", response_model=Health, tags=["server"])
    async def healthz() -> Health:
        """Liveness: answers at once, whatever else the server is doing (no auth)."""
        return Health(
            status="ok",
            version=__version__,
            knowledge_base=state.kb_name,
            model_loaded=state.model_loaded,
        )

    from llamachain.server import _ask, _openai, _plugin, _tokens

    auth = [Depends(_auth_dependency(settings))]
    for module in (_plugin, _ask, _openai, _tokens):
        app.include_router(module.router(state), dependencies=auth, responses=_ERRORS)

    @app.get("/openapi.json", include_in_schema=False, dependencies=auth)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    return app
