"""Exact token counts for a model served elsewhere (``llamachain serve`` or llama.cpp's server).

LangChain's ``ChatOpenAI`` counts tokens with tiktoken: the wrong tokenizer for a local model,
and on an offline machine no tokenizer at all (tiktoken downloads its tables), so a
:class:`~llamachain.qa.GroundedQA` over it has to estimate.  :class:`RemoteTokenizer` asks the
server's ``/tokenize`` instead, so packing counts exactly what the served model will read:

>>> tok = RemoteTokenizer("http://127.0.0.1:8080", api_key=TOKEN)           # doctest: +SKIP
>>> llm = ChatOpenAI(base_url=tok.base_url + "/v1", api_key=TOKEN,         # doctest: +SKIP
...                  model="local", custom_get_token_ids=tok.token_ids)
>>> qa = GroundedQA.from_knowledge_base("docs", llm=llm, context_window=tok.n_ctx)  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from llamachain.errors import ConfigError, LlamaChainError

_CACHE = 4096  # texts whose ids are remembered (packing asks about the same chunks again)


class RemoteTokenizer:
    """The token ids of a served model, through its ``POST /tokenize`` (llama.cpp's shape:
    ``{"content"}`` → ``{"tokens"}``), with the server's bearer token if it needs one."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 30.0):
        base = base_url.rstrip("/")
        if base.endswith("/v1"):
            base = base[: -len("/v1")]
        if not base.startswith(("http://", "https://")):
            raise ConfigError(f"base_url {base_url!r} must start with http:// or https://")
        self.base_url = base
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._cache: OrderedDict[str, list[int]] = OrderedDict()
        self._lock = threading.Lock()
        self._client: Any = None

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.Client(
                base_url=self.base_url, headers=self._headers, timeout=self._timeout
            )
        return self._client

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http().request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise LlamaChainError(f"cannot reach {self.base_url}{path}: {e}") from e
        if response.status_code != 200:
            try:
                detail = response.json().get("detail") or response.text
            except ValueError:
                detail = response.text
            raise LlamaChainError(
                f"{self.base_url}{path} answered {response.status_code}: {str(detail)[:300]}"
            )
        return response.json()

    def token_ids(self, text: str) -> list[int]:
        """The served model's ids for ``text`` (no BOS), for ``custom_get_token_ids``."""
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return list(hit)
        ids = [int(t) for t in self._call("POST", "/tokenize", json={"content": text})["tokens"]]
        with self._lock:
            self._cache[text] = ids
            if len(self._cache) > _CACHE:
                self._cache.popitem(last=False)
        return list(ids)

    def count(self, text: str) -> int:
        return len(self.token_ids(text))

    @property
    def n_ctx(self) -> int:
        """The served model's context window (``GET /props``; llama.cpp's shape works too)."""
        props = self._call("GET", "/props")
        n_ctx = props.get("n_ctx") or (props.get("default_generation_settings") or {}).get("n_ctx")
        if not isinstance(n_ctx, int) or n_ctx <= 0:
            raise LlamaChainError(f"{self.base_url}/props does not say the context window")
        return n_ctx

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> RemoteTokenizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
