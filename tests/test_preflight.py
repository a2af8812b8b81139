"""The preflight `evol evolve` runs before the first record (evol/backends/preflight.py).

Each test drives the CLI as a subprocess against the test server on 127.0.0.1 (or a
closed port there). Failures must be one `error:` line and exit 1 with nothing written as
done; what the server was sent is counted by the server, never timed.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

from conftest import SEEDS, evolve_args, read_jsonl, run_cli, write_llava_seeds
from evol.backends.preflight import IMAGE_GROWTH, followed, probe_image_url

TEXT_ONLY_WARNING = ("ignores images (prompt tokens did not grow): going on with --no-images: each record's "
                     "caption and boxes stand in for the picture")


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nothing_done(out: Path) -> None:
    assert not read_jsonl(out / "records.jsonl")
    assert not (out / "llava.json").exists()


def write_captioned_seeds(folder: Path, n: int) -> Path:
    """n MMEvol records with a photo, a caption and boxed objects."""
    img_dir = folder / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(SEEDS / "coffee.jpg", img_dir / "coffee.jpg")
    path = folder / "captioned.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({
                "id": f"c{i}", "image": "coffee.jpg",
                "caption": f"A white mug of coffee number {i} on a wooden table",
                "det": [{"label": "mug", "box": [0.2, 0.3, 0.6, 0.8]}, {"label": f"spoon{i}", "box": [0.6, 0.5, 0.9, 0.7]}],
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat is in the mug?"},
                    {"from": "gpt", "value": "Black coffee."},
                ],
            }) + "\n")
    return path


# ---------------------------------------------------------------------------- failures

def test_wrong_model_name_fails_naming_what_the_server_lists(tmp_path, server_factory):
    srv = server_factory(profile="vllm", model_id="Qwen/Qwen2.5-VL-7B-Instruct")
    seeds = write_llava_seeds(tmp_path, 3)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url))  # asks for test-vlm
    assert res.returncode == 1, res.stderr
    errors = _errors(res.stderr)
    assert len(errors) == 1 and "does not serve model 'test-vlm'" in errors[0], res.stderr
    assert "Qwen/Qwen2.5-VL-7B-Instruct" in errors[0] and "--model" in errors[0]
    assert "Traceback" not in res.stderr
    _nothing_done(out)
    stats = srv.stats()
    assert stats["requests"] == 0 and "preflight" not in stats  # no chat call at all


def test_wrong_judge_model_fails_too(tmp_path, server_factory):
    srv = server_factory(model_id="test-vlm")
    seeds = write_llava_seeds(tmp_path, 3)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url, "--judge-model", "other-judge"))
    assert res.returncode == 1, res.stderr
    errors = _errors(res.stderr)
    assert len(errors) == 1 and "'other-judge'" in errors[0] and "--judge-model" in errors[0]
    _nothing_done(out)


def test_closed_port_fails_at_once(tmp_path):
    seeds = write_llava_seeds(tmp_path, 3)
    out = tmp_path / "run"
    url = f"http://127.0.0.1:{_free_port()}/v1"
    res = run_cli(*evolve_args(seeds, out, url))
    assert res.returncode == 1, res.stderr
    errors = _errors(res.stderr)
    assert len(errors) == 1 and errors[0].startswith(f"error: cannot connect to {url}"), res.stderr
    assert "Traceback" not in res.stderr
    _nothing_done(out)


def test_bad_key_fails_naming_the_variable_never_the_key(tmp_path, server_factory):
    srv = server_factory(api_key="the-right-key")
    seeds = write_llava_seeds(tmp_path, 3)
    out = tmp_path / "run"
    args = evolve_args(seeds, out, srv.url, "--rounds", "1")
    res = run_cli(*args, env={"OPENAI_API_KEY": "sk-wrong-key-123456"})
    assert res.returncode == 1, res.stderr
    errors = _errors(res.stderr)
    assert len(errors) == 1 and f"the server at {srv.url} refused the key from OPENAI_API_KEY (HTTP 401" in errors[0]
    assert "sk-wrong-key-123456" not in res.stderr + res.stdout
    _nothing_done(out)
    assert srv.stats()["requests"] == 0
    # the right key: the same command completes
    res = run_cli(*args, env={"OPENAI_API_KEY": "the-right-key"})
    assert res.returncode == 0, res.stderr
    assert len(read_jsonl(out / "records.jsonl")) == 3


def test_a_fixed_dialect_the_server_refuses_fails_naming_auto(tmp_path, server_factory):
    srv = server_factory(profile="llamacpp")
    seeds = write_llava_seeds(tmp_path, 3)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url, "--structured", "json_schema"))
    assert res.returncode == 1, res.stderr
    errors = _errors(res.stderr)
    assert len(errors) == 1 and "refused the schema sent as json_schema (HTTP 500" in errors[0]
    assert "Input should be 'text' or 'json_object' [type=literal_error" in errors[0]  # brackets kept
    assert "--structured auto" in errors[0]
    _nothing_done(out)
    # the text and the image check go out together in the one dialect allowed; the image
    # check is dropped when the refusal comes first, so it may not have reached the server
    assert srv.stats()["preflight"]["requests"] in (1, 2) and srv.stats()["requests"] == 0


# ------------------------------------------------------------------------------- notes

def test_a_server_without_a_model_list_gets_a_note(tmp_path, server_factory):
    srv = server_factory(no_models=True)
    seeds = write_llava_seeds(tmp_path, 3)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url, "--rounds", "1"))
    assert res.returncode == 0, res.stderr
    assert "could not check the model name" in res.stderr
    server = json.loads((out / "manifest.json").read_text())["server"]
    assert server["models_listed"] is None and server["dialect"] == "json_schema"


def test_a_server_that_takes_any_name_is_accepted(tmp_path, server_factory):
    srv = server_factory()  # lists mock-vlm only, but GET /models/test-vlm knows it
    seeds = write_llava_seeds(tmp_path, 3)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url, "--rounds", "1"))
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "manifest.json").read_text())["server"]["models_listed"] is False


def test_a_check_call_without_an_answer_in_time_is_a_note_not_a_failure(tmp_path, server_factory):
    # only the preflight's call is slow (its text), and it is not asked twice
    srv = server_factory(model_id="test-vlm", slow=[("This is a connection check", 30.0)])
    seeds = write_llava_seeds(tmp_path, 3)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url, "--rounds", "1", "--timeout", "1"))
    assert res.returncode == 0, res.stderr
    assert "did not answer the check call (no answer within 1 s)" in res.stderr
    # the check call and the image check went out together; neither was asked twice
    assert srv.stats()["preflight"]["requests"] == 2
    server = json.loads((out / "manifest.json").read_text())["server"]
    assert server["dialect"] is None and server["images"] == "unchecked" and server["models_listed"] is True


def test_no_preflight_skips_every_check(tmp_path, server_factory):
    srv = server_factory(model_id="test-vlm")
    seeds = write_llava_seeds(tmp_path, 3)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url, "--rounds", "1", "--no-preflight"))
    assert res.returncode == 0, res.stderr
    assert "preflight" not in srv.stats()
    manifest = json.loads((out / "manifest.json").read_text())
    assert "server" not in manifest and manifest["config"]["preflight"] is False


def test_preflight_costs_a_few_calls_and_the_resume_checks_again(tmp_path, server_factory):
    srv = server_factory(model_id="test-vlm")
    seeds = write_llava_seeds(tmp_path, 4)
    out = tmp_path / "run"
    args = evolve_args(seeds, out, srv.url, "--rounds", "1")
    assert run_cli(*args).returncode == 0
    first = srv.stats()
    assert first["preflight"]["requests"] == 2 and first["requests"] == 2 * 4
    res = run_cli(*args)  # nothing left to do: the preflight runs, no record call does
    assert res.returncode == 0, res.stderr
    second = srv.stats()
    assert second["preflight"]["requests"] == 4 and second["requests"] == first["requests"]
    assert json.loads((out / "manifest.json").read_text())["server"]["dialect"] == "json_schema"


# -------------------------------------------------------------------------- text-only

def test_text_only_server_goes_on_with_captions_and_boxes(tmp_path, server_factory):
    srv = server_factory(profile="textonly", keep_prompts=True)
    seeds = write_captioned_seeds(tmp_path, 4)
    out = tmp_path / "run"
    args = evolve_args(seeds, out, srv.url, "--rounds", "1")
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert f"warning: the server at {srv.url} {TEXT_ONLY_WARNING}" in res.stderr.replace("\n", " ")
    records = read_jsonl(out / "records.jsonl")
    assert len(records) == 4 and all(v["status"] == "judged" for r in records for v in r["versions"])
    run_prompts = [p for p in srv.prompts() if not p["preflight"]]
    assert len(run_prompts) == 2 * 4
    # no picture went out; every operator prompt carries its record's caption and boxes instead
    assert all(p["images"] == 0 for p in run_prompts)
    operator = [p for p in run_prompts if p["schema"] == "evolved_items"]
    assert len(operator) == 4
    for i in range(4):
        mine = [p["text"] for p in operator if f"coffee number {i} on a wooden table" in p["text"]]
        assert len(mine) == 1 and f"- spoon{i}: [0.6, 0.5, 0.9, 0.7]" in mine[0] and "- mug: [0.2, 0.3, 0.6, 0.8]" in mine[0]
        assert "No picture is attached" in mine[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["server"]["images"] == "ignored" and manifest["server"]["send_images"] is False
    assert manifest["server"]["image_tokens"] < IMAGE_GROWTH
    assert manifest["config"]["send_images"] is True  # the settings given; the run guard compares these
    # a rerun of the same command is the same run (not refused by the run guard)
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr


def test_text_only_server_with_stop(tmp_path, server_factory):
    srv = server_factory(profile="textonly")
    seeds = write_captioned_seeds(tmp_path, 3)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url, "--text-only-server", "stop"))
    assert res.returncode == 1, res.stderr
    errors = _errors(res.stderr)
    assert len(errors) == 1 and "ignores images (prompt tokens did not grow)" in errors[0]
    assert "--text-only-server captions" in errors[0]
    _nothing_done(out)
    assert srv.stats()["requests"] == 0


def test_text_only_server_and_records_without_captions_stop(tmp_path, server_factory):
    srv = server_factory(profile="textonly")
    seeds = write_llava_seeds(tmp_path, 3)  # LLaVA records: no caption, no boxes
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url))
    assert res.returncode == 1, res.stderr
    errors = _errors(res.stderr)
    assert len(errors) == 1 and "carry no caption or boxes" in errors[0] and "--no-images" in errors[0]
    _nothing_done(out)


def test_no_images_skips_the_picture_check(tmp_path, server_factory):
    srv = server_factory(profile="textonly")
    seeds = write_llava_seeds(tmp_path, 3)
    out = tmp_path / "run"
    res = run_cli(*evolve_args(seeds, out, srv.url, "--rounds", "1", "--no-images"))
    assert res.returncode == 0, res.stderr
    assert srv.stats()["preflight"]["requests"] == 1
    assert json.loads((out / "manifest.json").read_text())["server"]["images"] == "not sent"


def test_a_run_started_with_pictures_will_not_finish_without_them(tmp_path, server_factory):
    seeds = write_captioned_seeds(tmp_path, 3)
    out = tmp_path / "run"
    vision = server_factory()
    assert run_cli(*evolve_args(seeds, out, vision.url, "--rounds", "1", "--limit", "1")).returncode == 0
    blind = server_factory(profile="textonly")
    res = run_cli(*evolve_args(seeds, out, blind.url, "--rounds", "1", "--limit", "1"))
    assert res.returncode == 1, res.stderr
    errors = _errors(res.stderr)
    assert len(errors) == 1 and "this run was started sending pictures" in errors[0]


# ------------------------------------------------------------------------------ helpers

def test_the_probe_picture_and_what_counts_as_following_the_schema():
    url = probe_image_url()
    assert url.startswith("data:image/png;base64,") and len(url) < 20_000
    assert followed('{"evol_check": "ready"}') and followed('```json\n{"evol_check": "ready"}\n```')
    assert followed('<think>fine</think>\n{"evol_check": "ready"}')
    assert not followed('Sure! {"evol_check": "ready"}')  # prose first: the field was ignored
    assert not followed('{"answer": "hi"}') and not followed("")
