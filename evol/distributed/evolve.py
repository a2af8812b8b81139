"""`evol evolve --ray ADDRESS`: shards of the input, each run by the one-process code as a Ray task.

1. Split (here, once per invocation): the input is read as the runner reads it, and each
   record goes to shard ``hash(record id) mod N`` (blake2b, the same on every machine and
   Python). What the runner decides while reading is decided here, in input order, and
   kept for the merge: unreadable entries and repeated ids are final rejects, `limit`
   counts entries. Shard NNN gets RUN/shards/NNN/input.jsonl (the records as evol JSONL,
   every id written out) and keys.jsonl ([index in the whole input, key] per record). A
   file is replaced only when its content changed, so a rerun sees the same shard input.
2. Run: one Ray task per non-empty shard calls `evol.session.run_evolve` on (shard input,
   RUN/shards/NNN) with the run's settings: the same runner, cache, journals, judge and
   preflight as one process, in a folder of its own on storage every node sees. A task
   whose process dies (a killed worker, a lost node) is run again by Ray (`max_retries`),
   and resumes from its shard's journal and cache like any rerun: finished records are not
   run again, answered calls are not sent again; only calls in flight are repeated.
   With the vllm backend (or hf on cuda) each task holds one GPU (``num_gpus=1``) and
   loads one engine.
3. Merge: `evol.rundir.merge_shards` lays the shard journals out as RUN/records.jsonl and
   RUN/rejects.jsonl (global indexes, input order), and `finalize` writes llava.json and
   manifest.json exactly as for one process.

The run folder keeps its shard count ("ray" in manifest.json): the split is a property of
the folder's journals and caches, so a rerun uses the same N.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from evol.config import EvolveConfig, RunOptions
from evol.console import note, quiet, say
from evol.errors import EvolError
from evol.io import file_sha256
from evol.rundir import RunDir, finalize, merge_shards, reject_entry

__all__ = ["run_on_ray", "shard_of", "split_input"]

log = logging.getLogger("evol.runner")  # the reading loop's warnings, as the runner logs them


def shard_of(key: str, shards: int) -> int:
    """The shard of a record key: stable across machines, processes and Python hash seeds."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") % shards


def shard_dirs(run: RunDir, shards: int) -> list[RunDir]:
    width = max(3, len(str(shards - 1)))
    return [RunDir(run.root / "shards" / f"{k:0{width}d}") for k in range(shards)]


class _Changed:
    """A file written under a temporary name and renamed over `path` only when its bytes differ."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f, self.hash, self.lines = open(self.tmp, "wb"), hashlib.sha256(), 0

    def write(self, line: str) -> None:
        data = (line + "\n").encode("utf-8")
        self.f.write(data)
        self.hash.update(data)
        self.lines += 1

    def close(self) -> None:
        self.f.close()
        if self.path.exists() and file_sha256(self.path) == self.hash.hexdigest():
            self.tmp.unlink()
        else:
            os.replace(self.tmp, self.path)


def split_input(cfg: EvolveConfig, dirs: list[RunDir]) -> tuple[list[int], list[tuple[int, dict]]]:
    """Write each shard's input.jsonl and keys.jsonl; return the records per shard and the
    (index, reject entry) pairs of entries no shard gets (the runner's reading loop, in
    the same order and with the same keys: `evol.runner.Runner.run`)."""
    from evol.runner import read_entries

    inputs = [_Changed(d.root / "input.jsonl") for d in dirs]
    keys = [_Changed(d.root / "keys.jsonl") for d in dirs]
    rejected: list[tuple[int, dict]] = []
    try:
        for key, res, refused in read_entries(cfg):
            if refused is not None:
                reason, stage, record_id = refused
                log.warning("record %s rejected (%s): %s", key, stage, reason)
                rejected.append((res.index, reject_entry(key, reason, stage, record=record_id, final=True)))
            else:
                k = shard_of(res.key, len(dirs))
                inputs[k].write(res.record.model_dump_json(exclude_none=True))
                keys[k].write(json.dumps([res.index, res.key], ensure_ascii=False))
    finally:
        for f in (*inputs, *keys):
            f.close()
    return [f.lines for f in inputs], rejected


def _shard_keys(shard: RunDir) -> dict[str, int]:
    where: dict[str, int] = {}
    with open(shard.root / "keys.jsonl", encoding="utf-8") as f:
        for line in f:
            index, key = json.loads(line)
            where[key] = index
    return where


def _run_shard(cfg_data: dict, opts_data: dict) -> dict:
    """One shard, in a Ray worker: the one-process run, quietly; what the driver needs back."""
    from evol.session import run_evolve

    cfg, opts = EvolveConfig.model_validate(cfg_data), RunOptions.model_validate(opts_data)
    if opts.verbose:
        result = run_evolve(cfg, opts, progress=False)
    else:
        with quiet():
            result = run_evolve(cfg, opts, progress=False)
    return {"status": result.status, "pending": result.pending, "stopped": result.stopped}


def task_options(cfg: EvolveConfig) -> dict[str, Any]:
    """What a shard task asks Ray for: a CPU, and one GPU when its backend loads a model on
    one (vllm, or hf on cuda), so that Ray places one shard and one engine per GPU; three
    retries when its worker dies (the shard resumes from its journal and cache)."""
    gpu = cfg.backend == "vllm" or (cfg.backend == "hf" and str(cfg.device).startswith("cuda"))
    return {"max_retries": 3, "retry_exceptions": False, "num_cpus": 1, **({"num_gpus": 1} if gpu else {})}


def _shard_count(run: RunDir, asked: int | None, ray: Any) -> int:
    from evol.distributed import cluster_cpus

    stored = (run.read_manifest().get("ray") or {}).get("shards")
    if stored:
        if asked is not None and asked != stored:
            raise EvolError(f"{run.root} was split into {stored} shards; rerun with --ray-shards {stored} "
                            "(or leave it out), or use another --out")
        return int(stored)
    return asked or cluster_cpus(ray)  # one wave: every shard runs at once


def run_on_ray(cfg: EvolveConfig, opts: RunOptions, *, progress: bool = True) -> Any:
    """Evolve `cfg.input` into `cfg.out` over Ray (module doc); returns an `EvolveResult`
    whose outputs are those of a one-process run."""
    from evol.distributed import ray_session
    from evol.session import check_same_run, identify_input, lock_run, settle

    identity = identify_input(cfg)
    settle(cfg)
    run, lock = lock_run(cfg)
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.monotonic()
    with lock:
        check_same_run(run, cfg, identity, ray=True)
        if run.records.exists() and not run.read_manifest().get("ray"):
            raise EvolError(f"{run.root} holds a run made in one process; finish it without --ray, "
                            "or use another --out")
        with ray_session(opts.ray) as ray:
            return _run(ray, cfg, opts, run, identity, started, t0, progress)


def _run(ray: Any, cfg: EvolveConfig, opts: RunOptions, run: RunDir, identity: dict, started: str, t0: float,
         progress: bool) -> Any:
    """Split, run the shards, merge (the caller holds the run folder's lock)."""
    from evol.prompts import prompt_versions
    from evol.session import EvolveResult, os_problem

    shards = _shard_count(run, opts.ray_shards, ray)
    try:
        run.begin(cfg.public(), identity)
        _set_manifest(run, {"ray": {"shards": shards}})
        dirs = shard_dirs(run, shards)
        sizes, read_rejects = split_input(cfg, dirs)
    except OSError as exc:
        raise EvolError(os_problem(exc, "cannot write the run folder:")) from None
    say(f"ray: {sum(sizes)} records in {sum(1 for s in sizes if s)} shards under {run.root / 'shards'}, "
        f"on a cluster of {ray.cluster_resources().get('CPU', 0):g} CPUs"
        + (f", {ray.cluster_resources().get('GPU', 0):g} GPUs" if "num_gpus" in task_options(cfg) else ""))
    before = [len(d.read_manifest().get("invocations") or []) for d in dirs]
    outcomes = _run_tasks(ray, cfg, opts, dirs, sizes, progress)
    try:
        merge_shards(run, ((d, _shard_keys(d)) for d, n in zip(dirs, sizes) if n), read_rejects)
    except OSError as exc:
        raise EvolError(os_problem(exc, "cannot merge the shards into the run folder:")) from None
    return _finish(cfg, run, dirs, sizes, before, outcomes, started, t0, prompt_versions(), EvolveResult)


def _run_tasks(ray: Any, cfg: EvolveConfig, opts: RunOptions, dirs: list[RunDir], sizes: list[int],
               progress: bool) -> dict:
    """One task per non-empty shard; wait for all. Returns shard -> what the task returned,
    or an "error" entry for a task that failed for good."""
    task = ray.remote(_run_shard).options(**task_options(cfg))
    shard_opts = RunOptions(retry_failed=opts.retry_failed, verbose=opts.verbose).model_dump()
    refs = {}
    for k, (d, n) in enumerate(zip(dirs, sizes)):
        if not n:
            continue
        shard_cfg = cfg.model_copy(update={"input": str((d.root / "input.jsonl").resolve()),
                                           "out": str(d.root.resolve()), "input_format": "evol", "limit": None,
                                           "image_root": str(Path(cfg.image_root).resolve()) if cfg.image_root
                                           else None})
        refs[task.remote(shard_cfg.model_dump(), shard_opts)] = k
    outcomes: dict[int, dict] = {}
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            k = refs[done[0]]
            try:
                outcomes[k] = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, EvolError):
                    for ref in pending:
                        ray.cancel(ref, force=True)
                    raise EvolError(f"shard {dirs[k].root.name}: {cause}") from None
                outcomes[k] = {"status": "incomplete", "pending": None, "stopped": f"shard task failed: {exc}"}
            except ray.exceptions.RayError as exc:  # its worker died more often than Ray retries
                outcomes[k] = {"status": "incomplete", "pending": None,
                               "stopped": f"shard {dirs[k].root.name}: {type(exc).__name__}: {exc}"}
            if progress:
                out = outcomes[k]
                say(f"ray: shard {dirs[k].root.name} {out['status']} ({len(outcomes)}/{len(refs)} shards)")
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return outcomes


def _set_manifest(run: RunDir, values: dict) -> None:
    manifest = run.read_manifest()
    manifest.update(values)
    tmp = run.manifest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    os.replace(tmp, run.manifest)


def _new_invocations(dirs: list[RunDir], sizes: list[int], before: list[int]) -> Iterator[dict]:
    for d, n, b in zip(dirs, sizes, before):
        if n:
            yield from (d.read_manifest().get("invocations") or [])[b:]


def _invocation(started: str, t0: float, entries: list[dict], status: str, pending: int | None, shards: int) -> dict:
    """This invocation in the top manifest: the shard invocations it ran, added up."""
    from evol.rundir import _sum_http

    total = lambda key: sum(int(e.get(key) or 0) for e in entries)  # noqa: E731
    entry = {"started": started, "status": status, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "wall_s": round(time.monotonic() - t0, 3), "model_calls": total("model_calls"),
             "cached_calls": total("cached_calls"),
             "calls": {k: sum(int((e.get("calls") or {}).get(k) or 0) for e in entries)
                       for k in ("answered", "cached", "failed")},
             "tokens_in": total("tokens_in"), "tokens_out": total("tokens_out")}
    http = [e["http"] for e in entries if isinstance(e.get("http"), dict)]
    if http:
        entry["http"] = _sum_http(http)
    entry.update(records_done=total("records_done"), records_resumed=total("records_resumed"),
                 shard_invocations=len(entries), killed=sum(1 for e in entries if e.get("status") == "killed"),
                 ray={"shards": shards})
    if pending is not None:
        entry["records_pending"] = pending
    return entry


def _finish(cfg, run, dirs, sizes, before, outcomes, started, t0, prompts, result_cls) -> Any:
    reasons: Counter = Counter()
    pending: int | None = 0
    stopped = None
    server = None
    for k, (d, n) in enumerate(zip(dirs, sizes)):
        if not n:
            continue
        manifest = d.read_manifest()
        server = server or manifest.get("server")
        out = outcomes.get(k) or {"status": "incomplete", "pending": None}
        info = manifest.get("pending") or {}
        reasons.update(info.get("reasons") or {})
        stopped = stopped or out.get("stopped") or info.get("stopped")
        if out.get("pending") is None and out["status"] != "complete":
            pending = None
        elif pending is not None:
            pending += int(out.get("pending") or 0)
    complete = all((outcomes.get(k) or {}).get("status") == "complete" for k, n in enumerate(sizes) if n)
    status = "complete" if complete else "incomplete"
    invocations = list(run.read_manifest().get("invocations") or [])
    invocations.append(_invocation(started, t0, list(_new_invocations(dirs, sizes, before)), status, pending,
                                   len(dirs)))
    extra = {"status": status, "pending": {"records": pending, "reasons": dict(reasons.most_common(10)),
                                           "stopped": stopped},
             "prompts": prompts, "invocations": invocations, "ray": {"shards": len(dirs)},
             **({"server": server} if server is not None else {})}
    try:
        manifest = finalize(run, cfg.public(), min_score=cfg.min_score, include_seeds=cfg.include_seeds, extra=extra)
    except OSError as exc:
        raise EvolError(f"cannot write the run folder: {exc}") from None
    c = manifest["counts"]
    inv = invocations[-1]
    say(f"{'done' if complete else 'incomplete'}: {c['records_out']} records, {c['llava_entries']} kept items "
        f"in {run.llava}; {c['records_rejected']} records rejected, rejects in {run.rejects}; "
        f"{inv['model_calls']} requests over {inv['shard_invocations']} shard runs"
        + (f" ({inv['killed']} killed and run again by Ray)" if inv["killed"] else ""))
    from evol.session import stage_lines

    for line in stage_lines(manifest.get("stages"), cfg.checks):
        say(line)
    if not complete:
        if stopped:
            note(stopped, "error", "red")
        left = f"{pending} records" if pending is not None else "some records"
        say(f"{left} pending: rerun the same command to finish (calls already answered are not sent again)")
    return result_cls(run.root, status, counts=c, manifest=manifest, pending=pending, stopped=stopped)
