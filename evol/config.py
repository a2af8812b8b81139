"""Run configuration: one model for flags and YAML config files.

A YAML file's keys are the flags' names (dashes or underscores both work); flags given on
the command line win over the file, and the file wins over the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evol.operators import DEFAULT_MIX, validate_mix
from evol.redact import redact_url, url_credentials_problem



class ConfigError(ValueError):
    pass


class EvolveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    input: str
    out: str
    rounds: int = Field(3, ge=1, le=20)
    backend: str | None = None  # openai, vllm or hf; None: settled by evol.backends.settle_backend
    model: str = ""
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    judge_model: str | None = None
    image_root: str | None = None
    max_side: int = Field(1344, ge=0)
    # images above this many pixels are an input fault ("image too large: W x H"); every
    # normal photo passes (a 48-megapixel phone photo included)
    max_pixels: int = Field(100_000_000, ge=1)
    # http(s) image URLs are fetched by the model server, not by evol: off unless asked
    allow_image_urls: bool = False
    image_detail: str = "auto"
    send_images: bool = True
    judge_image: bool = True
    concurrency: int = Field(64, ge=1)
    rpm: float | None = None
    tpm: float | None = None
    timeout: float = Field(120.0, gt=0)
    max_attempts: int = Field(6, ge=1)
    seed: int = 0
    mix: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_MIX))
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 2048
    judge_temperature: float = 0.0
    min_score: float = Field(0.0, ge=0, le=10)
    include_seeds: bool = False
    input_format: str = "auto"
    limit: int | None = None
    device: str = "auto"  # local backends: auto, cpu, cuda, cuda:1 ...
    batch_size: int = Field(8, ge=1)  # hf backend: requests decoded together at most
    # hf backend: longest JSON string / list in constrained decoding (None: the schema's own;
    # the embedded default gets 200 / 5 unless these are set)
    max_string: int | None = Field(None, ge=1)
    max_items: int | None = Field(None, ge=1)
    # openai backend: how the JSON schema goes to the server (evol.backends.openai): auto
    # finds the way the server takes (json_schema -> json_object -> prompt); a fixed one is
    # used as it is
    structured: str = "auto"
    # openai backend: check the server before the first record (evol.backends.preflight)
    preflight: bool = True
    # the preflight found that the server ignores images: go on with each record's caption
    # and boxes in the prompt ("captions"), or stop ("stop")
    text_only_server: str = "captions"

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str | None) -> str | None:
        if v is not None and v not in ("openai", "vllm", "hf"):
            raise ValueError(f"unknown backend {v!r} (available: openai, vllm, hf)")
        return v

    @field_validator("structured")
    @classmethod
    def _known_structured(cls, v: str) -> str:
        choices = ("auto", "json_schema", "json_object", "ollama", "prompt")
        if v not in choices:
            raise ValueError(f"unknown structured-output mode {v!r} (available: {', '.join(choices)})")
        return v

    @field_validator("text_only_server")
    @classmethod
    def _known_text_only(cls, v: str) -> str:
        if v not in ("captions", "stop"):
            raise ValueError(f"--text-only-server must be captions or stop, not {v!r}")
        return v

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        problem = url_credentials_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("mix", mode="before")
    @classmethod
    def _parse_mix(cls, v: Any) -> Any:
        return validate_mix(parse_mix(v) if isinstance(v, str) else v)

    def public(self) -> dict[str, Any]:
        """The config as stored in the manifest. Holds the key's variable name, never a key
        (and a key written into --base-url is masked)."""
        data = self.model_dump()
        data["base_url"] = redact_url(data["base_url"])
        return data


def parse_mix(text: str) -> dict[str, float]:
    """Parse "perceptual=1,reasoning=1,interaction=2" into weights."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, weight = part.partition("=")
        if not sep:
            raise ConfigError(f"--mix entry {part!r} should look like name=weight")
        try:
            mix[name.strip()] = float(weight)
        except ValueError:
            raise ConfigError(f"--mix weight for {name!r} is not a number: {weight!r}") from None
    return mix


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of flag names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


# Flags that change how `evolve` runs this time, not what the run is: a config file may
# hold them (its keys match the flags), but they are not part of the stored config.
INVOCATION_KEYS = ("dry_run", "verbose", "retry_failed")


def build_config(cli: dict[str, Any], config_file: str | None) -> tuple[EvolveConfig, dict[str, bool]]:
    """Merge defaults < YAML file < explicit flags (flags left unset are None).

    Returns the config and the file's `dry_run` / `verbose` / `retry_failed` (False when absent).
    """
    merged: dict[str, Any] = load_yaml(config_file) if config_file else {}
    invocation = {key: bool(merged.pop(key, False)) for key in INVOCATION_KEYS}
    merged.update({k: v for k, v in cli.items() if v is not None})
    try:
        return EvolveConfig(**merged), invocation
    except ValidationError as exc:
        msgs = [f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid configuration: " + "; ".join(msgs)) from None
