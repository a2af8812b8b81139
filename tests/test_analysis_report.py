"""`evol report`: a standalone HTML page, checked in a real headless Chromium.

The browser test renders the page, reads where each chart sits (the page writes it into
a data-rect attribute once loaded), takes a screenshot and counts coloured pixels inside
every chart. The same page with plotly's library removed is the control: its chart
areas must come out blank, which shows the check can fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from evol.analysis import analyze
from evol.analysis.report import write_report
from test_analysis_metrics import make_provision_seeds, make_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (1280, 4200)
CHARTS = ("chart-sunburst", "chart-comparison", "chart-distributions", "chart-mix", "chart-longtail")


@pytest.fixture(scope="module")
def analysis_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    run = make_run(tmp / "r1")
    seeds = make_provision_seeds(tmp / "seeds.jsonl")
    analyze([str(seeds), str(run)], tmp / "cmp", labels=["seeds", "evolved"])
    return tmp / "cmp"


def test_report_is_standalone(analysis_dir, tmp_path):
    out = write_report(analysis_dir, tmp_path / "page.html")
    page = out.read_text(encoding="utf-8")
    assert out == tmp_path / "page.html"
    assert len(page) > 1_000_000  # plotly.js is inline
    assert not re.search(r"<script[^>]+src=", page), "no external scripts: the page must work offline"
    for chart in CHARTS:
        assert f'id="{chart}"' in page
    # examples: seed item beside its evolved versions, scores and reasons, escaped
    assert "Describe the image in detail." in page and "answer unsupported" in page
    assert "by rule <code>refusal</code>" in page and "round failed: server error 500" in page
    # diversity normalised for size beside the raw figures, in the table and the round-by-round panels
    for title in ("pairs at equal size", "entropy at equal size", "pairs per 1,000 items",
                  "distinct pairs, equal-size samples", "distinct pairs per 1,000 items"):
        assert title in page, title
    # bad input shown
    assert "line 2 is not valid JSON" in page and "non-English" in page


def test_report_escapes_text_from_the_data(tmp_path):
    rec = {"id": "x<script>", "images": ["a.jpg"], "items": [
        {"id": "i0", "question": "<script>alert(1)</script> Describe <b>this</b>.", "answer": "ok"}]}
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    analyze([str(path)], tmp_path / "a", labels=["<img src=x>"], verbnoun=False)
    page = write_report(tmp_path / "a").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)" in page
    assert "<img src=x>" not in page


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp / "config"), "XDG_CACHE_HOME": str(tmp / "cache")}
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", "--disable-quic", "--disable-component-update", "--disable-sync",
           "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
           f"--user-data-dir={tmp / 'profile'}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
           "--virtual-time-budget=15000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)


def render(page: Path, tmp: Path) -> tuple[dict[str, tuple[int, int, int, int]], object]:
    """Chart rectangles from the live DOM, and a screenshot of the same window."""
    from PIL import Image

    url = page.resolve().as_uri()
    dom = _chromium(["--dump-dom", url], tmp / "dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    rects = {}
    for m in re.finditer(r'<div id="(chart-[a-z]+)"[^>]*data-rect="(\d+),(\d+),(\d+),(\d+)"', dom.stdout):
        rects[m.group(1)] = tuple(int(v) for v in m.groups()[1:])
    shot = tmp / "shot.png"
    res = _chromium([f"--screenshot={shot}", url], tmp / "shot")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    return rects, Image.open(shot).convert("RGB")


def colour_stats(image, rect) -> tuple[float, float, int]:
    """Inside `rect`: share of pixels that are not white, share that are clearly coloured
    (not white, grey or black), and how many distinct colours those are."""
    import numpy as np

    x, y, w, h = rect
    px = np.asarray(image.crop((x, y, x + w, y + h)), dtype=np.int16).reshape(-1, 3)
    non_white = float((px.min(axis=1) < 245).mean())
    coloured = px[(px.max(axis=1) - px.min(axis=1)) > 40]
    distinct = len({tuple(c) for c in (coloured // 8).tolist()})
    return non_white, len(coloured) / len(px), distinct


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_charts_are_drawn_in_a_real_browser(analysis_dir, tmp_path):
    page = write_report(analysis_dir, tmp_path / "report.html")
    rects, image = render(page, tmp_path / "live")
    assert set(rects) == set(CHARTS), f"charts found in the DOM: {sorted(rects)}"
    results = {}
    for chart, rect in rects.items():
        assert rect[1] + rect[3] <= WINDOW[1], f"{chart} lies below the screenshot: {rect}"
        assert rect[2] > 600 and rect[3] > 250, (chart, rect)
        results[chart] = colour_stats(image, rect)
    print("\nper chart (non-white share, coloured share, distinct colours):",
          {k: (round(a, 3), round(b, 3), c) for k, (a, b, c) in results.items()})
    for chart, (non_white, coloured, distinct) in results.items():
        assert non_white > 0.15 and coloured > 0.005 and distinct >= 8, \
            f"{chart} looks blank: {non_white:.1%} non-white, {coloured:.2%} coloured, {distinct} colours"
    assert results["chart-sunburst"][1] > 0.15  # a sunburst is mostly coloured wedges

    # control: the same page without plotly's library draws nothing in the same places
    blank = tmp_path / "blank.html"
    html = page.read_text(encoding="utf-8")
    start = html.index("<script type='text/javascript'>")
    end = html.index("</script>", start) + len("</script>")
    blank.write_text(html[:start] + html[end:], encoding="utf-8")
    blank_rects, blank_image = render(blank, tmp_path / "blank")
    assert blank_rects.keys() == rects.keys()
    for chart, rect in blank_rects.items():
        assert rect[3] > 250, f"{chart} has no room without plotly: {rect}"  # same layout, empty charts
        non_white, coloured, _ = colour_stats(blank_image, rect)
        assert non_white < 0.01 and coloured < 0.001, \
            f"{chart} without plotly should be blank, got {non_white:.2%} non-white"


def _figures(page: str) -> dict[str, dict]:
    """The plotly figure JSON of each chart div in the page."""
    figs = {}
    for m in re.finditer(r'Plotly\.newPlot\(\s*"(chart-[a-z]+)",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{"displaylogo"', page, re.S):
        figs[m.group(1)] = {"data": json.loads(m.group(2)), "layout": json.loads(m.group(3))}
    return figs


@pytest.fixture(scope="module")
def three_rounds(tmp_path_factory) -> tuple[Path, dict]:
    from test_analysis_metrics import write_synthetic

    tmp = tmp_path_factory.mktemp("rounds")
    data = write_synthetic(tmp / "three.jsonl", 40, rounds=3)
    result = analyze([str(data)], tmp / "a", labels=["run"])
    return tmp / "a", result


def test_one_sunburst_per_round_adding_up_to_the_items_parsed(three_rounds, tmp_path):
    folder, result = three_rounds
    page = write_report(folder, tmp_path / "r.html").read_text(encoding="utf-8")
    suns = [t for t in _figures(page)["chart-sunburst"]["data"] if t["type"] == "sunburst"]
    parsed = {r["round"]: r["verb_noun_parsed"] for r in result["summary"]}
    assert sorted(parsed) == [0, 1, 2, 3] and len(suns) == 4
    for rnd, trace in zip(sorted(parsed), suns):
        assert trace["name"] == ("run · seed" if rnd == 0 else f"run · round {rnd}")
        root = sum(v for v, p in zip(trace["values"], trace["parents"]) if p == "")
        outer = sum(v for v, p in zip(trace["values"], trace["parents"]) if p != "")
        assert root == outer == parsed[rnd] > 0


def live_sunbursts(page: Path, tmp: Path) -> tuple[list[dict] | None, int]:
    """What the live plot in Chromium holds: the page's data-sunbursts attribute (per drawn
    sunburst: name, root total as plotly computed it, wedges drawn; None when absent) and
    how many sunburst trace groups the chart's SVG has."""
    from html import unescape

    dom = _chromium(["--dump-dom", page.resolve().as_uri()], tmp)
    assert dom.returncode == 0, dom.stderr[-2000:]
    start = dom.stdout.index('<div id="chart-sunburst"')
    end = dom.stdout.find('<div id="chart-', start + 1)
    chart = dom.stdout[start:end if end > 0 else None]
    m = re.match(r'<div id="chart-sunburst"[^>]*?data-sunbursts="([^"]*)"', chart)
    drawn = json.loads(unescape(m.group(1))) if m else None
    return drawn, chart.count('<g class="trace sunburst"')


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_four_sunbursts_drawn_in_a_real_browser_add_up_to_the_items_parsed(three_rounds, tmp_path):
    """A seed file and three rounds: Chromium draws four sunbursts (seed, round 1, 2, 3), and
    the root total plotly computed in each equals the items parsed in that round."""
    folder, result = three_rounds
    parsed = {r["round"]: r["verb_noun_parsed"] for r in result["summary"]}
    assert sorted(parsed) == [0, 1, 2, 3] and all(v > 0 for v in parsed.values())
    page = write_report(folder, tmp_path / "r.html")
    nodes = [len(t["ids"]) for t in _figures(page.read_text(encoding="utf-8"))["chart-sunburst"]["data"]]
    drawn, groups = live_sunbursts(page, tmp_path / "live")
    print("\nsunbursts drawn:", drawn)
    assert drawn is not None, "the page wrote no data-sunbursts attribute"
    assert groups == 4 and len(drawn) == 4, (groups, drawn)
    assert [d["name"] for d in drawn] == ["run · seed", "run · round 1", "run · round 2", "run · round 3"]
    for rnd, d, n in zip(sorted(parsed), drawn, nodes):
        assert d["total"] == parsed[rnd], (rnd, d, parsed[rnd])
        assert 1 < d["slices"] == n, (rnd, d, n)  # every verb and noun wedge drawn, no more

    # control 1: take one item out of the seed's first noun wedge (and its verb) in the page's
    # figure; the live total drops by one, so the check reads the plot and can fail
    text = page.read_text(encoding="utf-8")
    m = re.search(r'Plotly\.newPlot\(\s*"chart-sunburst",\s*(\[.*?\]),\s*\{', text, re.S)
    data = json.loads(m.group(1))
    seed = data[0]
    leaf = next(i for i, p in enumerate(seed["parents"]) if p)
    seed["values"][leaf] -= 1
    seed["values"][seed["ids"].index(seed["parents"][leaf])] -= 1
    short = tmp_path / "short.html"
    short.write_text(text[:m.start(1)] + json.dumps(data) + text[m.end(1):], encoding="utf-8")
    drawn_short, _ = live_sunbursts(short, tmp_path / "short")
    assert [d["total"] for d in drawn_short] == [parsed[0] - 1, parsed[1], parsed[2], parsed[3]]

    # control 2: the same page without plotly's library draws no sunburst, though the script ran
    start = text.index("<script type='text/javascript'>")
    end = text.index("</script>", start) + len("</script>")
    blank = tmp_path / "blank.html"
    blank.write_text(text[:start] + text[end:], encoding="utf-8")
    assert live_sunbursts(blank, tmp_path / "blank") == ([], 0)


def test_a_verb_keeps_its_colour_in_every_panel(analysis_dir, three_rounds, tmp_path):
    from evol.analysis.charts import verb_color

    colours: dict[str, set] = {}
    for folder in (analysis_dir, three_rounds[0]):
        page = write_report(folder, tmp_path / "c.html").read_text(encoding="utf-8")
        for trace in _figures(page)["chart-sunburst"]["data"]:
            for i, p, c in zip(trace["ids"], trace["parents"], trace["marker"]["colors"]):
                verb = p or i
                if not i.endswith("/(other)"):
                    colours.setdefault(verb, set()).add(c)
    assert len(colours) >= 3
    for verb, cs in colours.items():
        assert cs == {verb_color(verb)}, (verb, cs)


def test_missing_values_say_no_data(tmp_path):
    """Seeds with no skills, steps or scores recorded: 'no data' in the table and the panels, no zeros."""
    seeds = make_provision_seeds(tmp_path / "seeds.jsonl")
    result = analyze([str(seeds)], tmp_path / "a", labels=["seeds"], verbnoun=False)
    row = result["summary"][0]
    assert row["skills_mean"] is None and row["steps_mean"] is None and row["items_without_skills"] == 3
    page_path = write_report(tmp_path / "a", tmp_path / "p.html")
    page = page_path.read_text(encoding="utf-8")
    assert page.count("<span class='nodata'>no data</span>") >= 3  # skills, steps, score columns
    figs = _figures(page)
    comp = figs["chart-comparison"]
    titles = {a["text"]: (a["x"], a["y"]) for a in comp["layout"]["annotations"] if a["text"] != "no data"}
    assert titles["skills per item"] and titles["steps per item"]
    nodata = [a for a in comp["layout"]["annotations"] if a["text"] == "no data"]
    assert len(nodata) >= 4  # skills, steps, score, improved
    for trace in comp["data"]:
        assert None not in trace["y"]
    assert "chart-sunburst" not in figs and "<p class='note nodata'>no data</p>" in page  # nothing parsed
    if CHROMIUM is not None:  # the note is really drawn inside the panel
        dom = _chromium(["--dump-dom", page_path.resolve().as_uri()], tmp_path / "dom")
        assert dom.returncode == 0
        chart = dom.stdout[dom.stdout.index('id="chart-comparison"'):dom.stdout.index('id="chart-distributions"')] \
            if 'id="chart-distributions"' in dom.stdout else dom.stdout[dom.stdout.index('id="chart-comparison"'):]
        assert chart.count(">no data<") >= 4


def test_score_density_curves_per_round_and_zero_based_axes(three_rounds, tmp_path):
    folder, _ = three_rounds
    figs = _figures(write_report(folder, tmp_path / "d.html").read_text(encoding="utf-8"))
    dist = figs["chart-distributions"]
    curves = [t for t in dist["data"] if t.get("name", "").endswith(" score")]
    assert [t["name"] for t in curves] == [f"run · round {r} score" for r in (1, 2, 3)]
    assert all(t["type"] == "scatter" and t["mode"] == "lines" for t in curves)
    assert len({t["line"]["color"] for t in curves}) == 3  # distinct colours, not shades of one
    for t in curves:  # a density: integrates to about 1 over 0..10
        area = sum(t["y"]) * 0.1
        assert 0.8 < area < 1.1, area
    comp = figs["chart-comparison"]["layout"]
    yaxes = [k for k in comp if k.startswith("yaxis")]
    assert len(yaxes) >= 11 and all(comp[k].get("rangemode") == "tozero" for k in yaxes)


def test_report_names_the_paper_reading(analysis_dir, tmp_path):
    meta = json.loads((analysis_dir / "analysis.json").read_text())
    assert meta["settings"]["verb_reading"] == "paper"
    page = write_report(analysis_dir, tmp_path / "p.html").read_text(encoding="utf-8")
    section = page[page.index("What the instructions ask"):page.index('id="chart-sunburst"')]
    assert "<code>--verb-reading paper</code>" in section and "MMEvol's definition" in section
    assert "Task-verb reading" not in page and "class='reading'" not in page
    assert "verb-noun parser: spacy, paper reading" in page
    assert "Task-verb" not in json.dumps(_figures(page)["chart-sunburst"]["layout"])


def test_report_labels_the_task_reading(tmp_path):
    from evol.analysis.report import TASK_BANNER

    run = make_run(tmp_path / "r1")
    result = analyze([str(run)], tmp_path / "a", reading="task")
    assert result["settings"]["verb_reading"] == "task"
    page = write_report(tmp_path / "a").read_text(encoding="utf-8")
    section = page[page.index("What the instructions ask"):page.index('id="chart-sunburst"')]
    assert "<div class='reading' id='verb-reading'><b>Task-verb reading, not the paper's definition.</b>" in section
    assert "not comparable with MMEvol's sunburst" in section and "<code>--verb-reading task</code>" in section
    assert "verb-noun parser: spacy, task reading" in page
    # the chart itself carries the label, for a copy of the chart alone
    assert _figures(page)["chart-sunburst"]["layout"]["title"]["text"] == TASK_BANNER


def test_report_of_a_folder_without_the_reading(analysis_dir, tmp_path):
    """Folders written before --verb-reading: the reading is not claimed, and per-item pairs are not invented."""
    old = tmp_path / "old"
    shutil.copytree(analysis_dir, old)
    meta = json.loads((old / "analysis.json").read_text())
    del meta["settings"]["verb_reading"]
    (old / "analysis.json").write_text(json.dumps(meta))
    examples = json.loads((old / "examples.json").read_text())
    for records in examples.values():
        for ex in records:
            for it in ex["items"] + [it for v in ex["versions"] for it in v["items"]]:
                it.pop("verb_noun", None)
    (old / "examples.json").write_text(json.dumps(examples))
    page = write_report(old).read_text(encoding="utf-8")
    assert "Verb-noun reading not recorded" in page and "MMEvol's definition" not in page
    assert "verb-noun:" not in page


def test_each_example_item_shows_its_parsed_pair(analysis_dir, tmp_path):
    page = write_report(analysis_dir, tmp_path / "e.html").read_text(encoding="utf-8")
    examples = json.loads((analysis_dir / "examples.json").read_text())
    shown = [it for records in examples.values() for ex in records
             for it in ex["items"] + [it for v in ex["versions"] for it in v["items"] if v.get("status") != "failed"]]
    assert page.count("<small class='vn'>verb-noun: ") == len(shown) > 5
    examples_html = page[page.index("<h2>Examples</h2>"):]
    seed = examples_html[examples_html.index("Describe the image in detail."):]
    assert seed.index("verb-noun: describe / image") < seed.index("</td>")  # in the seed's own cell
    assert "verb-noun: no verb (empty)" in examples_html  # record B's empty seed question
    for it in shown:  # every evolved version shown beside its seed has its pair
        vn = it["verb_noun"]
        if vn["verb"]:
            assert f"verb-noun: {vn['verb']} / {vn['noun'] or '-'}" in examples_html


def test_examples_say_not_parsed_without_a_parser(tmp_path):
    run = make_run(tmp_path / "r1")
    analyze([str(run)], tmp_path / "a", verbnoun=False)
    page = write_report(tmp_path / "a").read_text(encoding="utf-8")
    assert "verb-noun: not parsed" in page and "verb-noun: describe" not in page
    assert "Verb-noun parsing was off" in page


def test_report_has_no_stage_table_without_per_stage_figures(analysis_dir, tmp_path):
    page = write_report(analysis_dir, tmp_path / "page.html").read_text(encoding="utf-8")
    assert "Elimination stages" not in page  # a run folder whose manifest has no "stages", and a file


def test_report_stage_table_from_a_manifest_escapes_and_says_no_data(tmp_path):
    run = make_run(tmp_path / "r")
    manifest = {"config": {"model": "m", "rounds": 2}, "stages": {
        "rules": {"examined": 4, "rejected": 1},
        "judge": {"examined": 3, "rejected": 1, "requests": 3, "tokens_in": 1200, "tokens_out": 90},
        "blind": {"examined": 2}, "<i>odd</i>": {"examined": 1, "rejected": 1, "requests": 1}}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    analyze([str(run)], tmp_path / "a", labels=["run"], verbnoun=False)
    page = write_report(tmp_path / "a").read_text(encoding="utf-8")
    section = page.split("<h2>Elimination stages</h2>", 1)[1].split("<h2>", 1)[0]
    assert "<i>odd</i>" not in section and "&lt;i&gt;odd&lt;/i&gt;" in section
    assert "<td class='num'>1,200</td>" in section and "<td class='num'>0.333</td>" in section
    blind = section.split("<td>blind</td>", 1)[1].split("</tr>", 1)[0]
    assert blind.count("no data") == 3  # requests, tokens in, tokens out
    assert "<td class='num'>0</td>" in blind  # examined, no rejection named: none
