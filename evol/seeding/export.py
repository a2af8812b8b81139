"""Write a run's items as training files, and read them back to prove nothing changed.

Formats (one entry per item, the same items `llava.json` holds: kept evolved items at the
score floor, plus seed items when asked or when the input is a seed file):

* llava: a LLaVA JSON array (`evol.io.llava_entry`), `<image>` once per image;
* sharegpt: JSONL in the multimodal ShareGPT layout (LLaMA-Factory's): `conversations`
  of human/gpt turns and an `images` list;
* parquet: one Parquet file, one row per item with the Q&A&S fields, the LLaVA-style
  `conversations`, images, score and source;
* datasets: a folder a Hugging Face `datasets.load_dataset("parquet", data_dir=...)` or
  `load_dataset(folder)` user can read: `data/train-0000i-of-0000n.parquet` shards, a
  README.md whose YAML header names the config and its features, and dataset_info.json.
  The `datasets` package itself is not needed to write it.

`read_export` reads any of them back as the same canonical entries `entries` produces,
so a round trip is a plain equality check.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Iterator

from evol.io import JsonlWriter, LlavaWriter, llava_entry, read_records
from evol.records import Item, Record
from evol.rundir import RunDir, iter_records_in_order

log = logging.getLogger("evol.export")

FORMATS = ("llava", "sharegpt", "parquet", "datasets")
ROWS_PER_GROUP = 2048
ROWS_PER_SHARD = 100_000


# ------------------------------------------------------------------------ inputs
def iter_input_records(path: str | Path, bad: list[str] | None = None) -> Iterator[Record]:
    """Records of a run folder (in input order) or of a records file; bad entries are skipped and noted."""
    path = Path(path)
    if path.is_dir():
        run = RunDir(path)
        if not run.records.exists():
            raise FileNotFoundError(f"{path} has no records.jsonl: not a run folder")
        yield from iter_records_in_order(run.records)
        return
    if not path.is_file():
        raise FileNotFoundError(f"no such run folder or records file: {path}")
    for res in read_records(path, "evol"):
        if res.record is not None:
            yield res.record
        else:
            log.warning("skipped %s: %s", res.key, res.error.reason)
            if bad is not None:
                bad.append(f"{res.key}: {res.error.reason}")


def export_items(record: Record, min_score: float, include_seeds: bool) -> list[Item]:
    """The items a record contributes: seeds first (when included), then kept evolved items."""
    seeds = record.items if include_seeds or not record.versions else []
    return [*seeds, *record.kept_items(min_score)]


def run_thresholds(path: str | Path) -> tuple[float, bool]:
    """The run's own --min-score and --include-seeds (defaults for a records file)."""
    p = Path(path)
    if p.is_dir():
        t = RunDir(p).read_manifest().get("thresholds", {})
        return float(t.get("min_score", 0.0)), bool(t.get("include_seeds", False))
    return 0.0, False


# ------------------------------------------------------------- canonical entries
def canonical(record: Record, item: Item) -> dict[str, Any]:
    """What every format must preserve: ids, images and the exact conversation text."""
    e = llava_entry(record, item)
    return {"id": e["id"], "record": e["record"], "images": list(record.images), "conversations": e["conversations"]}


def _row(record: Record, item: Item) -> dict[str, Any]:
    c = canonical(record, item)
    return {
        **c,
        "question": item.question, "answer": item.answer, "options": list(item.options),
        "objects": list(item.objects), "skills": list(item.skills), "format": item.format,
        "steps": [{"manipulation": s.manipulation, "description": s.description} for s in item.steps],
        "score": item.verdict.score if item.verdict else None,
        "source": record.source, "parent": item.parent,
    }


def _schema():
    import pyarrow as pa

    strings = pa.list_(pa.string())
    turn = pa.struct([("from", pa.string()), ("value", pa.string())])
    step = pa.struct([("manipulation", pa.string()), ("description", pa.string())])
    return pa.schema([
        ("id", pa.string()), ("record", pa.string()), ("images", strings), ("conversations", pa.list_(turn)),
        ("question", pa.string()), ("answer", pa.string()), ("options", strings), ("objects", strings),
        ("skills", strings), ("format", pa.string()), ("steps", pa.list_(step)), ("score", pa.float64()),
        ("source", pa.string()), ("parent", pa.string()),
    ])


# ------------------------------------------------------------------------ writers
class _ParquetSink:
    """Rows to one or more Parquet files, a row group at a time (memory stays flat)."""

    def __init__(self, paths: Iterator[Path]):
        self._paths, self._writer, self._rows, self.files = paths, None, [], []
        self._in_file = 0

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= ROWS_PER_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._rows:
            return
        if self._writer is None or self._in_file >= ROWS_PER_SHARD:
            self.close_file()
            path = next(self._paths)
            self._writer, self._in_file = pq.ParquetWriter(path, _schema(), compression="zstd"), 0
            self.files.append(path)
        self._writer.write_table(pa.Table.from_pylist(self._rows, schema=_schema()))
        self._in_file += len(self._rows)
        self._rows = []

    def close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> None:
        self._flush()
        if not self.files:  # an empty export is still a readable file with the schema
            import pyarrow.parquet as pq

            path = next(self._paths)
            pq.write_table(_schema().empty_table(), path)
            self.files.append(path)
        self.close_file()


def write_export(pairs: Iterable[tuple[Record, Item]], fmt: str, out: str | Path) -> dict[str, Any]:
    """Write (record, item) pairs in `fmt` to `out`; return {"entries": n, "files": [...]}."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    out = Path(out)
    n = 0
    if fmt == "llava":
        with LlavaWriter(out) as w:
            for rec, item in pairs:
                w.write(llava_entry(rec, item))
                n += 1
        return {"entries": n, "files": [str(out)]}
    if fmt == "sharegpt":
        tmp = out.with_name(f".{out.name}.tmp")
        with JsonlWriter(tmp, append=False) as w:
            for rec, item in pairs:
                w.write(canonical(rec, item))
                n += 1
        tmp.replace(out)
        return {"entries": n, "files": [str(out)]}
    if fmt == "parquet":
        tmp = out.with_name(f".{out.name}.tmp")
        sink = _ParquetSink(iter([tmp]))
        for rec, item in pairs:
            sink.add(_row(rec, item))
            n += 1
        sink.close()
        tmp.replace(out)
        return {"entries": n, "files": [str(out)]}
    return _write_datasets(pairs, out)


def _write_datasets(pairs: Iterable[tuple[Record, Item]], out: Path) -> dict[str, Any]:
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    for old in data.glob("train-*.parquet"):
        old.unlink()
    names = (data / f"part-{i:05d}.parquet" for i in range(10**6))
    sink = _ParquetSink(names)
    n = 0
    for rec, item in pairs:
        sink.add(_row(rec, item))
        n += 1
    sink.close()
    total = len(sink.files)
    files = []
    for i, path in enumerate(sink.files):  # the shard count is known only at the end
        final = data / f"train-{i:05d}-of-{total:05d}.parquet"
        path.replace(final)
        files.append(final)
    features = _features()
    size = sum(f.stat().st_size for f in files)  # Parquet bytes: `datasets` wants a size per split
    info = {"description": "Multimodal instruction data exported by evol.", "features": features,
            "splits": {"train": {"name": "train", "num_examples": n, "num_bytes": size}},
            "builder_name": "parquet", "config_name": "default", "dataset_size": size}
    (out / "dataset_info.json").write_text(json.dumps(info, indent=2))
    (out / "README.md").write_text(_readme(n, size, features))
    return {"entries": n, "files": [str(f) for f in files]}


def _features() -> dict[str, Any]:
    """The Parquet schema in the `datasets` Features JSON layout."""
    s = {"dtype": "string", "_type": "Value"}
    seq = {"feature": s, "_type": "Sequence"}
    return {
        "id": s, "record": s, "images": seq,
        "conversations": [{"from": s, "value": s}],
        "question": s, "answer": s, "options": seq, "objects": seq, "skills": seq, "format": s,
        "steps": [{"manipulation": s, "description": s}],
        "score": {"dtype": "float64", "_type": "Value"}, "source": s, "parent": s,
    }


def _readme(n: int, size: int, features: dict[str, Any]) -> str:
    def yaml_type(f: Any) -> str:
        if isinstance(f, list):
            return "list"
        if f.get("_type") == "Sequence":
            return "sequence: string"
        return f"dtype: {f['dtype']}"

    lines = ["---", "configs:", "- config_name: default", "  data_files:", "  - split: train",
             "    path: data/train-*", "dataset_info:", "  features:"]
    for name, f in features.items():
        if isinstance(f, list):
            lines += [f"  - name: {name}", "    list:"]
            lines += [f"    - name: {k}\n      dtype: string" for k in f[0]]
        else:
            lines += [f"  - name: {name}", f"    {yaml_type(f)}"]
    lines += ["  splits:", "  - name: train", f"    num_bytes: {size}", f"    num_examples: {n}",
              f"  dataset_size: {size}", "---", "",
              "# evol export", "",
              f"{n} instruction items, one row each. Image paths in `images` are relative to the image root",
              "of the run that made them. `conversations` holds the LLaVA-style human/gpt turns; the other",
              "columns keep each item's question, answer, options, objects, skills, task format, reasoning",
              "steps, judge score and source.", "",
              "```python", "import datasets",
              'ds = datasets.load_dataset("parquet", data_dir="<this folder>/data", split="train")',
              "```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------ readers
def read_export(path: str | Path, fmt: str) -> Iterator[dict[str, Any]]:
    """The canonical entries of an export, read back with our readers or pyarrow."""
    path = Path(path)
    if fmt == "llava":
        for res in read_records(path, "llava"):
            if res.error is not None:
                raise ValueError(f"{path}: {res.error}")
            rec = res.record
            raw_images = rec.images
            yield {"id": rec.id, "record": rec.meta.get("record"), "images": raw_images,
                   "conversations": _turns(rec, raw_images)}
    elif fmt == "sharegpt":
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    yield {k: d.get(k) for k in ("id", "record", "images", "conversations")}
    elif fmt in ("parquet", "datasets"):
        import pyarrow.parquet as pq

        files = [path] if fmt == "parquet" else sorted((path / "data").glob("train-*.parquet"))
        for file in files:
            pf = pq.ParquetFile(file)
            for batch in pf.iter_batches(columns=["id", "record", "images", "conversations"]):
                yield from batch.to_pylist()
    else:
        raise ValueError(f"unknown export format {fmt!r}")


def _turns(rec: Record, images: list[str]) -> list[dict[str, str]]:
    """LLaVA turns rebuilt from what our LLaVA reader made of an entry (one item per entry)."""
    item = rec.items[0]
    return [{"from": "human", "value": "<image>\n" * len(images) + item.question},
            {"from": "gpt", "value": item.answer}]
