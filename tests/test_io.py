"""Tests for evol.io: the streaming readers and the appending/streaming writers."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from evol.io import (
    JsonlWriter,
    LlavaWriter,
    ReadResult,
    count_records,
    llava_entry,
    read_jsonl_tolerant,
    read_records,
)
from evol.records import Item, Obj, Record, Step, Verdict, Version


def write_jsonl(path: Path, entries: list) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    return path


def write_array(path: Path, entries: list) -> Path:
    path.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    return path


def only_ok(results: list[ReadResult]) -> list[Record]:
    bad = [r.error for r in results if not r.ok]
    assert not bad, bad
    return [r.record for r in results]


LLAVA = [
    {
        "id": 17,
        "image": "coco/0001.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat color is the bus?"},
            {"from": "gpt", "value": "Red."},
            {"from": "human", "value": "How many wheels can you see?"},
            {"from": "gpt", "value": "Four."},
        ],
        "dataset": "coco",
    },
    {  # text-only entry: no image, no id
        "conversations": [
            {"from": "human", "value": "Name a prime number.\n<image>"},
            {"from": "gpt", "value": "Seven."},
        ],
    },
]


def check_llava(records: list[Record], stem: str) -> None:
    first, second = records
    assert first.id == "17" and first.source == "llava"
    assert first.images == ["coco/0001.jpg"]
    assert [(it.id, it.question, it.answer) for it in first.items] == [
        ("17#0", "What color is the bus?", "Red."),
        ("17#1", "How many wheels can you see?", "Four."),
    ]
    assert first.meta == {"dataset": "coco"}
    assert second.id == f"{stem}-1" and second.images == []
    assert second.items[0].question == "Name a prime number."


# ------------------------------------------------------------------------ LLaVA input


def test_llava_json_array(tmp_path):
    path = write_array(tmp_path / "llava.json", LLAVA)
    results = list(read_records(path))
    assert [r.index for r in results] == [0, 1]
    assert [r.key for r in results] == ["17", "llava-1"]
    check_llava(only_ok(results), "llava")
    assert count_records(path) is None


def test_llava_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "llava.jsonl", LLAVA)
    check_llava(only_ok(list(read_records(path))), "llava")


def test_llava_multi_image_and_unpaired_turns(tmp_path):
    entry = {
        "id": "m1",
        "image": ["a.jpg", "b.jpg"],
        "conversations": [
            {"from": "human", "value": "<image>\n<image>\nWhich picture is brighter?"},
            {"from": "gpt", "value": "The first."},
            {"from": "human", "value": "A question nobody answered"},
        ],
    }
    (record,) = only_ok(list(read_records(write_jsonl(tmp_path / "m.jsonl", [entry]))))
    assert record.images == ["a.jpg", "b.jpg"]
    assert [it.question for it in record.items] == ["Which picture is brighter?"]


def test_forced_format_and_bad_format_name(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"id": "a", "image": "a.jpg", "caption": "c"}])
    (res,) = read_records(path)  # auto: image + caption only -> MMEvol caption-only entry
    assert res.ok and res.record.source == "mmevol" and res.record.caption == "c"
    (res,) = read_records(path, fmt="llava")
    assert res.ok and res.record.source == "llava" and res.record.meta == {"caption": "c"}
    with pytest.raises(ValueError, match="unknown format"):
        read_records(path, fmt="csv")
    with pytest.raises(FileNotFoundError):
        read_records(tmp_path / "missing.jsonl")


# ----------------------------------------------------------------------- MMEvol input

BOXES = [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 1.0, 1.0]]
DET_SHAPES = {
    "dicts": [
        {"label": "cup", "box": BOXES[0]},
        {"name": "dog", "bbox": BOXES[1]},
    ],
    "pairs": [["cup", BOXES[0]], ["dog", BOXES[1]]],
    "by_label": {"cup": [BOXES[0]], "dog": BOXES[1]},  # a list of boxes, or one box
}


@pytest.mark.parametrize("shape", sorted(DET_SHAPES))
def test_mmevol_det_shapes(tmp_path, shape):
    entry = {"id": "e1", "image": "x.jpg", "caption": "A cup and a dog.", "det": DET_SHAPES[shape]}
    (record,) = only_ok(list(read_records(write_jsonl(tmp_path / "mm.jsonl", [entry]))))
    assert record.source == "mmevol" and record.caption == "A cup and a dog."
    assert record.objects == [Obj(label="cup", box=BOXES[0]), Obj(label="dog", box=BOXES[1])]


def test_mmevol_category_key_and_label_only(tmp_path):
    entry = {"id": "e1", "image": "x.jpg", "det": [{"category": "tree"}, "sky"]}
    (record,) = only_ok(list(read_records(write_jsonl(tmp_path / "mm.jsonl", [entry]))))
    assert record.objects == [Obj(label="tree"), Obj(label="sky")]


def test_mmevol_pixel_boxes_are_normalised(tmp_path):
    entries = [
        {"id": "wh", "image": "x.jpg", "width": 640, "height": 480,
         "det": [{"label": "car", "box": [64, 48, 320.3, 480.2]}]},
        {"id": "size", "image": "x.jpg", "image_size": [200, 100],
         "det": {"car": [[20, 10, 200.1, 100]]}},
    ]
    wh, size = only_ok(list(read_records(write_jsonl(tmp_path / "px.jsonl", entries))))
    # 480.2 / 480 overshoots 1 by float noise and is clamped; the rest is rounded to 3 places
    assert wh.objects[0].box == [0.1, 0.1, 0.5, 1.0]
    assert size.objects[0].box == [0.1, 0.1, 1.0, 1.0]
    assert size.meta["image_size"] == [200, 100]


def test_mmevol_pixel_box_without_size_is_an_error(tmp_path):
    entries = [
        {"id": "nosize", "image": "x.jpg", "det": [["car", [10, 10, 200, 200]]]},
        {"id": "after", "image": "y.jpg", "det": []},
    ]
    bad, good = read_records(write_jsonl(tmp_path / "px.jsonl", entries))
    assert not bad.ok and bad.key == "nosize" and bad.error.record_id == "nosize"
    assert "det.0.box" in bad.error.reason and "pixels" in bad.error.reason
    assert bad.error.stage == "read"
    assert good.ok and good.record.id == "after"


def test_mmevol_conversations_v0_qas_and_turns(tmp_path):
    qas = {
        "id": "q1", "image": ["a.jpg", "b.jpg"], "caption": "two photos",
        "conversations_v0": [
            {"question": "<image>\nWhere is the cup?", "answer": "On the table.",
             "objects": ["cup", "table"], "skills": ["grounding"], "format": "short",
             "steps": [{"manipulation": "Grounding(cup)", "description": "find the cup"},
                       "look below it"]},
        ],
    }
    turns = {"id": "q2", "image": "c.jpg", "det": [],
             "conversations_v0": [{"from": "human", "value": "<image>\nHi?"},
                                  {"from": "gpt", "value": "Hello."}]}
    r1, r2 = only_ok(list(read_records(write_jsonl(tmp_path / "q.jsonl", [qas, turns]))))
    (item,) = r1.items
    assert item.id == "q1#0" and item.question == "Where is the cup?"
    assert item.objects == ["cup", "table"] and item.skills == ["grounding"]
    assert item.format == "short"
    assert item.steps == [Step(manipulation="Grounding(cup)", description="find the cup"),
                          Step(description="look below it")]
    assert [(it.id, it.question, it.answer) for it in r2.items] == [("q2#0", "Hi?", "Hello.")]


# ------------------------------------------------------------------------ bad entries


def test_bad_entries_do_not_stop_the_stream(tmp_path):
    lines = [
        json.dumps({"id": "ok1", "items": [{"id": "i", "question": "q", "answer": "a"}]}),
        '{"id": "torn", "items": [',                                   # broken JSON
        "[1, 2, 3]",                                                    # not an object
        "",                                                             # blank: skipped
        json.dumps({"id": "cap", "image": "x.jpg", "caption": 123}),
        json.dumps({"id": "imgs", "images": {"a": 1}, "items": []}),
        json.dumps({"id": "conv", "conversations": [{"from": "human", "value": 5}]}),
        json.dumps({"id": "badimg", "image": {"a": 1}, "conversations": []}),
        json.dumps({"id": "qas", "image": "x.jpg", "conversations_v0": [{"answer": "a"}]}),
        json.dumps({"what": "is this"}),
        json.dumps({"id": "ok2", "items": []}),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    results = list(read_records(path))
    assert count_records(path) == 10
    assert [r.index for r in results] == list(range(10))
    by_key = {r.key: r for r in results}
    assert list(by_key) == ["ok1", "line:2", "line:3", "cap", "imgs", "conv", "badimg", "qas",
                            "bad-8", "ok2"]
    assert by_key["ok1"].ok and by_key["ok2"].ok
    expect = {  # key -> pieces the reason must contain
        "line:2": ["line 2", "not valid JSON"],
        "line:3": ["JSON object", "list"],
        "cap": ["'caption'", "string"],
        "imgs": ["'images'"],
        "conv": ["'conversations.0.value'"],
        "badimg": ["'image'"],
        "qas": ["'conversations_v0.0.question'"],
        "bad-8": ["cannot tell the format"],
    }
    for key, pieces in expect.items():
        res = by_key[key]
        assert not res.ok and res.record is None, key
        assert res.error.record_id == key and res.error.stage == "read"
        for piece in pieces:
            assert piece in res.error.reason, (key, res.error.reason)


def test_json_array_broken_midway_yields_one_error_then_stops(tmp_path):
    path = tmp_path / "broken.json"
    good = json.dumps(LLAVA[0])
    path.write_text(f"[{good},\n{good},\n{{\"id\": oops}}, {good}]", encoding="utf-8")
    results = list(read_records(path))
    assert [r.ok for r in results] == [True, True, False]
    err = results[-1]
    assert err.key == "item:2" and err.index == 2
    assert "after entry 1" in err.error.reason


def test_json_array_with_bom_and_empty_array(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(LLAVA).encode())
    check_llava(only_ok(list(read_records(path))), "bom")
    empty = tmp_path / "empty.json"
    empty.write_text(" [ ]\n")
    assert list(read_records(empty)) == [] and count_records(empty) is None


def test_json_array_non_object_entry(tmp_path):
    path = write_array(tmp_path / "mixed.json", ["just a string", LLAVA[0]])
    bad, good = read_records(path)
    assert not bad.ok and bad.key == "item:0" and "str" in bad.error.reason
    assert good.ok and good.record.id == "17"


# ---------------------------------------------------------------- JSONL round trip


def sample_record(n: int) -> Record:
    seed = Item(id=f"r{n}#0", question="What is on the table?", answer="A cup.",
                objects=["cup"], skills=["recognition"], format="short",
                steps=[Step(manipulation="Grounding(cup)", description="locate")])
    child = Item(id=f"r{n}#0.1", question="What is left of the cup?", answer="A plate.",
                 parent=seed.id, options=["plate", "fork"],
                 verdict=Verdict(improved=True, score=7.5, reason="harder"))
    return Record(id=f"r{n}", images=["a.jpg"], caption="A table, naïvely lit.",
                  objects=[Obj(label="cup", box=[0.1, 0.2, 0.3, 0.4])], items=[seed],
                  versions=[Version(round=1, operator="reasoning", items=[child])],
                  source="llava", meta={"dataset": "coco", "n": n})


def test_round_trip_through_jsonl_writer(tmp_path):
    path = tmp_path / "out" / "records.jsonl"
    records = [sample_record(i) for i in range(3)] + [Record(id="bare")]
    with JsonlWriter(path) as writer:
        for rec in records:
            writer.write(rec)
    back = only_ok(list(read_records(path)))
    assert back[:3] == records[:3]
    assert back[3] == records[3].model_copy(update={"source": "evol"})  # no source -> ours
    assert all("\n" not in line for line in path.read_text(encoding="utf-8").splitlines())


def test_jsonl_writer_flushes_appends_and_overwrites(tmp_path):
    path = tmp_path / "w.jsonl"
    writer = JsonlWriter(path)
    writer.write({"id": "a", "note": "é"})
    assert path.read_text(encoding="utf-8") == '{"id":"a","note":"é"}\n'  # before close
    writer.close()
    with JsonlWriter(path) as w:
        w.write({"id": "b"})
    assert [d["id"] for d in read_jsonl_tolerant(path)] == ["a", "b"]
    with JsonlWriter(path, append=False) as w:
        w.write({"id": "c"})
    assert [d["id"] for d in read_jsonl_tolerant(path)] == ["c"]


def test_jsonl_writer_cuts_a_torn_tail_before_appending(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text('{"id":"a"}\n{"id":"b","ite', encoding="utf-8")
    with JsonlWriter(path) as w:
        w.write({"id": "c"})
    assert path.read_text(encoding="utf-8") == '{"id":"a"}\n{"id":"c"}\n'
    # a complete last line that only lacks its newline is kept
    path.write_text('{"id":"a"}', encoding="utf-8")
    with JsonlWriter(path) as w:
        w.write({"id": "b"})
    assert path.read_text(encoding="utf-8") == '{"id":"a"}\n{"id":"b"}\n'


def test_read_jsonl_tolerant_torn_final_line(tmp_path):
    path = tmp_path / "run.jsonl"
    text = '{"id":"a"}\n{"id":"b"}\n{"id":"c","items":[{"q'
    path.write_text(text, encoding="utf-8")
    assert [d["id"] for d in read_jsonl_tolerant(path)] == ["a", "b"]
    assert path.read_text(encoding="utf-8") == text  # untouched without repair
    assert [d["id"] for d in read_jsonl_tolerant(path, repair=True)] == ["a", "b"]
    assert path.read_text(encoding="utf-8") == '{"id":"a"}\n{"id":"b"}\n'
    assert list(read_jsonl_tolerant(tmp_path / "nothing-yet.jsonl")) == []


def test_read_jsonl_tolerant_keeps_complete_last_line_and_skips_bad_middle(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text('{"id":"a"}\nnot json\n[1]\n{"id":"b"}', encoding="utf-8")
    assert [d["id"] for d in read_jsonl_tolerant(path, repair=True)] == ["a", "b"]
    assert path.read_text(encoding="utf-8").endswith('{"id":"b"}')


# ----------------------------------------------------------------------- LLaVA output


def record_with_images(n: int) -> Record:
    return Record(id=f"img{n}", images=[f"p{k}.jpg" for k in range(n)],
                  items=[Item(id=f"img{n}#0", question="What differs?", answer="The light.")])


@pytest.mark.parametrize("n", [0, 1, 2])
def test_llava_writer_image_tokens(tmp_path, n):
    path = tmp_path / "llava.json"
    record = record_with_images(n)
    with LlavaWriter(path) as writer:
        writer.write_item(record, record.items[0])
        writer.write(llava_entry(record, record.items[0]))
    entries = json.loads(path.read_text(encoding="utf-8"))
    assert len(entries) == 2 and entries[0] == entries[1]
    entry = entries[0]
    assert entry["id"] == "img%d#0" % n and entry["record"] == record.id
    human, gpt = entry["conversations"]
    assert human == {"from": "human", "value": "<image>\n" * n + "What differs?"}
    assert gpt == {"from": "gpt", "value": "The light."}
    expected_image = {0: None, 1: "p0.jpg", 2: ["p0.jpg", "p1.jpg"]}[n]
    assert entry.get("image") == expected_image
    assert ("image" in entry) == (n > 0)


def test_llava_entry_options(tmp_path):
    record = record_with_images(1)
    item = Item(id="x", question="Which color?", answer="B", options=["red", "blue"])
    value = llava_entry(record, item)["conversations"][0]["value"]
    assert value == "<image>\nWhich color?\nA. red\nB. blue"
    inline = item.model_copy(update={"question": "Which color?\nA. red\nB. blue"})
    assert llava_entry(record, inline)["conversations"][0]["value"] == value
    stray = item.model_copy(update={"question": "<image>\nWhich color?"})  # token not doubled
    assert llava_entry(record, stray)["conversations"][0]["value"] == value


def test_llava_writer_is_atomic(tmp_path):
    path = tmp_path / "llava.json"
    with LlavaWriter(path):
        pass
    assert json.loads(path.read_text()) == []
    path.write_text("[]\n")
    record = record_with_images(1)
    writer = LlavaWriter(path)
    writer.write_item(record, record.items[0])
    assert path.read_text() == "[]\n"  # nothing replaced before close
    writer.close()
    assert len(json.loads(path.read_text())) == 1
    with pytest.raises(RuntimeError):
        with LlavaWriter(path) as writer:
            writer.write_item(record, record.items[0])
            raise RuntimeError("crash mid-export")
    assert len(json.loads(path.read_text())) == 1  # the old file survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llava.json"]  # no temp left


def test_llava_writer_output_reads_back(tmp_path):
    path = tmp_path / "llava.json"
    records = [record_with_images(n) for n in (0, 1, 2)]
    with LlavaWriter(path) as writer:
        for rec in records:
            writer.write_item(rec, rec.items[0])
    back = only_ok(list(read_records(path)))
    assert [r.images for r in back] == [r.images for r in records]
    assert [r.items[0].question for r in back] == ["What differs?"] * 3


# ------------------------------------------------------------------ streaming memory

N_BIG = 200_000
MEMORY_BOUND = 5 * 1024 * 1024


def peak_while_reading(path: Path) -> tuple[int, int]:
    tracemalloc.start()
    try:
        ok = sum(1 for res in read_records(path) if res.ok)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return ok, peak


def test_reading_is_streaming(tmp_path):
    jsonl = tmp_path / "big.jsonl"  # our own format
    with open(jsonl, "w", encoding="utf-8") as f:
        for i in range(N_BIG):
            f.write('{"id":"r%d","items":[{"id":"r%d#0","question":"q","answer":"a"}]}\n' % (i, i))
    array = tmp_path / "big.json"  # LLaVA format, the usual shape of a big JSON array
    with open(array, "w", encoding="utf-8") as f:
        f.write("[")
        for i in range(N_BIG):
            f.write('%s{"id":"l%d","conversations":[{"from":"human","value":"<image>\\nq"},'
                    '{"from":"gpt","value":"a"}]}' % ("," if i else "", i))
        f.write("]")
    # each file is over twice the bound (and its parsed records far more), so reading
    # either one whole would break it
    assert min(jsonl.stat().st_size, array.stat().st_size) > 2 * MEMORY_BOUND

    for path in (jsonl, array):
        ok, peak = peak_while_reading(path)
        assert ok == N_BIG
        assert peak < MEMORY_BOUND, f"{path.name}: peak {peak / 1e6:.1f} MB"
