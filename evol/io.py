"""Streaming readers and appending writers for records.

Inputs can be very large (hundreds of thousands of entries), so nothing here holds a
whole file: JSONL is read line by line, a JSON array is streamed with ijson, and the
writers append one entry at a time. A bad entry becomes an error result and the stream
goes on, so one typo never costs a whole run.

Input shapes (detected per entry with fmt="auto"):
  * our own records (`items` / `versions` / `images`) -> `validate_record`, source "evol";
  * LLaVA (`conversations` of human/gpt turns, `image` str or list) -> source "llava";
  * MMEvol (`image`, `caption`, `det`, `conversations_v0`) -> source "mmevol".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from string import ascii_uppercase
from typing import Any, Iterator

import ijson
from pydantic import BaseModel, ValidationError

from .records import Item, Obj, Record, RecordError, validate_record

try:  # the C backend is many times faster; fall back to whatever ijson picked
    _ijson = ijson.get_backend("yajl2_c")
except ImportError:  # pragma: no cover - depends on the installed wheel
    _ijson = ijson

log = logging.getLogger(__name__)

FORMATS = ("auto", "evol", "llava", "mmevol")
_META_MAX_CHARS = 1024  # extra input fields larger than this are not copied into meta
_IMAGE_TOKEN = re.compile(r"\n*<image>\n*")
_HUMAN, _GPT = {"human", "user"}, {"gpt", "assistant"}
_QAS_FIELDS = ("question", "answer", "objects", "skills", "format", "steps", "options")


@dataclass(slots=True)
class ReadResult:
    """One input entry: either `record` or `error` is set.

    `key` is the record id, or a position ("line:7", "item:3") when the entry has none.
    `index` is the 0-based position among the non-blank entries of the input.
    """

    key: str
    index: int
    record: Record | None = None
    error: RecordError | None = None

    @property
    def ok(self) -> bool:
        return self.record is not None


class _FieldError(Exception):
    """Raised inside the converters; turned into a RecordError naming the record."""

    def __init__(self, field: str, msg: str):
        super().__init__(f"field {field!r}: {msg}")


def _bad(field: str, expected: str, value: Any) -> _FieldError:
    text = json.dumps(value, default=str)
    shown = f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
    return _FieldError(field, f"expected {expected}, got {shown}")


# --------------------------------------------------------------------------- readers


def read_records(path: str | Path, fmt: str = "auto") -> Iterator[ReadResult]:
    """Yield one `ReadResult` per entry of a JSONL file or a JSON array file."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such input file: {path}")
    reader = _read_array if _is_json_array(path) else _read_lines
    return reader(path, fmt)


def count_records(path: str | Path, arrays: bool = False) -> int | None:
    """Number of entries in a JSONL file (non-blank lines). A JSON array gives None, unless
    `arrays`: then its entries are counted by a streaming parse (a full read of the file,
    so only where the count is worth it); None when the array is broken."""
    path = Path(path)
    if _is_json_array(path):
        if not arrays:
            return None
        n = 0
        try:
            with open(path, "rb") as f:
                for prefix, event, _ in _ijson.parse(f):
                    if prefix == "item" and event in ("start_map", "start_array", "string", "number",
                                                      "boolean", "null"):
                        n += 1
        except Exception:  # broken JSON: the reader names the problem; no count here
            return None
        return n
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _is_json_array(path: Path) -> bool:
    """A file is a JSON array when its first non-blank character is "[".

    `.jsonl` / `.ndjson` files are always read as lines, so a JSONL file whose first
    entry is (wrongly) a list still gets per-line errors instead of one fatal one.
    """
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return False
    with open(path, "rb") as f:
        head = f.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()
    return head.startswith(b"[")


def _read_lines(path: Path, fmt: str) -> Iterator[ReadResult]:
    index, stem = 0, path.stem
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            raw = raw.strip()
            if not raw:
                continue
            try:
                data = json.loads(raw)
            except (ValueError, RecursionError) as exc:  # also bad UTF-8, absurd nesting
                msg = exc
                if isinstance(exc, json.JSONDecodeError):
                    msg = f"{exc.msg} at column {exc.colno}"
                key = f"line:{lineno}"
                reason = f"line {lineno} is not valid JSON: {msg}"
                yield ReadResult(key, index, error=RecordError(key, reason))
            else:
                yield _convert(data, fmt, stem, f"line:{lineno}", index)
            index += 1


def _read_array(path: Path, fmt: str) -> Iterator[ReadResult]:
    with open(path, "rb") as f:
        if f.read(3) != b"\xef\xbb\xbf":
            f.seek(0)
        # use_float: without it ijson gives Decimal, which neither pydantic nor json likes
        entries = _ijson.items(f, "item", use_float=True)
        index, stem = 0, path.stem
        while True:
            try:
                data = next(entries)
            except StopIteration:
                return
            except Exception as exc:  # ijson.JSONError, bad UTF-8, ...: the rest is unreadable
                # a streaming parser cannot resync after a syntax error, so this is the end
                key = f"item:{index}"
                where = f"after entry {index - 1}" if index else "before the first entry"
                detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                reason = f"JSON array broken {where}; the rest of the file was skipped: {detail}"
                yield ReadResult(key, index, error=RecordError(key, reason))
                return
            yield _convert(data, fmt, stem, f"item:{index}", index)
            index += 1


def _convert(data: Any, fmt: str, stem: str, where: str, index: int) -> ReadResult:
    """Turn one parsed entry into a result; `where` names it when it has no usable id."""
    if not isinstance(data, dict):
        reason = f"expected a JSON object, got {type(data).__name__}"
        return ReadResult(where, index, error=RecordError(where, reason))
    fallback_id = f"{stem}-{index}"
    rid = str(data["id"]) if data.get("id") is not None else fallback_id
    kind = fmt if fmt != "auto" else _detect(data)
    try:
        if kind is None:
            raise RecordError(rid, "cannot tell the format: none of items/versions/images, "
                                   "conversations, conversations_v0/det or image is present")
        if kind == "evol":
            record = validate_record(data, fallback_id)
            if record.source is None:
                record.source = "evol"
        else:
            build = _from_llava if kind == "llava" else _from_mmevol
            try:
                raw = build(data, rid)
            except _FieldError as exc:
                raise RecordError(rid, str(exc)) from None
            record = validate_record(raw, rid)
    except RecordError as err:
        return ReadResult(err.record_id, index, error=err)
    return ReadResult(record.id, index, record=record)


def _detect(data: dict) -> str | None:
    if "items" in data or "versions" in data:
        return "evol"
    if "conversations_v0" in data or "det" in data:
        return "mmevol"
    if "conversations" in data:
        return "llava"
    if "image" in data:  # an MMEvol entry with only image and caption
        return "mmevol"
    if "images" in data:
        return "evol"
    return None


def _from_llava(data: dict, rid: str) -> dict:
    return {
        "id": rid,
        "images": _images(data.get("image")),
        "items": _items_from_turns(data.get("conversations"), "conversations", rid),
        "source": "llava",
        "meta": _extras(data, {"id", "image", "conversations"}),
    }


def _from_mmevol(data: dict, rid: str) -> dict:
    caption = data.get("caption")
    if caption is not None and not isinstance(caption, str):
        raise _bad("caption", "a string", caption)
    if data.get("conversations_v0") is not None:
        field, conv = "conversations_v0", data["conversations_v0"]
    else:
        field, conv = "conversations", data.get("conversations")
    if isinstance(conv, list) and conv and not (isinstance(conv[0], dict) and "from" in conv[0]):
        items = [_item_from_qas(d, f"{rid}#{k}", f"{field}.{k}") for k, d in enumerate(conv)]
    else:
        items = _items_from_turns(conv, field, rid)
    return {
        "id": rid,
        "images": _images(data.get("image")),
        "caption": caption or "",
        "objects": _objects(data.get("det"), data),
        "items": items,
        "source": "mmevol",
        "meta": _extras(data, {"id", "image", "caption", "det", "conversations_v0",
                               "conversations"}),
    }


def _images(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise _bad("image", "a string or a list of strings", value)


def _items_from_turns(turns: Any, field: str, rid: str) -> list[dict]:
    """Pair each human turn with the gpt turn right after it; unpaired turns are dropped."""
    if turns is None:
        return []
    if not isinstance(turns, list):
        raise _bad(field, "a list of turns", turns)
    items: list[dict] = []
    asked = None  # the value of the previous turn when it was a human one
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise _bad(f"{field}.{i}", "an object", turn)
        role, value = turn.get("from"), turn.get("value")
        if not isinstance(role, str):
            raise _bad(f"{field}.{i}.from", "a string", role)
        if not isinstance(value, str):
            raise _bad(f"{field}.{i}.value", "a string", value)
        if asked is not None and role in _GPT:
            items.append({"id": f"{rid}#{len(items)}", "question": _strip_image_tokens(asked),
                          "answer": value})
        asked = value if role in _HUMAN else None
    return items


def _strip_image_tokens(text: str) -> str:
    return _IMAGE_TOKEN.sub("\n", text).strip() if "<image>" in text else text.strip()


def _item_from_qas(d: Any, item_id: str, field: str) -> dict:
    if not isinstance(d, dict):
        raise _bad(field, "an object", d)
    raw = {k: d[k] for k in _QAS_FIELDS if d.get(k) is not None}
    if isinstance(raw.get("steps"), list):  # MMEvol sometimes gives steps as plain strings
        raw["steps"] = [{"description": s} if isinstance(s, str) else s for s in raw["steps"]]
    if isinstance(raw.get("question"), str):
        raw["question"] = _strip_image_tokens(raw["question"])
    try:
        return Item.model_validate({**raw, "id": item_id}).model_dump()
    except ValidationError as exc:
        raise _first_error(exc, field) from None


def _objects(det: Any, data: dict) -> list[dict]:
    """Normalise every `det` shape to a list of {label, box} with boxes in 0-1."""
    if det is None:
        return []
    pairs: list[tuple[str, Any, Any]] = []  # (field path, label, box)
    if isinstance(det, dict):
        for label, boxes in det.items():
            if boxes is None or _is_box(boxes):
                pairs.append((f"det.{label}", label, boxes))
            elif isinstance(boxes, list):
                pairs += [(f"det.{label}.{j}", label, b) for j, b in enumerate(boxes)]
            else:
                raise _bad(f"det.{label}", "a box or a list of boxes", boxes)
    elif isinstance(det, list):
        for i, d in enumerate(det):
            if isinstance(d, str):
                pairs.append((f"det.{i}", d, None))
            elif isinstance(d, dict):
                label = next((d[k] for k in ("label", "name", "category") if k in d), None)
                pairs.append((f"det.{i}", label, d.get("box", d.get("bbox"))))
            elif isinstance(d, list) and len(d) == 2:
                pairs.append((f"det.{i}", d[0], d[1]))
            else:
                raise _bad(f"det.{i}", "{label, box} or [label, box]", d)
    else:
        raise _bad("det", "a list or an object", det)

    objects = []
    for field, label, box in pairs:
        if not isinstance(label, str):
            raise _bad(f"{field}.label", "a string label", label)
        if box is not None:
            if not _is_box(box):
                raise _bad(f"{field}.box", "[x1, y1, x2, y2] numbers", box)
            if any(v > 1 for v in box):
                w, h = _image_size(data, field, box)
                box = [box[0] / w, box[1] / h, box[2] / w, box[3] / h]
            box = [_clamp(v) for v in box]
        try:
            objects.append(Obj.model_validate({"label": label, "box": box}).model_dump())
        except ValidationError as exc:
            raise _first_error(exc, field) from None
    return objects


def _is_box(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 4 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)


def _image_size(data: dict, field: str, box: list) -> tuple[float, float]:
    w, h = data.get("width"), data.get("height")
    size = data.get("image_size")
    if w is None and h is None and isinstance(size, list) and len(size) == 2:
        w, h = size
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (w, h))
    if not ok:
        raise _FieldError(f"{field}.box", f"box {box} is in pixels but the record gives no usable "
                                          "width/height or image_size to normalise it")
    return float(w), float(h)


def _clamp(v: float) -> float:
    """Round to 3 decimals, pulling float overshoot such as 1.0004 back inside 0-1."""
    if 1 < v <= 1.001:
        v = 1.0
    elif -0.001 <= v < 0:
        v = 0.0
    return round(v, 3)


def _extras(data: dict, known: set[str]) -> dict:
    """Unknown input fields, kept for traceability as long as they are small."""
    meta = {}
    for key, value in data.items():
        if key in known:
            continue
        try:
            if len(json.dumps(value, ensure_ascii=False)) <= _META_MAX_CHARS:
                meta[key] = value
        except (TypeError, ValueError):
            pass
    return meta


def _first_error(exc: ValidationError, prefix: str) -> _FieldError:
    err = exc.errors()[0]
    loc = ".".join([prefix, *(str(p) for p in err["loc"])])
    return _FieldError(loc, err["msg"])


# --------------------------------------------------------------------------- writers


def file_sha256(path: str | Path) -> str:
    """The sha256 of a whole file, read in 1 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class JsonlWriter:
    """Appends one compact JSON line per `write`, flushed at once.

    After a SIGKILL at most the line being written is lost. When appending to a file
    whose last line was torn by such a crash, the torn tail is cut off first so the next
    line does not get glued onto it.
    """

    def __init__(self, path: str | Path, append: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if append:
            _heal_tail(self.path)
        self._f = open(self.path, "a" if append else "w", encoding="utf-8")

    def write(self, obj: BaseModel | dict) -> None:
        if isinstance(obj, BaseModel):
            line = obj.model_dump_json(exclude_none=True)
        else:
            line = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        self._f.write(line + "\n")
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _heal_tail(path: Path) -> None:
    """Make the file end with a newline: cut a torn last line, or end a complete one."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "r+b") as f:
        end = f.seek(0, os.SEEK_END)
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        pos, tail = end, b""
        while pos > 0 and b"\n" not in tail:  # walk back to the last newline
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
        cut = pos + tail.rfind(b"\n") + 1  # 0 when the file has a single line
        f.seek(cut)
        try:
            json.loads(f.read())
        except ValueError:
            log.warning("%s: dropping a torn last line (%d bytes)", path, end - cut)
            f.truncate(cut)
        else:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")


def read_jsonl_tolerant(path: str | Path, repair: bool = False) -> Iterator[dict]:
    """Read our own JSONL output back (for resume), yielding one dict per line.

    A missing file yields nothing. A torn final line (no newline, not valid JSON) is
    skipped, and with `repair=True` cut off once the whole file has been read. Other
    unreadable lines are skipped with a warning: their records are simply redone.
    """
    path = Path(path)
    if not path.is_file():
        return
    good_end, torn = 0, False
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            start, good_end = good_end, good_end + len(raw)
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except ValueError:
                if not raw.endswith(b"\n"):
                    torn, good_end = True, start
                    break
                log.warning("%s: line %d is not valid JSON, skipped", path, lineno)
                continue
            if isinstance(data, dict):
                yield data
            else:
                log.warning("%s: line %d is not a JSON object, skipped", path, lineno)
    if torn and repair:
        log.warning("%s: truncating a torn last line", path)
        os.truncate(path, good_end)


def llava_entry(record: Record, item: Item) -> dict:
    """One LLaVA training entry for `item`, with one <image> line per record image."""
    question = _strip_image_tokens(item.question)
    if item.options:
        lines = [opt if re.match(r"[A-Z][.)]\s", opt) else f"{_letter(i)}. {opt}"
                 for i, opt in enumerate(item.options)]
        if not all(line in question for line in lines):
            question = "\n".join([question, *lines])
    entry: dict[str, Any] = {"id": item.id, "record": record.id}
    if len(record.images) == 1:
        entry["image"] = record.images[0]
    elif record.images:
        entry["image"] = list(record.images)
    entry["conversations"] = [
        {"from": "human", "value": "<image>\n" * len(record.images) + question},
        {"from": "gpt", "value": item.answer},
    ]
    return entry


def _letter(i: int) -> str:
    return ascii_uppercase[i] if i < len(ascii_uppercase) else str(i + 1)


class LlavaWriter:
    """Streams a LLaVA JSON array to a temp file, moved over `path` only on close.

    Entries go straight to disk, so memory does not grow with their number, and a crash
    (or an exception inside `with`) leaves any previous file at `path` untouched.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._f = open(self._tmp, "w", encoding="utf-8")
        self._f.write("[")
        self.count = 0

    def write(self, entry: dict) -> None:
        self._f.write(("\n" if self.count == 0 else ",\n") + json.dumps(entry, ensure_ascii=False))
        self.count += 1

    def write_item(self, record: Record, item: Item) -> None:
        self.write(llava_entry(record, item))

    def close(self) -> None:
        """Finish the array and atomically replace `path` with it."""
        if self._f.closed:
            return
        self._f.write("\n]\n" if self.count else "]\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop what was written; `path` stays as it was."""
        if not self._f.closed:
            self._f.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> LlavaWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
