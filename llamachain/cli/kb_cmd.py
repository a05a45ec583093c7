"""``llamachain ingest``, ``llamachain kb list|stats|delete`` and ``llamachain search``."""

from __future__ import annotations

from typing import Any

import click

from llamachain.cli._common import emit, json_option, progress_option, settings, table, wants_json

_KB = click.option(
    "--kb",
    "kb_name",
    default="default",
    show_default=True,
    metavar="NAME",
    help="Knowledge base name (stored under LLAMACHAIN_HOME, or on LLAMACHAIN_CHROMA_HOST).",
)


def _open(ctx: click.Context, name: str, *, create: bool) -> Any:
    from llamachain.knowledge import KnowledgeBase

    return KnowledgeBase(name, settings=settings(ctx), create=create)


@click.command("ingest", short_help="Add files and directories to a knowledge base.")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@_KB
@click.option("--include", multiple=True, metavar="GLOB", help="Only files matching (repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip files matching (repeatable).")
@click.option("--chunk-tokens", type=click.IntRange(min=16), help="Chunk size in embedder tokens.")
@click.option("--overlap", type=click.IntRange(min=0), help="Tokens shared by adjacent chunks.")
@progress_option
@json_option
@click.pass_context
def ingest(
    ctx: click.Context,
    paths: tuple[str, ...],
    kb_name: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    chunk_tokens: int | None,
    overlap: int | None,
    progress: bool,
) -> None:
    """Ingest PATHs: new and changed files are embedded, unchanged ones skipped, and files
    deleted from under the given directories removed.  Interrupting is safe: run it again."""
    kb = _open(ctx, kb_name, create=True)
    summary = kb.ingest(
        list(paths),
        include=include,
        exclude=exclude,
        progress=progress,
        chunk_tokens=chunk_tokens,
        chunk_overlap=overlap,
    )
    data = {"kb": kb_name, **summary.to_dict()}

    def human() -> None:
        click.echo(
            f"{kb_name}: {summary.added} added, {summary.updated} updated, "
            f"{summary.skipped} unchanged, {summary.removed} removed, "
            f"{len(summary.failed)} failed; {summary.chunks_added} chunks written "
            f"({summary.chunks_embedded} embedded, {summary.chunks_reused} reused), "
            f"{summary.chunks_removed} removed in {summary.seconds:.1f} s "
            f"({summary.chunks_per_second:.1f} chunks/s)"
        )
        for path, reason in summary.failed:
            click.echo(f"  failed: {path}: {reason}", err=True)

    emit(ctx, data, human)
    if summary.failed:
        ctx.exit(3 if summary.files_seen == len(summary.failed) else 0)


@click.group("kb", short_help="List, inspect and delete knowledge bases.")
def kb() -> None:
    """List, inspect and delete knowledge bases."""


@kb.command("list")
@json_option
@click.pass_context
def kb_list(ctx: click.Context) -> None:
    """List the knowledge bases."""
    from llamachain.knowledge import KnowledgeBase

    rows = KnowledgeBase.list(settings(ctx))

    def human() -> None:
        if not rows:
            click.echo("no knowledge bases yet; create one with `llamachain ingest PATH --kb NAME`")
            return
        click.echo(
            table(
                [[r["name"], str(r["chunks"]), str(r["embedding_model"] or "?")] for r in rows],
                ["NAME", "CHUNKS", "EMBEDDING MODEL"],
            )
        )

    emit(ctx, {"knowledge_bases": rows}, human)


@kb.command("stats")
@click.argument("name")
@json_option
@click.pass_context
def kb_stats(ctx: click.Context, name: str) -> None:
    """Show a knowledge base's size, file types and embedding model."""
    stats = _open(ctx, name, create=False).stats()

    def human() -> None:
        for key, value in stats.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k or '?'}: {v}" for k, v in value.items()) or "-"
            click.echo(f"{key.replace('_', ' '):20} {value}")

    emit(ctx, stats, human)


@kb.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
def kb_delete(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete a knowledge base (its chunks and manifest; the source files are untouched)."""
    base = _open(ctx, name, create=False)
    if not yes and not wants_json(ctx):
        click.confirm(f"delete knowledge base {name!r}?", abort=True, err=True)
    base.delete()
    emit(ctx, {"deleted": name}, lambda: click.echo(f"deleted {name}"))


@click.command("search", short_help="Show the chunks a knowledge base retrieves for a query.")
@click.argument("query")
@_KB
@click.option("-k", "k", type=click.IntRange(min=1), help="Number of chunks (default: 4).")
@click.option("--mode", type=click.Choice(["hybrid", "dense", "bm25"]), help="Retrieval method.")
@click.option("--source", multiple=True, metavar="PATH", help="Only chunks from these files.")
@click.option("--type", "file_types", multiple=True, metavar="EXT", help="Only these file types.")
@json_option
@click.pass_context
def search(
    ctx: click.Context,
    query: str,
    kb_name: str,
    k: int | None,
    mode: str | None,
    source: tuple[str, ...],
    file_types: tuple[str, ...],
) -> None:
    """Print the top chunks for QUERY with their source file, section and score."""
    from pathlib import Path

    base = _open(ctx, kb_name, create=False)
    clauses: list[dict[str, Any]] = []
    if source:
        paths = [str(Path(s).expanduser().resolve()) for s in source]
        clauses.append(
            {"$or": [{"sources": {"$contains": p}} for p in paths]}
            if len(paths) > 1
            else {"sources": {"$contains": paths[0]}}
        )
    if file_types:
        types = [t.lstrip(".").lower() for t in file_types]
        clauses.append({"file_type": {"$in": types}})
    where = None if not clauses else clauses[0] if len(clauses) == 1 else {"$and": clauses}
    docs = base.search(query, k=k, mode=mode, filter=where)
    rows = [
        {
            "rank": i + 1,
            "id": d.id,
            "score": d.metadata.get("score"),
            "source": d.metadata.get("source"),
            "file_name": d.metadata.get("file_name"),
            "heading": d.metadata.get("heading", ""),
            "page": d.metadata.get("page"),
            "text": d.page_content,
        }
        for i, d in enumerate(docs)
    ]

    def human() -> None:
        if not rows:
            click.echo("no matching chunks")
        for r in rows:
            where_ = r["file_name"] + (f" p.{r['page']}" if r["page"] else "")
            if r["heading"]:
                where_ += f" > {r['heading']}"
            score = r["score"]
            click.echo(
                f"[{r['rank']}] {where_}  (score {score:.4f})"
                if score is not None
                else f"[{r['rank']}] {where_}"
            )
            snippet = " ".join(str(r["text"]).split())
            click.echo(f"    {snippet[:300]}{'...' if len(snippet) > 300 else ''}")

    emit(ctx, {"kb": kb_name, "query": query, "results": rows}, human)
