"""A separate process that ingests a folder with FakeEmbeddings; the crash tests kill it.

Usage: python ingest_worker.py ingest HOME KB_NAME FOLDER [BATCH_SIZE]
       python ingest_worker.py dump HOME KB_NAME
``ingest`` prints "ready" once imports are done, then the summary as JSON; ``dump`` prints the
whole store (see ``kb_helpers.dump_store``) as JSON.  Each runs in a fresh process so that no
client caches state across a killed writer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llamachain.knowledge import KnowledgeBase
from llamachain.settings import Settings
from llamachain.testing import FakeEmbeddings


def main() -> None:
    command, home, name = sys.argv[1], sys.argv[2], sys.argv[3]
    settings = Settings(home=Path(home), chunk_overlap=8)
    if command == "dump":
        from llamachain._chroma import make_client

        sys.path.insert(0, str(Path(__file__).parent))
        from kb_helpers import dump_store

        print(json.dumps(dump_store(make_client(settings), name), sort_keys=True))
        return
    folder = sys.argv[4]
    settings.embedding_batch_size = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    kb = KnowledgeBase(name, settings=settings, embeddings=FakeEmbeddings(max_chunk_tokens=48))
    _ = kb.vectorstore, kb.manifest  # open the store before saying ready
    print("ready", flush=True)
    summary = kb.ingest([folder])
    print(json.dumps(summary.to_dict()), flush=True)


if __name__ == "__main__":
    main()
