"""Settings: one pydantic model per command, the one place a setting is declared.

Each field holds a setting's type, default, limits and help text. The command line builds
its flags from these models (`evol.cli`), a YAML file's keys are the field names (dashes or
underscores both work), and the Python API (`evol.evolve(...)` and friends) takes the same
names as keyword arguments. Precedence: flags > YAML file > defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evol.errors import ConfigError
from evol.operators import DEFAULT_MIX, validate_mix
from evol.redact import redact_url, url_credentials_problem

__all__ = ["ConfigError", "EvolveConfig", "RunOptions", "ModelAccess", "SvitConfig", "InstructConfig",
           "ProvisionConfig", "AnalyzeConfig", "ReportConfig", "SelectConfig", "ExportConfig", "FilterConfig",
           "StatusConfig", "DemoConfig", "build_config", "make_config", "load_yaml", "parse_mix"]


def setting(default: Any = ..., help: str = "", *, flag: str | tuple[str, ...] | None = None,
            show: str | None = None, argument: bool = False, repeat: bool = False, **limits: Any) -> Any:
    """A field with what the command line needs: its help, its flag names (`flag`, e.g.
    "--send-images/--no-images"), how its default reads in the help (`show`; "" hides it),
    whether it is a positional `argument`, and whether a list flag is given once per value
    (`repeat`) rather than comma-separated."""
    cli = {k: v for k, v in dict(flag=flag, show=show, argument=argument, repeat=repeat).items() if v}
    if show == "":
        cli["show"] = ""
    return Field(default, description=help, json_schema_extra={"cli": cli} if cli else None, **limits)


def no_credentials(v: Any, prefix: str = "") -> Any:
    """Server URLs (one, or a list of endpoints) must hold no key or password; the refusal
    names the flags to use instead (`prefix` "judge-" for the judge's)."""
    for url in ([e.url for e in v] if isinstance(v, list) else [v]):
        problem = url_credentials_problem(url)
        if problem:
            raise ValueError(problem.replace("--base-url", f"--{prefix}base-url").replace(
                "--api-key-env", f"--{prefix}api-key-env"))
    return v


def known_backend(v: str | None, what: str) -> str | None:
    if v is not None and v not in ("openai", "vllm", "hf"):
        raise ValueError(f"unknown {what} {v!r} (available: openai, vllm, hf)")
    return v


def _comma_list(v: Any) -> Any:
    """Lists may be given as "a,b,c" (a flag, a YAML string) or as a list."""
    if isinstance(v, str):
        return [x.strip() for x in v.split(",") if x.strip()]
    return v


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_assignment=False)


class ModelAccess(Settings):
    """How a command reaches its model and how hard it pushes it (evolve and the LLM seed commands)."""

    backend: str | None = setting(None, "openai (a server), hf (transformers) or vllm (offline)",
                                  show="openai with --base-url/--model, else the embedded hf default")
    model: str = setting("", "Model name the server knows; hf/vllm: a local model folder or .gguf file", show="")
    device: str = setting("auto", "Local backends: auto, cpu, cuda or cuda:N")
    batch_size: int = setting(8, "Local backends: requests decoded together at most", ge=1)
    base_url: str | None = setting(None, "OpenAI-compatible server, e.g. http://localhost:8000/v1")
    api_key_env: str = setting("OPENAI_API_KEY", "Environment variable holding the API key (never the key itself)")
    concurrency: int = setting(64, "Requests in flight at most", ge=1)
    rpm: float | None = setting(None, "Requests per minute at most")
    tpm: float | None = setting(None, "Tokens per minute at most")
    timeout: float = setting(120.0, "Seconds per request before it is retried", gt=0)
    max_attempts: int = setting(6, "Tries per request", ge=1)
    temperature: float = setting(0.7, "Sampling temperature")
    max_tokens: int = setting(2048, "Answer length limit", ge=1)
    seed: int = setting(0, "Seed for every random choice and for sampling")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str | None) -> str | None:
        return known_backend(v, "backend")

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, v: Any) -> Any:
        return no_credentials(v)


class Endpoint(BaseModel):
    """One server of a list: its URL and, when it differs from --concurrency, its own."""

    model_config = ConfigDict(extra="forbid")

    url: str
    concurrency: int | None = Field(None, ge=1)


def _endpoints(v: Any) -> Any:
    """A URL, or a list of URLs and {url, concurrency} mappings, as a list (None: unset)."""
    if v is None or v == [] or v == "":
        return None
    return [{"url": e} if isinstance(e, str) else e for e in (v if isinstance(v, list) else [v])]


def _public_endpoints(endpoints: list[Endpoint] | None) -> Any:
    """As the manifest keeps them: redacted URLs; a mapping only where a concurrency was given."""
    if not endpoints:
        return None
    return [redact_url(e.url) if e.concurrency is None else {"url": redact_url(e.url), "concurrency": e.concurrency}
            for e in endpoints]


class EvolveConfig(ModelAccess):
    """`evol evolve` / `evol.evolve`: what the run is. Stored in the run's manifest."""

    base_url: list[Endpoint] | None = setting(
        None, "OpenAI-compatible server, e.g. http://localhost:8000/v1; repeat the flag for several servers "
        "(each call goes to the least-loaded healthy one; --concurrency is per server; YAML: a list of URLs or "
        "{url, concurrency})",
        flag="--base-url", repeat=True)
    judge_backend: str | None = setting(None, "The judge's backend: openai, hf or vllm",
                                        show="openai with --judge-base-url, else the evolver's")
    judge_base_url: list[Endpoint] | None = setting(
        None, "The judge's own server(s), repeatable like --base-url", flag="--judge-base-url", repeat=True,
        show="the evolver's servers")
    judge_api_key_env: str | None = setting(None, "Environment variable holding the judge's API key",
                                            show="--api-key-env")
    judge_concurrency: int | None = setting(None, "The judge's requests in flight at most (per server)", ge=1,
                                            show="--concurrency")
    judge_rpm: float | None = setting(None, "The judge's requests per minute at most")
    judge_tpm: float | None = setting(None, "The judge's tokens per minute at most")
    price_in: float | None = setting(None, "Price of a million input tokens of the evolver (for the cost shown)",
                                     ge=0, show="unknown")
    price_out: float | None = setting(None, "Price of a million output tokens of the evolver", ge=0, show="unknown")
    judge_price_in: float | None = setting(None, "Price of a million input tokens of the judge", ge=0,
                                           show="the evolver's when the judge is the same model on the same servers")
    judge_price_out: float | None = setting(None, "Price of a million output tokens of the judge", ge=0,
                                            show="the evolver's when the judge is the same model on the same servers")

    input: str = setting(..., "Seed file: LLaVA JSON/JSONL, MMEvol records or evol JSONL", argument=True)
    out: str = setting(..., "Run folder (created; rerun to resume)", flag="--out")
    rounds: int = setting(3, "Evolution rounds", ge=1, le=20)
    judge_model: str | None = setting(None, "Judge with another model (on --judge-base-url, else on the evolver's "
                                      "servers; hf/vllm: a local model)")
    max_string: int | None = setting(None, "hf backend: longest JSON string it may write", ge=1,
                                     show="no limit; 200 for the embedded default")
    max_items: int | None = setting(None, "hf backend: longest JSON list it may write", ge=1,
                                    show="no limit; 5 for the embedded default")
    image_root: str | None = setting(None, "Images are read under this folder only")
    max_side: int = setting(1344, "Downscale images so the longer side fits; 0 sends originals", ge=0)
    # every normal photo passes (a 48-megapixel phone photo included)
    max_pixels: int = setting(100_000_000, "Images with more pixels are rejected as too large", ge=1)
    # http(s) image URLs are fetched by the model server, not by evol: off unless asked
    allow_image_urls: bool = setting(False, "Pass http(s) image URLs to the model server, which fetches them",
                                     flag="--allow-image-urls/--no-image-urls")
    image_detail: str = setting("auto", "OpenAI image detail: auto, low or high")
    send_images: bool = setting(True, "Send pixels to the model", flag="--send-images/--no-images")
    judge_image: bool = setting(True, "The judge sees the image", flag="--judge-image/--judge-no-image")
    structured: str = setting("auto", "openai backend: how the JSON schema goes to the server: auto, json_schema, "
                              "json_object (llama.cpp), ollama or prompt",
                              show="auto: the preflight finds the way the server takes")
    preflight: bool = setting(True, "openai backend: check the server, the model name, structured output and "
                              "images before the first record", flag="--preflight/--no-preflight")
    text_only_server: str = setting("captions", "The preflight found a server that ignores images: captions (go on, "
                                    "each record's caption and boxes in the prompt instead) or stop")
    mix: dict[str, float] = setting(default_factory=lambda: dict(DEFAULT_MIX),
                                    help="Operator weights, e.g. perceptual=1,reasoning=1,interaction=1",
                                    show="equal weights")
    top_p: float = setting(1.0, "Nucleus sampling for evolution")
    judge_temperature: float = setting(0.0, "Sampling temperature of the judge")
    checks: list[str] = setting(default_factory=lambda: ["rules", "judge"],
                                help="Elimination stages, comma separated: rules, judge, blind (answered "
                                     "without the picture?), answer (the model's own answer agrees?); blind and "
                                     "answer cost a call each per record and round", show="rules,judge")
    min_score: float = setting(0.0, "Keep only improved items scored at least this", ge=0, le=10)
    include_seeds: bool = setting(False, "Also write seed items to llava.json", flag="--include-seeds/--no-seeds")
    input_format: str = setting("auto", "auto, llava, mmevol or evol")
    limit: int | None = setting(None, "Only the first N input records", ge=1)

    _lists = field_validator("base_url", "judge_base_url", mode="before")(classmethod(lambda cls, v: _endpoints(v)))

    @field_validator("checks", mode="before")
    @classmethod
    def _known_checks(cls, v: Any) -> Any:
        from evol.eliminator.stages import STAGES

        v = _comma_list(v)
        if isinstance(v, list):
            unknown = [c for c in v if c not in STAGES]
            if unknown:
                raise ValueError(f"unknown check {', '.join(map(repr, unknown))} (available: {', '.join(STAGES)})")
            if "judge" not in v:
                raise ValueError("the judge cannot be left out of --checks: it decides what improved")
            v = [c for c in STAGES if c in v]  # always run in their own order
        return v

    @field_validator("judge_base_url")
    @classmethod
    def _judge_no_credentials(cls, v: Any) -> Any:
        return no_credentials(v, "judge-")

    @field_validator("judge_backend")
    @classmethod
    def _known_judge_backend(cls, v: str | None) -> str | None:
        return known_backend(v, "judge backend")

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

    @field_validator("mix", mode="before")
    @classmethod
    def _parse_mix(cls, v: Any) -> Any:
        return validate_mix(parse_mix(v) if isinstance(v, str) else v)

    def public(self) -> dict[str, Any]:
        """The config as stored in the manifest. Holds the key's variable name, never a key
        (and a key written into --base-url is masked)."""
        data = self.model_dump()
        data["base_url"] = _public_endpoints(self.base_url)
        data["judge_base_url"] = _public_endpoints(self.judge_base_url)
        return data

    @property
    def judge_shares(self) -> bool:
        """The judge is the evolver's model on the evolver's servers, limits and key."""
        return (self.judge_model in (None, self.model) and self.judge_own is False)

    @property
    def judge_own(self) -> bool:
        """The judge has servers, a key, limits or a backend of its own."""
        return bool(self.judge_base_url or self.judge_api_key_env or self.judge_concurrency or self.judge_rpm
                    or self.judge_tpm or (self.judge_backend not in (None, self.backend)))


class RunOptions(Settings):
    """How `evolve` runs this time, not what the run is: a YAML file may hold them, but
    they are not part of the stored config."""

    dry_run: bool = setting(False, "Estimate requests and tokens; call nothing", flag="--dry-run")
    retry_failed: bool = setting(False, "Also run again the records whose round failed on an unusable reply",
                                 flag="--retry-failed")
    verbose: bool = setting(False, "Log more, and show tracebacks", flag=("--verbose", "-v"))
    ray: str | None = setting(None, "Run the shards on Ray: local (start one here), auto (the cluster this node "
                              "belongs to) or ray://host:port; outputs are the same as one process", show="no Ray")
    ray_shards: int | None = setting(None, "--ray: shards the input is split into by record id (kept for the "
                                     "run folder's life)", ge=1, show="the cluster's CPUs")


class SeedSource(ModelAccess):
    """Where an LLM seed command reads from: records, or scene graphs (ProVision or Visual Genome)."""

    input: str | None = setting(None, "Records with captions and boxes (evol JSONL, MMEvol, LLaVA)", argument=True)
    out: str = setting(..., "Seed records (JSONL) the evolver reads", flag="--out")
    annotations: str | None = setting(None, "Scene graphs from ProVision stage files instead of records")
    vg: str | None = setting(None, "Scene graphs from a Visual Genome folder instead of records")
    vg_ids: list[str] | None = setting(None, "Visual Genome image ids, comma separated")
    image_root: str | None = setting(None, "Scene-graph image paths are written relative to this")
    input_format: str = setting("auto", "auto, llava, mmevol or evol")
    limit: int | None = setting(None, "Only the first N inputs", ge=1)
    cache: str | None = setting(None, "Request cache; a rerun repeats no call", show="<out>.cache.sqlite")
    concurrency: int = setting(16, "Requests in flight at most", ge=1)
    verbose: bool = setting(False, "Log more", flag=("--verbose", "-v"))

    _lists = field_validator("vg_ids", mode="before")(classmethod(lambda cls, v: _comma_list(v)))


class SvitConfig(SeedSource):
    """`evol seed svit`: SVIT-style seeds (SVIT, arXiv 2307.04087)."""

    tasks: list[str] = setting(default_factory=lambda: ["conversation", "reasoning", "description", "referring"],
                               help="SVIT tasks, comma separated", show="conversation,reasoning,description,referring")

    _task_list = field_validator("tasks", mode="before")(classmethod(lambda cls, v: _comma_list(v)))


class InstructConfig(SeedSource):
    """`evol seed instruct`: MM-Instruct-style seeds (MM-Instruct, arXiv 2406.19736)."""

    bank: str | None = setting(None, "Seed instructions, one per line", show="the shipped instruction bank")
    grow: int = setting(200, "New instructions to grow the bank by (0: use the seeds as they are)", ge=0)
    clusters: int | None = setting(None, "Instruction groups to summarise", ge=1, show="about sqrt(bank size)")
    per_image: int = setting(2, "Instructions answered per picture", ge=1)
    embedder: str = setting("auto", "auto, tfidf or spacy:<package> (auto: a spaCy package with vectors, else TF-IDF)")


class ProvisionConfig(Settings):
    """`evol seed provision`: programmatic Q&A from scene graphs (ProVision, arXiv 2412.07012)."""

    out: str = setting(..., "Seed records (JSONL) the evolver reads", flag="--out")
    annotations: str | None = setting(None, "ProVision stage files: a folder or one file")
    masks: str | None = setting(None, "The only folder mask pickles are loaded from (pickles run code)",
                                show="seg_masks/ beside the stage files")
    depth: str | None = setting(None, "Folder of depth .npy files", show="depth_masks/ beside the stage files")
    vg: str | None = setting(None, "A Visual Genome folder instead of ProVision files")
    vg_ids: list[str] | None = setting(None, "Visual Genome image ids to use, comma separated")
    image_root: str | None = setting(None, "Image paths are written relative to this folder")
    per_generator: int = setting(2, "QAs asked of each generator per image (or image group)", ge=1)
    mc_ratio: float = setting(0.5, "Share of multiple-choice QAs", ge=0.0, le=1.0)
    choices: int = setting(4, "Options per multiple-choice question", ge=2, le=8)
    seed: int = setting(0, "Same seed, same file, in any process")
    images: list[int] | None = setting(None, "Multi-image group sizes, e.g. 2,3,4")
    generators: list[str] | None = setting(None, "Only these generators, comma separated")
    single: bool = setting(True, "Run the single-image generators", flag="--single/--no-single")
    number_words: bool = setting(False, "Write counts as words", flag="--number-words")
    depth_gap: int = setting(20, "Least depth difference (0-255) for depth questions", ge=0, le=255)
    workers: int = setting(1, "Processes that load graphs and generate; the file is the same for any number", ge=1)
    ray: str | None = setting(None, "Load graphs and generate on Ray actors: local, auto or ray://host:port "
                              "(--workers actors, default one per CPU of the cluster); the file is the same",
                              show="no Ray")

    _lists = field_validator("vg_ids", "images", "generators", mode="before")(
        classmethod(lambda cls, v: _comma_list(v)))


class AnalyzeConfig(Settings):
    """`evol analyze`: diversity and quality tables (verb-noun pairs as in MMEvol, arXiv 2409.05840)."""

    inputs: list[str] = setting(..., "Run folders or record files (seed JSONL, LLaVA JSON/JSONL, MMEvol)",
                                argument=True)
    out: str = setting(..., "Folder for the tables (created)", flag="--out")
    labels: list[str] | None = setting(None, "A name per input, in order (repeat the flag)", flag="--label",
                                       repeat=True)
    parser: str = setting("spacy", "Verb-noun parser: spacy, benepar (needs its model) or none")
    processes: int = setting(1, "Parser worker processes", ge=1)
    kept_only: bool = setting(False, "Count only the evolved items the judge kept", flag="--kept-only")
    examples: int = setting(6, "Example records per input shown in the report", ge=0)
    verb_reading: str = setting("paper", "Verb-noun reading: paper (MMEvol's definition, a main verb 'be' stays "
                                "'be') or task (questions with 'be' named by their task: identify, count, "
                                "locate...; not comparable with the paper)")
    ray: str | None = setting(None, "Parse on Ray actors: local, auto or ray://host:port (--processes actors, "
                              "default one per CPU of the cluster); the tables are the same", show="no Ray")

    @field_validator("parser")
    @classmethod
    def _known_parser(cls, v: str) -> str:
        if v not in ("spacy", "benepar", "none"):
            raise ValueError(f"unknown parser {v!r}: use spacy, benepar or none")
        return v

    @field_validator("verb_reading")
    @classmethod
    def _known_reading(cls, v: str) -> str:
        from evol.analysis.verbnoun import READINGS

        if v not in READINGS:
            raise ValueError(f"unknown verb-noun reading {v!r}: use {' or '.join(READINGS)}")
        return v


class ReportConfig(Settings):
    """`evol report`: one self-contained HTML page from an analysis folder."""

    analysis_dir: str = setting(..., "A folder written by `evol analyze`", argument=True)
    out: str | None = setting(None, "HTML file to write", flag="--out", show="DIR/report.html")


class SelectConfig(Settings):
    """`evol select`: a training mix that covers verb-noun pairs, objects, skills and task forms."""

    source: str = setting(..., "A run folder, or a records file (e.g. seeds from evol seed svit)", argument=True)
    size: int = setting(..., "Items in the mix", flag="--size", ge=1)
    out: str = setting(..., "LLaVA JSON of the mix; the report goes to <out>.report.json", flag="--out")
    balance: list[str] = setting(default_factory=lambda: ["yes-no", "letters"],
                                 help="yes-no, letters, both (comma separated) or none", show="yes-no,letters")
    min_score: float | None = setting(None, "Judge-score floor", show="the run's own")
    include_seeds: bool | None = setting(None, "Seed items may enter", flag="--include-seeds/--no-seeds",
                                         show="the run's own")
    seed: int = setting(0, "Seed for tie-breaking and the random baselines")
    baselines: int = setting(20, "Random subsets of the same size to compare coverage with", ge=0)

    @field_validator("balance", mode="before")
    @classmethod
    def _balance(cls, v: Any) -> Any:
        v = _comma_list(v)
        return [] if v in (["none"], "none") else v


class ExportConfig(Settings):
    """`evol export`: kept items as LLaVA JSON, ShareGPT JSONL, Parquet or a datasets folder."""

    source: str = setting(..., "A run folder, or a records file", argument=True)
    format: str = setting("llava", "llava, sharegpt, parquet or datasets", flag="--format")
    out: str = setting(..., "Output file (a folder for datasets)", flag="--out")
    min_score: float | None = setting(None, "Judge-score floor", show="the run's own")
    include_seeds: bool | None = setting(None, "Also export seed items", flag="--include-seeds/--no-seeds",
                                         show="the run's own")
    verify: bool = setting(True, "Read the export back and compare every entry", flag="--verify/--no-verify")


class FilterConfig(Settings):
    """`evol filter`: thresholds applied again to a finished run, apart from scoring."""

    run_folder: str = setting(..., "A finished run folder", argument=True)
    min_score: float = setting(0.0, "Keep improved items scored at least this", ge=0, le=10)
    include_seeds: bool | None = setting(None, "Also keep seed items", flag="--include-seeds/--no-seeds",
                                         show="the run's own")


class StatusConfig(Settings):
    """`evol status`: where a run stands."""

    run_folder: str = setting(..., "A run folder written by `evol evolve`", argument=True)


class DemoConfig(Settings):
    """`evol demo`: the whole product on shipped sample data."""

    out: str = setting("runs/demo", "Run folder for the demo", flag="--out")
    rounds: int = setting(1, "Evolution rounds", ge=1, le=20)
    records: int = setting(8, "Seed records to evolve (spread over the sample photos)", ge=1)
    backend: str = setting("hf", "hf: the embedded model (or --model), offline; vllm: offline vLLM on --model "
                           "(a GPU); openai: the built-in test server")
    model: str | None = setting(None, "hf: a local model folder or .gguf file instead of the embedded one; "
                                "vllm: a local model folder")
    device: str = setting("auto", "hf: auto, cpu or cuda")
    max_tokens: int = setting(448, "Answer length limit per call", ge=1)

    @field_validator("backend")
    @classmethod
    def _demo_backend(cls, v: str) -> str:
        if v not in ("hf", "vllm", "openai"):
            raise ValueError("the demo runs with --backend hf or vllm (a local model) or --backend openai "
                             "(the built-in test server)")
        return v


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


def make_config(model: type[Settings], values: dict[str, Any]) -> Any:
    """`model` from `values` (None means unset: the default; paths may be `Path`s), or a
    ConfigError naming every problem."""
    try:
        return model(**{k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in values.items()
                        if v is not None})
    except ValidationError as exc:
        raise ConfigError(_explain(model, exc)) from None


def _explain(model: type[Settings], exc: ValidationError) -> str:
    msgs = []
    for e in exc.errors():
        name = ".".join(map(str, e["loc"])) or "config"
        field = model.model_fields.get(str(e["loc"][0])) if e["loc"] else None
        if e["type"] == "missing" and field is not None:
            cli = (field.json_schema_extra or {}).get("cli", {})
            msgs.append(f"missing {name.upper() if cli.get('argument') else '--' + name.replace('_', '-')}")
        elif e["type"] == "extra_forbidden":
            msgs.append(f"unknown setting {name!r}")
        else:
            msgs.append(f"{name}: {e['msg'].removeprefix('Value error, ')}")
    return "invalid configuration: " + "; ".join(msgs)


def build_config(flags: dict[str, Any], config_file: str | None) -> tuple[EvolveConfig, RunOptions]:
    """Merge defaults < YAML file < explicit flags (flags left unset are None): the run's
    config and this invocation's options (`dry_run`, `retry_failed`, `verbose`)."""
    merged: dict[str, Any] = load_yaml(config_file) if config_file else {}
    merged.update({k: v for k, v in flags.items() if v is not None})
    options = {k: merged.pop(k) for k in list(merged) if k in RunOptions.model_fields}
    return make_config(EvolveConfig, merged), make_config(RunOptions, options)
