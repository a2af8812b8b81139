"""The `evol` command line: each command parses its flags and calls one API function.

Flags, their defaults and help come from the settings models in `evol.config`. Exit codes
(README, "When things fail"): 0 complete; 1 a usage, configuration or file-system problem
(one ``error:`` line, nothing started); 3 incomplete: records are pending (calls that got
no answer, or a run stopped by a bad key, a dead server or a full disk): rerun the same
command to finish it; 130 interrupted (Ctrl-C or SIGTERM), also resumable.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from typing import Any, Callable, Optional

import typer

from evol import api, config, seed
from evol.console import error, note, say, setup_logging
from evol.errors import EvolError, RunIncomplete
from evol.session import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_USAGE, os_problem

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Evolve multimodal instruction data.")
seed_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="Make seed records: from scene graphs (no LLM) or written by an LLM from annotations.")
app.add_typer(seed_app, name="seed")


def _param(name: str, field: Any) -> inspect.Parameter:
    """A Typer parameter for one settings field: every flag is optional (None: not given),
    so a YAML file or the model's default fills what the command line leaves out."""
    cli = (field.json_schema_extra or {}).get("cli", {})
    union = typing.get_origin(field.annotation) in (typing.Union, types.UnionType)
    base = next((t for t in typing.get_args(field.annotation) if t is not type(None)), str) if union \
        else field.annotation
    if typing.get_origin(base) is list:
        cli_type = list[str] if cli.get("repeat") or cli.get("argument") else str
    else:
        cli_type = base if base in (int, float, bool) else str
    shown = cli.get("show")
    if shown is None and not field.is_required():
        default = field.get_default(call_default_factory=True)
        shown = None if default is None else {True: "yes", False: "no"}.get(default, str(default))
    text = f"{field.description} [{shown}]" if shown else field.description
    if cli.get("argument"):
        info = typer.Argument(None, help=text, show_default=False)
    else:
        flag = cli.get("flag") or f"--{name.replace('_', '-')}"
        info = typer.Option(None, *((flag,) if isinstance(flag, str) else flag), help=text, show_default=False)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=Optional[cli_type])


def command(target: typer.Typer, name: str, *models: type, extra: tuple[inspect.Parameter, ...] = ()):
    """Register `fn(**flags)` as command `name` with one flag per field of `models`."""
    def register(fn: Callable[..., None]) -> Callable[..., None]:
        fields = {k: f for m in models for k, f in m.model_fields.items()}
        arguments_first = lambda p: not isinstance(p.default, typer.models.ArgumentInfo)  # noqa: E731
        params = [*sorted((_param(k, f) for k, f in fields.items()), key=arguments_first), *extra]

        def run(**flags: Any) -> None:
            try:
                fn(**flags)
            except EvolError as exc:
                error(str(exc))
                raise typer.Exit(EXIT_USAGE)
            except RunIncomplete as exc:
                error(str(exc))
                say("incomplete: rerun the same command to finish; answered calls are cached")
                raise typer.Exit(EXIT_INCOMPLETE)
            except KeyboardInterrupt:
                note("rerun the same command to resume; finished calls are cached.", "interrupted")
                raise typer.Exit(EXIT_INTERRUPTED)

        run.__signature__ = inspect.Signature(params)
        run.__annotations__ = {p.name: p.annotation for p in params}
        run.__doc__, run.__name__ = fn.__doc__, fn.__name__
        target.command(name)(run)
        return fn
    return register


_CONFIG = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str], default=typer.Option(
    None, "--config", help="YAML file whose keys match these flags.", show_default=False))


@command(app, "evolve", config.EvolveConfig, config.RunOptions, extra=(_CONFIG,))
def evolve(config: str | None = None, **flags: Any) -> None:
    """Evolve a seed file for several rounds, judge every step, write a run folder.

    Exit status: 0 complete; 1 usage or configuration error; 3 incomplete (records
    pending: rerun the same command to finish); 130 interrupted (rerun to resume).
    """
    result = api.evolve(flags.pop("input"), flags.pop("out"), config=config, **flags)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@command(app, "status", config.StatusConfig)
def status(run_folder: str) -> None:
    """Where a run stands: records done, pending, failed and rejected, with the top reasons."""
    st = {k: "?" if v is None else v for k, v in api.status(run_folder).items()}
    say(f"{st['run']}: {st['status']}; {st['input_records']} input records: {st['done']} done "
        f"({st['failed']} with a failed round), {st['pending']} pending, {st['rejected']} rejected")
    if st["stopped"] != "?":
        say(f"  last invocation stopped: {st['stopped']}")
    for title, key in (("pending", "pending_reasons"), ("failed round", "failed_reasons"),
                       ("rejected", "reject_reasons")):
        for reason, n in list(st[key].items())[:5]:
            say(f"  {title}: {n} x {reason}")
    if st["failed"]:
        say("  (evol evolve --retry-failed runs the records with a failed round again)")


@command(app, "filter", config.FilterConfig)
def filter_run(run_folder: str, **flags: Any) -> None:
    """Re-apply keep thresholds to a finished run: rewrites llava.json and the manifest, calls nothing."""
    manifest = api.filter_run(run_folder, **flags)
    say(f"filtered: {manifest['counts']['llava_entries']} items kept with score >= {flags.get('min_score') or 0:g} "
        f"in {run_folder}/llava.json")


@command(app, "analyze", config.AnalyzeConfig)
def analyze(inputs: list[str], out: str, **flags: Any) -> None:
    """Diversity and quality metrics per input and per round: CSV and JSON tables for `evol report`."""
    from evol.analysis.commands import summary_lines

    for line in summary_lines(api.analyze(inputs or [], out, **flags), out):
        say(line)


@command(app, "report", config.ReportConfig)
def report(analysis_dir: str, out: str | None = None) -> None:
    """One self-contained HTML page (charts embedded, works offline) from an analysis folder."""
    say(f"report: {api.report(analysis_dir, out)}")


@command(app, "demo", config.DemoConfig)
def demo(**flags: Any) -> None:
    """The whole product on this machine, offline: seeds, evolution, elimination, analysis, report.

    Seeds come from the shipped scene graphs, evolved by the embedded SmolLM2-135M-Instruct
    (for trying evol out, not for real data), or with `--backend openai` against the built-in
    test server (placeholder text in the right JSON shape), or on offline vLLM (`--model DIR`).
    """
    result = api.demo(**flags)
    if result["run"].exit_code:
        raise typer.Exit(result["run"].exit_code)


@command(seed_app, "provision", config.ProvisionConfig)
def seed_provision(out: str, **flags: Any) -> None:
    """Write factual Q&A seeds from scene graphs with the programmatic generators."""
    res = seed.provision(out, **flags).details
    for text in res.notes:
        note(text)
    for reason in res.skipped[:20]:
        note(reason, "skipped")
    say(f"wrote {res.records} seed records from {res.images} images to {res.out}; "
        f"{len(res.skipped)} images skipped (reasons in {res.rejects})")
    if res.short:
        say("generators that found less to ask than requested: " + ", ".join(
            f"{k} {made}/{asked}" for k, (made, asked) in sorted(res.short.items())))
    if res.ungrouped:
        say(f"the last {res.ungrouped} image(s) were too few for a multi-image group of the sizes asked: "
            "they have single-image seeds only")


def _seed_summary(manifest: dict, out: str) -> None:
    c = manifest["counts"]  # what `evol seed svit` / `instruct` wrote
    say(f"wrote {c.get('records_out', 0)} seed records from {c.get('records_read', 0)} inputs to {out}; "
        f"{c.get('rejects', 0)} rejects ({manifest.get('model_calls', 0)} model calls, "
        f"{manifest.get('cached_calls', 0)} from cache)")
    for reason, n in sorted(manifest.get("rejects_by_reason", {}).items(), key=lambda kv: -kv[1])[:8]:
        say(f"  rejected: {n} x {reason}")
    unmatched = manifest.get("matching", {}).get("no_similar_group", 0)
    if unmatched:
        note(f"{unmatched} of {manifest['matching']['pictures']} pictures were like no instruction group "
             f"({manifest.get('embedder')} found no word in common), so their instructions were drawn at random "
             "(seeded); an embedder with word vectors matches better")


@command(seed_app, "svit", config.SvitConfig)
def seed_svit(out: str, input: str | None = None, **flags: Any) -> None:
    """SVIT-style seeds: a text-only LLM writes conversations, reasoning, descriptions and referring QA from annotations."""
    _seed_summary(seed.svit(out, input, **flags).details, out)


@command(seed_app, "instruct", config.InstructConfig)
def seed_instruct(out: str, input: str | None = None, **flags: Any) -> None:
    """MM-Instruct-style seeds: grow and summarise an instruction bank, match it to pictures, answer from annotations."""
    manifest = seed.instruct(out, input, **flags).details
    b = manifest["bank"]
    say(f"instruction bank: {b['seeds']} seeds + {b['grown']} grown -> {b['groups']} groups "
        f"({b['groups_summarised']} summarised) with {manifest['embedder']}, in {b['file']}")
    _seed_summary(manifest, out)


@command(app, "select", config.SelectConfig)
def select(source: str, size: int, out: str, **flags: Any) -> None:
    """Greedy training mix covering verb-noun pairs, objects, skills and task forms, with balanced answers."""
    rep = api.select(source, size, out, **flags)
    say(f"selected {rep['selected']} of {rep['candidates']} candidates into {out} (report: {rep['report']})")
    if rep["shortfall"]:
        note(rep["shortfall"], "short")
    for kind, c in rep["coverage"].items():
        rnd = f", random {c['random']['mean']:g} (max {c['random']['max']})" if "random" in c else ""
        say(f"  {kind}: mix {c['mix']} of {c['full']}{rnd}")
    a = rep["answers"]["mix"]
    if a["yes_ratio"] is not None:
        say(f"  yes/no: {a['yes']} yes, {a['no']} no (yes ratio {a['yes_ratio']:.1%}; "
            f"full set {rep['answers']['full']['yes_ratio']:.1%})")


@command(app, "export", config.ExportConfig)
def export(source: str, out: str, **flags: Any) -> None:
    """Export kept items as LLaVA JSON, ShareGPT JSONL, Parquet or a datasets folder."""
    res = api.export(source, out, **{k: v for k, v in flags.items() if v is not None})
    checked = f"; read back and matched {res['verified']}" if "verified" in res else ""
    say(f"exported {res['entries']} items as {res['format']} to {out}{checked}")


def main() -> None:
    """The `evol` console script: click's usage errors exit 1 like every other usage error."""
    from typer.exceptions import TyperException

    setup_logging(None, "-v" in sys.argv or "--verbose" in sys.argv)
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        note("", "interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except TyperException as exc:  # a malformed command line: typer's own message, then exit 1
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        sys.exit(EXIT_USAGE)
    except OSError as exc:  # a file-system problem no command named more precisely
        if "-v" in sys.argv or "--verbose" in sys.argv:
            raise
        error(f"{os_problem(exc, 'file-system error:')} (-v shows where)")
        sys.exit(EXIT_USAGE)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
