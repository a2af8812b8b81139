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
