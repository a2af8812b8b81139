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
