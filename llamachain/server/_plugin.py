"""The retrieval-plugin routes: /upsert, /upsert-file, /query, /delete and the plugin manifest.

Thin: each route turns its request into :mod:`llamachain.documents` calls.  The routes are plain
``def`` functions, so FastAPI runs them in its thread pool and a slow embedding or Chroma call
never holds up the event loop (``/healthz`` and streamed answers go on meanwhile).
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from pydantic import ValidationError

from llamachain.server.schemas import (
    DeleteRequest,
    DeleteResponse,
    DocumentChunkMetadata,
    DocumentChunkWithScore,
    DocumentMetadata,
    DocumentMetadataFilter,
    ErrorResponse,
    QueryRequest,
    QueryResponse,
    QueryResult,
    UpsertRequest,
    UpsertResponse,
)

if TYPE_CHECKING:
    from llamachain import documents as docs
    from llamachain.server.state import ServerState

_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")
_COPY_BLOCK = 1 << 20


def _metadata(m: DocumentMetadata | None) -> docs.DocumentMetadata:
    from llamachain.documents import DocumentMetadata as Meta

    if m is None:
        return Meta()
    return Meta(
        source=m.source.value if m.source is not None else None,
        source_id=m.source_id,
        url=m.url,
        created_at=m.created_at,
        author=m.author,
    )


def _filter(f: DocumentMetadataFilter | None) -> docs.DocumentFilter | None:
    from llamachain.documents import DocumentFilter

    if f is None:
        return None
    out = DocumentFilter(
        document_id=f.document_id,
        source=f.source.value if f.source is not None else None,
        source_id=f.source_id,
        author=f.author,
        start_date=f.start_date,
        end_date=f.end_date,
    )
    return None if out.is_empty() else out


def safe_filename(name: str | None) -> str:
    """A file name to store an upload under: the last path component, harmless characters only.

    ``../../etc/passwd`` becomes ``passwd``; a name with nothing usable left becomes
    ``upload``; the extension (which decides how the file is read) is kept.
    """
    base = re.split(r"[\\/]", name or "")[-1]
    base = _UNSAFE.sub("_", base).strip(" .")
    return base[:200] or "upload"


def _hit(h: docs.ChunkHit) -> DocumentChunkWithScore:
    meta = h.metadata.to_dict()
    return DocumentChunkWithScore(
        id=h.id,
        text=h.text,
        metadata=DocumentChunkMetadata(**meta, document_id=h.document_id),
        embedding=h.embedding,
        score=h.score,
    )


def router(state: ServerState) -> APIRouter:
    r = APIRouter(tags=["retrieval plugin"])

    @r.post("/upsert", response_model=UpsertResponse)
    def upsert(request: UpsertRequest) -> UpsertResponse:
        """Add or replace documents (an existing id is replaced); returns their ids in order.

        All or nothing: if any document fails, none of the request's changes are kept."""
        from llamachain.documents import DocumentInput

        inputs = [
            DocumentInput(text=d.text, id=d.id, metadata=_metadata(d.metadata))
            for d in request.documents
        ]
        return UpsertResponse(ids=state.documents.upsert(inputs))

    @r.post(
        "/upsert-file",
        response_model=UpsertResponse,
        responses={415: {"model": ErrorResponse, "description": "Unsupported file type."}},
    )
    def upsert_file(
        file: Annotated[UploadFile, File(description="txt, md, rst, html, pdf, docx or man page.")],
        metadata: Annotated[
            str | None, Form(description="JSON object with the document's metadata fields.")
        ] = None,
    ) -> UpsertResponse:
        """Add one file as a document; its text is extracted the way ingestion reads it."""
        from llamachain.ingest.loaders import SUPPORTED_TYPES, detect_type

        meta = _parse_metadata(metadata)
        name = safe_filename(file.filename)
        if detect_type(Path(name)) is None:
            raise HTTPException(
                status_code=415,
                detail=f"unsupported file type {Path(name).suffix or '(no extension)'!r} for "
                f"{name!r}; supported: {', '.join(SUPPORTED_TYPES)}",
            )
        limit = int(state.settings.server_max_upload_mb * 1024 * 1024)
        # A directory of its own per upload: concurrent uploads of one name never collide.
        with tempfile.TemporaryDirectory(prefix="llamachain-upload-") as tmp:
            path = Path(tmp) / name
            size = 0
            with open(path, "wb") as out:
                while block := file.file.read(_COPY_BLOCK):
                    size += len(block)
                    if size > limit:
                        raise HTTPException(
                            status_code=413,
                            detail=f"file too large (over {state.settings.server_max_upload_mb:g}"
                            " MiB)",
                        )
                    out.write(block)
            doc_id = state.documents.upsert_file(path, metadata=_metadata(meta), filename=name)
        return UpsertResponse(ids=[doc_id])

    @r.post("/query", response_model=QueryResponse)
    def query(request: QueryRequest) -> QueryResponse:
        """Each query's top chunks (hybrid dense + BM25 retrieval), best first."""
        out = []
        for q in request.queries:
            hits = state.documents.query(q.query, top_k=q.top_k or 3, filter=_filter(q.filter))
            out.append(QueryResult(query=q.query, results=[_hit(h) for h in hits]))
        return QueryResponse(results=out)

    @r.delete("/delete", response_model=DeleteResponse)
    def delete(request: DeleteRequest) -> DeleteResponse:
        """Remove documents by id, by metadata filter, or all of them (``delete_all``)."""
        n = state.documents.delete(
            ids=request.ids or None,
            filter=_filter(request.filter),
            delete_all=bool(request.delete_all),
        )
        return DeleteResponse(success=True, deleted=n)

    @r.get("/.well-known/ai-plugin.json", tags=["server"])
    def plugin_manifest(request: Request) -> dict[str, Any]:
        """The ChatGPT plugin manifest, pointing at this server's OpenAPI document."""
        base = str(request.base_url).rstrip("/")
        auth: dict[str, Any] = (
            {"type": "user_http", "authorization_type": "bearer"}
            if state.settings.server_token is not None
            else {"type": "none"}
        )
        return {
            "schema_version": "v1",
            "name_for_human": "llamachain retrieval",
            "name_for_model": "retrieval",
            "description_for_human": "Search and answer from your own documents, locally.",
            "description_for_model": (
                "Search the user's documents for passages relevant to a question with /query "
                f"(knowledge base {state.kb_name!r}). Use it whenever the user asks about their "
                "own files, notes or documents; cite the passages you use."
            ),
            "auth": auth,
            "api": {
                "type": "openapi",
                "url": f"{base}/openapi.json",
                "is_user_authenticated": False,
            },
            "logo_url": "",
            "contact_email": "",
            "legal_info_url": "",
        }

    return r


def _parse_metadata(raw: str | None) -> DocumentMetadata | None:
    if raw is None or not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise HTTPException(422, f"invalid request: metadata is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise HTTPException(422, "invalid request: metadata must be a JSON object")
    try:
        return DocumentMetadata.model_validate(data)
    except ValidationError as e:
        from llamachain.server.app import validation_message

        message = validation_message(e.errors(), "metadata.")
        raise HTTPException(422, f"invalid request: {message}") from None
