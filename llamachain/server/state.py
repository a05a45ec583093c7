"""What every request of one server shares: settings, the knowledge base, one model, one embedder.

Everything heavy is built on first use, once, under a lock, so concurrent first requests do not
load the model twice; the model is loaded from :data:`llamachain.model_cache`, so one GGUF file
is in memory once however many routes use it.  Generation is serialised by the engine itself;
the embedder and Chroma are safe to call from several threads.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from llamachain.knowledge import validate_name
from llamachain.settings import Settings

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from llamachain.chat_models import ChatLlama
    from llamachain.documents import DocumentStore
    from llamachain.knowledge import KnowledgeBase
    from llamachain.qa import GroundedQA


class ServerState:
    """The shared parts of a running server.

    ``chat_model`` and ``embeddings`` replace the defaults (``ChatLlama`` on the settings'
    model: greedy, seed 0, no repeat penalty; the knowledge base's embedder) -- tests and
    programs that embed the app use them.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        kb_name: str | None = None,
        chat_model: Any = None,
        embeddings: Embeddings | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.kb_name = validate_name(kb_name or self.settings.server_kb)
        self._chat_model = chat_model
        self._embeddings = embeddings
        self._kb: KnowledgeBase | None = None
        self._documents: DocumentStore | None = None
        self._lock = threading.RLock()

    @property
    def kb(self) -> KnowledgeBase:
        """The served knowledge base (created empty if it does not exist yet)."""
        with self._lock:
            if self._kb is None:
                from llamachain.knowledge import KnowledgeBase

                self._kb = KnowledgeBase(
                    self.kb_name, settings=self.settings, embeddings=self._embeddings
                )
            return self._kb

    @property
    def documents(self) -> DocumentStore:
        with self._lock:
            if self._documents is None:
                from llamachain.documents import DocumentStore

                self._documents = DocumentStore(self.kb)
            return self._documents

    @property
    def embeddings(self) -> Embeddings:
        """The knowledge base's embedder (also what ``/v1/embeddings`` runs)."""
        return self.kb.embeddings

    @property
    def chat_model(self) -> ChatLlama:
        with self._lock:
            if self._chat_model is None:
                from llamachain.chat_models import ChatLlama

                # Greedy, seed 0 and no repeat penalty: OpenAI's defaults have no penalty
                # either, and GroundedQA calls its own models without one.
                self._chat_model = ChatLlama(
                    settings=self.settings, temperature=0.0, seed=0, repeat_penalty=1.0
                )
            return self._chat_model

    @property
    def model_loaded(self) -> bool:
        """Whether the chat model's weights are in memory (without loading them)."""
        engine = getattr(self._chat_model, "engine_", None)
        return bool(getattr(engine, "is_loaded", False))

    @property
    def model_id(self) -> str:
        """The name ``/v1/models`` lists the chat model under."""
        return str(self.chat_model.model_name)

    def qa(self, **options: Any) -> GroundedQA:
        """A grounded-QA chain over the knowledge base and the shared chat model."""
        from llamachain.qa import GroundedQA

        return GroundedQA.from_knowledge_base(
            self.kb, llm=self.chat_model, settings=self.settings, **options
        )
