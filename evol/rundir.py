"""A run folder: its layout, resuming into it, and turning it into final outputs.

`records.jsonl` and `rejects.jsonl` are append-only journals written as each record
finishes. A record's rejects are written before its record line, so after a crash a
record counts as done only when its record line made it to disk; rejects of records that
were still in flight are dropped on resume and written again when those records finish.
`llava.json` and `manifest.json` are derived from the journals, so `evol filter` can
rebuild them with other thresholds and no model call.

One process writes a run folder at a time: `RunLock` holds an OS lock on ``.lock`` (the
kernel drops it when the process dies, even by kill -9), and a second `evolve` or
`filter` refuses at once. Every derived file is written to a temporary name and renamed,
so a kill at any point leaves the old file or the new one, never half of one; a journal
that holds the same record twice (a record reopened by ``--retry-failed`` and cut short,
or a folder written before the lock existed) counts its last line.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evol import __version__
from evol.io import LlavaWriter, llava_entry, read_jsonl_tolerant
from evol.eliminator.stages import STAGE_FIELDS, STAGES, stage_counts
from evol.records import Record


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def records(self) -> Path:
        return self.root / "records.jsonl"

    @property
    def rejects(self) -> Path:
        return self.root / "rejects.jsonl"

    @property
    def llava(self) -> Path:
        return self.root / "llava.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def cache(self) -> Path:
        return self.root / "cache.sqlite"

    @property
    def lock_path(self) -> Path:
        return self.root / ".lock"

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def lock(self) -> "RunLock":
        """Take the folder's writer lock, or raise `RunLocked` naming the holder."""
        return RunLock(self.lock_path)

    def begin(self, config: dict[str, Any], input_id: dict[str, Any] | None = None) -> None:
        """Record the run's settings (and which input file it reads) before its first call,
        so that a rerun after a crash (which leaves no finished manifest) is checked
        against them too."""
        if self.read_manifest().get("config"):
            return
        start = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "status": "running", "config": config}
        if input_id is not None:
            start["input"] = input_id
        tmp = self.manifest.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(start, indent=2, ensure_ascii=False))
        os.replace(tmp, self.manifest)

    def read_manifest(self) -> dict[str, Any]:
        try:
            return json.loads(self.manifest.read_text())
        except (OSError, ValueError):
            return {}

    def record_invocation(self, entry: dict[str, Any], index: int | None = None) -> int:
        """Write one invocation's entry into the manifest's "invocations", with the totals
        over all of them (`invocation_totals`); returns its index. ``index=None`` appends a
        new entry, first marking any entry still "running" as "killed": one process writes
        a run folder at a time (`RunLock`), so such an entry belongs to an invocation that
        died without finishing (kill -9, power loss) and keeps the wall time of its last
        update. Atomic: the manifest is read, changed and written under a temporary name
        that is renamed over it."""
        manifest = self.read_manifest()
        invocations = list(manifest.get("invocations") or [])
        if index is None or not 0 <= index < len(invocations):
            for old in invocations:
                if old.get("status") == "running":
                    old["status"] = "killed"
            invocations.append(entry)
            index = len(invocations) - 1
        else:
            invocations[index] = entry
        manifest["invocations"] = invocations
        manifest.update(invocation_totals(invocations))
        tmp = self.manifest.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        os.replace(tmp, self.manifest)
        return index


def invocation_totals(invocations: list[dict[str, Any]]) -> dict[str, Any]:
    """What every invocation of a run took together: "wall_s", "model_calls" (requests
    sent to the model) and, when they were HTTP requests, "http" (by outcome, as in
    `evol.stats.CallStats.http`)."""
    totals: dict[str, Any] = {
        "wall_s": round(sum(float(i.get("wall_s") or 0) for i in invocations), 3),
        "model_calls": sum(int(i.get("model_calls") or 0) for i in invocations),
    }
    blocks = [i["http"] for i in invocations if isinstance(i.get("http"), dict)]
    if blocks:
        totals["http"] = _sum_http(blocks)
    return totals


def _sum_http(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    def add(into: dict[str, Any], part: dict[str, Any]) -> None:
        for key, value in part.items():
            if isinstance(value, dict):
                add(into.setdefault(key, {}), value)
            elif isinstance(value, (int, float)):
                into[key] = into.get(key, 0) + value

    out: dict[str, Any] = {}
    for block in blocks:
        add(out, block)
    return out


class RunLocked(RuntimeError):
    """Another process holds the run folder."""


class RunLock:
    """An exclusive, non-blocking `flock` on a file, held until `release` or process exit."""

    def __init__(self, path: Path):
        import fcntl

        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise RunLocked(f"{path.parent} is in use by {who} (another evol evolve or filter); "
                            "wait for it to finish, or use another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing drops the lock

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def input_identity(path: str | Path) -> dict[str, Any]:
    """What names an input file whatever it is called: its resolved path, size, mtime and the
    sha256 of its first megabyte (the run guard compares these, not the text of the path)."""
    real = Path(path).resolve()
    st = real.stat()
    with open(real, "rb") as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()
    return {"path": str(real), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_sha256": head}


def input_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """How `new` differs from the input a run was started with; [] when it is the same file.

    A move or a copy (another path, same size and first megabyte) is the same input. A
    changed size or first megabyte is not; nor is a newer modification time on a file
    larger than the part that was hashed, since its tail may have changed.
    """
    changes = []
    if old.get("size") != new["size"]:
        changes.append(f"size {old.get('size')} -> {new['size']} bytes")
    if old.get("head_sha256") != new["head_sha256"]:
        changes.append("its first megabyte differs")
    if (not changes and old.get("path") == new["path"] and old.get("mtime_ns") != new["mtime_ns"]
            and new["size"] > (1 << 20)):
        changes.append("modified since the run started")
    return changes


def reject_entry(
    key: str,
    reason: str,
    stage: str,
    *,
    record: str | None = None,
    item: str | None = None,
    round: int | None = None,
    final: bool = False,
) -> dict[str, Any]:
    """One line of rejects.jsonl. `final` marks a record that will never reach records.jsonl."""
    entry: dict[str, Any] = {"key": key, "record": record, "stage": stage, "reason": reason}
    if item is not None:
        entry["item"] = item
    if round is not None:
        entry["round"] = round
    entry["final"] = final
    return entry


def has_failed_round(rec: dict[str, Any]) -> bool:
    """A record journal line with a round that failed by a model fault (unusable reply)."""
    return any(v.get("status", "judged") != "judged" for v in rec.get("versions") or ())


def prepare_resume(run: RunDir, reopen_failed: bool = False) -> set[str]:
    """Return the keys of records already finished, and tidy the journals for a rerun.

    A torn last line of records.jsonl is cut off; rejects that belong to records which
    never finished are removed (they will be produced again). With `reopen_failed`
    (``--retry-failed``), records with a failed round are taken out of both journals so
    that they run again; their answered calls come from the cache.
    """
    finished: set[str] = set()
    reopened: set[str] = set()
    if run.records.exists():
        failed: dict[str, bool] = {}  # key -> its last line has a failed round
        for rec in read_jsonl_tolerant(run.records, repair=True):
            failed[str(rec.get("meta", {}).get("key", rec.get("id")))] = reopen_failed and has_failed_round(rec)
        finished = {k for k, f in failed.items() if not f}
        reopened = {k for k, f in failed.items() if f}
        del failed
        if reopened:
            tmp = run.records.with_suffix(".jsonl.tmp")
            with open(tmp, "w", encoding="utf-8") as out:
                for rec in read_jsonl_tolerant(run.records):
                    if str(rec.get("meta", {}).get("key", rec.get("id"))) not in reopened:
                        out.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
            os.replace(tmp, run.records)
    if not run.rejects.exists():
        return finished
    final_keys: set[str] = set()
    for entry in read_jsonl_tolerant(run.rejects, repair=True):
        if entry.get("final"):
            final_keys.add(str(entry.get("key")))
    terminal = finished | final_keys
    tmp = run.rejects.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for entry in read_jsonl_tolerant(run.rejects):
            if str(entry.get("key")) in terminal:
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")
    os.replace(tmp, run.rejects)
    return terminal


def _index_records(path: Path) -> Any:
    """Byte offsets of every record line, sorted by input index.

    Two 8-byte numbers per record while reading (then one), instead of the records
    themselves: the final files come out in input order whatever order records finished in.
    """
    import numpy as np

    indexes, offsets = array("q"), array("q")
    with open(path, "rb") as f:
        offset = 0
        for line in f:
            if line.strip():
                try:
                    idx = int(json.loads(line).get("meta", {}).get("index", 0))
                except ValueError:
                    idx = -1
                if idx >= 0:
                    indexes.append(idx)
                    offsets.append(offset)
            offset += len(line)
    keys = np.frombuffer(indexes, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    # the same record twice (same input index): keep its last line
    ordered = keys[order]
    last = np.ones(len(order), dtype=bool)
    if len(order) > 1:
        last[:-1] = ordered[1:] != ordered[:-1]
    return np.frombuffer(offsets, dtype=np.int64)[order[last]]


def iter_records_in_order(path: Path):
    if not path.exists():
        return
    offsets = _index_records(path)
    with open(path, "rb") as f:
        for off in offsets:
            f.seek(int(off))
            yield Record.model_validate_json(f.readline())


def merge_shards(run: RunDir, shards: Any, read_rejects: Any = ()) -> None:
    """Lay the journals of shard run folders out as one run's: RUN/records.jsonl and
    RUN/rejects.jsonl, then `finalize` them as usual (`evol evolve --ray`, `evol.distributed`).

    `shards`: (shard RunDir, {record key: index in the whole input}) pairs, one shard at a
    time (a generator may load each map when its turn comes); `read_rejects`: (index,
    reject entry) pairs decided while the input was split (unreadable entries, repeated ids).
    A record's line gets its index in the whole input (`meta.index`), written as the runner
    writes it; both files come out in input order (the rejects of a record in the order its
    shard wrote them), the order a one-process run with one record in flight writes. A
    shard's "threshold" rejects are left out: `finalize` makes them again. Each file is
    written under a temporary name and renamed over the old one.
    """
    import numpy as np

    parts = {"records": (run.records, array("q"), array("q")), "rejects": (run.rejects, array("q"), array("q"))}
    tmps = {name: path.with_suffix(".jsonl.merge") for name, (path, _, _) in parts.items()}
    with open(tmps["records"], "wb") as rec_out, open(tmps["rejects"], "wb") as rej_out:
        def put(name: str, out: Any, index: int, line: bytes) -> None:
            parts[name][1].append(index)
            parts[name][2].append(out.tell())
            out.write(line)

        for index, entry in read_rejects:
            put("rejects", rej_out, index, (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"))
        for shard, where in shards:
            if shard.records.exists():
                for data in read_jsonl_tolerant(shard.records):
                    rec = Record.model_validate(data)
                    index = where[str(rec.meta.get("key", rec.id))]
                    rec.meta["index"] = index
                    put("records", rec_out, index, (rec.model_dump_json(exclude_none=True) + "\n").encode("utf-8"))
            if shard.rejects.exists():
                for entry in read_jsonl_tolerant(shard.rejects):
                    if entry.get("stage") != "threshold":
                        line = json.dumps(entry, ensure_ascii=False) + "\n"
                        put("rejects", rej_out, where.get(str(entry.get("key")), -1), line.encode("utf-8"))
    for name, (path, indexes, offsets) in parts.items():
        keys = np.frombuffer(indexes, dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        if name == "records" and len(order) > 1:  # the same record twice: its last line counts
            ordered = keys[order]
            order = order[np.append(ordered[1:] != ordered[:-1], True)]
        starts = np.frombuffer(offsets, dtype=np.int64)
        out_tmp = path.with_suffix(".jsonl.tmp")
        with open(tmps[name], "rb") as src, open(out_tmp, "wb") as out:
            for k in order:
                src.seek(int(starts[k]))
                out.write(src.readline())
        os.replace(out_tmp, path)
        tmps[name].unlink()


def finalize(run: RunDir, config: dict[str, Any], *, min_score: float, include_seeds: bool,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write llava.json and manifest.json from the journals; return the manifest.

    Items the judge improved but scored below `min_score` get a "threshold" reject, made
    here from the records rather than by the runner, so that `evol filter` with another
    threshold leaves rejects.jsonl agreeing with llava.json.
    """
    per_round: dict[int, Counter] = defaultdict(Counter)
    per_operator: dict[str, Counter] = defaultdict(Counter)
    per_stage: dict[str, Counter] = defaultdict(Counter)  # examined, rejected, requests, tokens
    totals: Counter = Counter()
    below = run.rejects.with_suffix(".threshold.tmp")
    with LlavaWriter(run.llava) as llava, open(below, "w", encoding="utf-8") as below_out:
        for rec in iter_records_in_order(run.records):
            totals["records"] += 1
            totals["seed_items"] += len(rec.items)
            if include_seeds:
                for item in rec.items:
                    llava.write(llava_entry(rec, item))
                    totals["llava_entries"] += 1
            kept_any = False
            for v in rec.versions:
                stage_counts(v, per_stage)
                kept = [it for it in v.items if it.passes(min_score)]
                judged = [it for it in v.items if it.verdict is not None and it.verdict.rule is None]
                for c in (per_round[v.round], per_operator[v.operator]):
                    c["versions"] += 1
                    c["failed"] += v.status != "judged"
                    c["items"] += len(v.items)
                    c["kept"] += len(kept)
                    c["rule_rejected"] += sum(1 for it in v.items if it.verdict and it.verdict.rule)
                    c["judged"] += len(judged)
                    c["score_sum"] += sum(it.verdict.score for it in judged)
                totals["tokens_in"] += v.tokens_in
                totals["tokens_out"] += v.tokens_out
                totals["requests"] += v.requests
                for item in kept:
                    llava.write(llava_entry(rec, item))
                    totals["llava_entries"] += 1
                    kept_any = True
                for item in v.items:
                    verdict = item.verdict
                    if verdict is not None and verdict.improved and verdict.score < min_score:
                        why = f"score {verdict.score:g} below --min-score {min_score:g}: {verdict.reason or 'improved'}"
                        entry = reject_entry(str(rec.meta.get("key", rec.id)), why, "threshold", record=rec.id,
                                             item=item.id, round=v.round)
                        below_out.write(json.dumps(entry, ensure_ascii=False) + "\n")
            totals["records_with_kept_items"] += kept_any
    reject_stages: Counter = Counter()
    final_rejects = 0
    merged = run.rejects.with_suffix(".jsonl.tmp")
    with open(merged, "w", encoding="utf-8") as out:
        if run.rejects.exists():
            for entry in read_jsonl_tolerant(run.rejects):
                if entry.get("stage") == "threshold":
                    continue  # made again below for the threshold now in force
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")
                reject_stages[entry.get("stage", "?")] += 1
                final_rejects += bool(entry.get("final"))
        with open(below, encoding="utf-8") as f:
            for line in f:
                out.write(line)
                reject_stages["threshold"] += 1
    os.replace(merged, run.rejects)
    below.unlink()

    def summarise(c: Counter) -> dict[str, Any]:
        d = dict(c)
        d["kept_ratio"] = round(c["kept"] / c["items"], 4) if c["items"] else None
        d["mean_score"] = round(c["score_sum"] / c["judged"], 3) if c["judged"] else None
        d.pop("score_sum", None)
        return d

    previous = run.read_manifest()
    manifest = {
        "evol_version": __version__,
        "python": platform.python_version(),
        "created": previous.get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config,
        "thresholds": {"min_score": min_score, "include_seeds": include_seeds},
        "counts": {
            "records_out": totals["records"],
            "records_rejected": final_rejects,
            "records_with_kept_items": totals["records_with_kept_items"],
            "seed_items": totals["seed_items"],
            "llava_entries": totals["llava_entries"],
            "rejects_by_stage": dict(reject_stages),
        },
        "rounds": {str(r): summarise(c) for r, c in sorted(per_round.items())},
        "stages": {k: {f: per_stage[k][f] for f in STAGE_FIELDS} for k in STAGES if k in per_stage},
        "operators": {k: summarise(c) for k, c in sorted(per_operator.items())},
        "tokens": {"in": totals["tokens_in"], "out": totals["tokens_out"]},
        "model_calls": totals["requests"],
    }
    for key in ("input", "status", "pending", "prompts", "invocations"):
        if key in previous:
            manifest[key] = previous[key]
    if extra:
        manifest.update(extra)
    if manifest.get("invocations"):
        # requests actually sent and time spent, by every invocation (killed ones too),
        # rather than what the records account for
        manifest.update(invocation_totals(manifest["invocations"]))
    tmp = run.manifest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    os.replace(tmp, run.manifest)
    return manifest


def run_status(run: RunDir) -> dict[str, Any]:
    """Where a run folder stands, from its journals: done, pending, failed, rejected records
    and the most common reasons (what `evol status` prints)."""
    from evol.io import count_records

    manifest = run.read_manifest()
    failed_reasons: Counter = Counter()
    latest: dict[str, bool] = {}
    if run.records.exists():
        for rec in read_jsonl_tolerant(run.records):
            key = str(rec.get("meta", {}).get("key", rec.get("id")))
            latest[key] = has_failed_round(rec)
            for v in rec.get("versions") or ():
                if v.get("status", "judged") != "judged":
                    failed_reasons[_short_reason(v.get("error") or v.get("status"))] += 1
    rejected_keys: set[str] = set()
    reject_reasons: Counter = Counter()
    if run.rejects.exists():
        for entry in read_jsonl_tolerant(run.rejects):
            reject_reasons[f"{entry.get('stage')}: {_short_reason(entry.get('reason'))}"] += 1
            if entry.get("final"):
                rejected_keys.add(str(entry.get("key")))
    total = None
    source = (manifest.get("input") or {}).get("path") or (manifest.get("config") or {}).get("input")
    if source and Path(source).is_file():
        total = count_records(source, arrays=True)
        limit = (manifest.get("config") or {}).get("limit")
        if total is not None and limit is not None:
            total = min(total, limit)
    done = len(latest)
    rejected = len(rejected_keys - latest.keys())
    pending_info = manifest.get("pending") or {}
    return {
        "run": str(run.root),
        "status": manifest.get("status", "unknown"),
        "input_records": total,
        "done": done,
        "failed": sum(latest.values()),
        "rejected": rejected,
        "pending": (total - done - rejected) if total is not None else pending_info.get("records"),
        "stopped": pending_info.get("stopped"),
        "pending_reasons": pending_info.get("reasons") or {},
        "failed_reasons": dict(failed_reasons.most_common(5)),
        "reject_reasons": dict(reject_reasons.most_common(5)),
    }


def _short_reason(reason: Any, limit: int = 160) -> str:
    text = " ".join(str(reason or "?").split())
    # "rec7/r2/evolve: no usable JSON ..." -> the cause, so equal causes count together
    head, sep, rest = text.partition(": ")
    if sep and "/" in head and " " not in head:
        text = rest
    return text if len(text) <= limit else text[: limit - 3] + "..."
