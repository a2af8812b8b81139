"""`evol report DIR`: one self-contained HTML page from the tables `evol analyze` wrote.

The page embeds plotly's JavaScript inline, so it opens offline and can be mailed as one
file. Sections: headline table, verb-noun sunbursts, round-by-round comparison,
distributions, operator / task-form / generator mix, the object long tail, bad input,
elimination stages (per run folder whose manifest counts them: items examined and
rejected by the rules, the judge and the blind and answer checks, their requests and
tokens) and examples (each seed item beside its evolved versions, with the judge's scores and
reasons and the verb-noun pair each question was counted with). The verb-noun section
says which reading the pairs follow (`evol analyze --verb-reading`): MMEvol's definition,
or the task-verb reading, labelled as not comparable with the paper. Every text from the
data is HTML-escaped.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from evol.analysis.charts import (
    comparison_figure,
    distribution_figure,
    longtail_figure,
    mix_figure,
    sunburst_figure,
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#fff;color:#222}
main{max-width:1240px;margin:0 auto;padding:16px 20px 40px}
h1{font-size:24px;margin:8px 0 4px} h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
p.note{color:#555;font-size:13px;margin:4px 0 10px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 12px}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto}
.chart{width:100%;margin:4px 0 8px}
.ex{border:1px solid #ddd;border-radius:6px;margin:10px 0;padding:8px}
.ex table{width:100%;table-layout:fixed} .ex td{font-size:12px;word-wrap:break-word}
.kept{color:#1a7f37;font-weight:600} .dropped{color:#b42318;font-weight:600}
.nodata{color:#888;font-style:italic} .bad{color:#b42318} code{background:#f4f4f4;padding:0 3px}
.reading{border:2px solid #b54708;background:#fffaeb;color:#7a2e0e;border-radius:6px;padding:8px 10px;margin:6px 0 10px}
.vn{color:#175cd3}
"""

# After load, each chart's page position goes into a data-rect attribute ("x,y,width,height"
# in CSS pixels), so automated checks can find the charts in a screenshot.
_RECT_SCRIPT = """window.addEventListener('load',function(){document.querySelectorAll('.plotly-graph-div')
.forEach(function(d){var r=d.getBoundingClientRect();d.setAttribute('data-rect',[r.left+window.scrollX,
r.top+window.scrollY,r.width,r.height].map(Math.round).join(','));});});"""

# After load (and after every redraw), the sunburst chart div gets a data-sunbursts attribute
# with what the live plot holds: per drawn sunburst trace group, the trace name, the root total
# plotly computed (its hierarchy's value) and how many wedges it drew, e.g.
# [{"name":"run · seed","total":40,"slices":17}]. "[]" when plotly drew nothing. Only an
# attribute: the page looks the same.
_SUNBURST_SCRIPT = """window.addEventListener('load',function(){var gd=document.getElementById('chart-sunburst');
if(!gd)return;function note(){var out=[];gd.querySelectorAll('g.trace.sunburst').forEach(function(g){
var cd=g.__data__||[],c0=cd[0]||{},h=c0.hierarchy;out.push({name:c0.trace?c0.trace.name:null,
total:h?h.value:null,slices:g.querySelectorAll('g.slice').length});});
gd.setAttribute('data-sunbursts',JSON.stringify(out));}note();if(gd.on)gd.on('plotly_afterplot',note);});"""

TASK_BANNER = "Task-verb reading (--verb-reading task): not MMEvol's definition, not comparable with the paper"

_SUMMARY_COLUMNS = [
    ("source", "source"), ("round", "round"), ("records", "records"), ("items", "items"),
    ("distinct_pairs", "verb-noun pairs"), ("pair_entropy_bits", "pair entropy (bits)"),
    ("distinct_pairs_at_n", "pairs at equal size"), ("pair_entropy_bits_at_n", "entropy at equal size"),
    ("equal_sample_size", "equal size (items)"), ("distinct_pairs_per_1k", "pairs per 1,000 items"),
    ("distinct_verbs", "verbs"), ("distinct_nouns", "nouns"), ("top_pair", "top pair"),
    ("skills_mean", "skills / item"), ("steps_mean", "steps / item"), ("score_mean", "mean score"),
    ("improved_ratio", "improved"), ("question_words_mean", "question words"),
    ("answer_words_mean", "answer words"), ("yes_share", "yes share"),
    ("distinct_objects", "objects"), ("rare_object_share", "rare objects"),
]
_BAD_COLUMNS = [
    ("empty_instructions", "empty instructions"), ("non_english", "non-English"), ("no_verb", "no verb found"),
    ("items_without_skills", "items without skills"), ("items_without_steps", "items without steps"), ("unscored", "evolved items without score"),
    ("rule_rejected", "rejected by rules"), ("failed_versions", "failed rounds"),
]


def write_report(analysis_dir: str | Path, out_html: str | Path | None = None) -> Path:
    """Write the report page for an analysis folder; returns its path (default DIR/report.html)."""
    import pandas as pd
    from plotly.offline import get_plotlyjs

    folder = Path(analysis_dir)
    meta_path = folder / "analysis.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder} has no analysis.json: run `evol analyze ... --out {folder}` first")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    summary = pd.DataFrame(meta.get("summary") or [])
    sun = _csv(folder / "sunburst.csv", ["source", "round", "verb", "noun", "count"])
    dists = _csv(folder / "distributions.csv", ["source", "round", "metric", "value", "count"])
    counts = _csv(folder / "counts.csv", ["source", "round", "kind", "name", "count"])
    sources = _json(folder / "sources.json", [])
    examples = _json(folder / "examples.json", {})

    figures = [
        ("sunburst", "What the instructions ask: verb-noun pairs",
         "One sunburst per input and round (seed, round 1, 2, 3 ...), counted over every item with a "
         "verb. Inner ring: the main verb; outer ring: its object noun ('(none)' when the object is a "
         "question word or pronoun); '(other)' gathers the verbs and nouns not named, so each sunburst "
         "adds up to the items parsed. A verb keeps its colour in every panel.",
         sunburst_figure(sun, banner=TASK_BANNER if (meta.get("settings") or {}).get("verb_reading") == "task"
                         else None)),
        ("comparison", "Round by round", "Each line is one input; round 0 is the seed items.",
         comparison_figure(summary)),
        ("distributions", "Distributions", "Share of items per value, one bar series per input and round.",
         distribution_figure(dists)),
        ("mix", "Operators, task forms and generators", "Items per operator (evolved rounds), task form "
         "and programmatic generator (ProVision seeds), as shares of each round.", mix_figure(counts)),
        ("longtail", "Object long tail", "Items mentioning each object label, by rank (log scale).",
         longtail_figure(counts)),
    ]
    parts = [f"<h1>evol analysis report</h1><p class='note'>{_inputs_line(meta)}</p>",
             "<h2>Summary</h2>", _summary_table(summary)]
    for key, title, note, fig in figures:
        parts.append(f"<h2>{html.escape(title)}</h2><p class='note'>{html.escape(note)}</p>")
        if key == "sunburst":
            parts.append(reading_note(meta.get("settings") or {}))
        if fig is None:
            parts.append("<p class='note nodata'>no data</p>")
            continue
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{key}",
                                 config={"displaylogo": False, "responsive": True},
                                 default_width="100%", default_height=f"{fig.layout.height or 450}px"))
    parts += ["<h2>Bad input</h2>", _bad_input(summary, sources)]
    stages = stages_table(sources)
    if stages:
        parts += ["<h2>Elimination stages</h2>", "<p class='note'>Per run input, as its manifest counts them: "
                  "items each stage examined (those every earlier stage kept) and rejected, the share rejected, "
                  "and the requests and tokens its calls took (a check's comparisons of answers included; the "
                  "rules call nothing).</p>", stages]
    parts += ["<h2>Examples</h2>", _examples(examples, parsing_state(meta.get("settings") or {}))]
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>evol report: {html.escape(', '.join(i['label'] for i in meta.get('inputs', [])))}</title>"
        f"<style>{_CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
        f"<body><main>{''.join(parts)}</main><script>{_RECT_SCRIPT}{_SUNBURST_SCRIPT}</script></body></html>"
    )
    out = Path(out_html) if out_html is not None else folder / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


def _csv(path: Path, columns: list[str]) -> Any:
    import pandas as pd

    if not path.is_file():
        return pd.DataFrame(columns=columns)
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def _json(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    return json.loads(path.read_text(encoding="utf-8"))


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "<span class='nodata'>no data</span>"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def _inputs_line(meta: dict) -> str:
    inputs = ", ".join(f"<b>{html.escape(i['label'])}</b> (<code>{html.escape(i['path'])}</code>, {i['kind']})"
                       for i in meta.get("inputs", []))
    settings = meta.get("settings", {})
    parser = settings.get("backend") or "off"
    if settings.get("backend") and settings.get("verb_reading"):
        parser = f"{parser}, {settings['verb_reading']} reading"
    kept = "kept evolved items only" if settings.get("kept_only") else "all evolved items"
    return (f"Inputs: {inputs}. {meta.get('items', 0):,} items analysed ({kept}; verb-noun parser: "
            f"{html.escape(str(parser))}), {meta.get('created', '')}.")


def reading_note(settings: dict[str, Any]) -> str:
    """What the verb-noun section says about the reading the pairs were parsed with
    (analysis.json "settings"): a line for MMEvol's definition, a clear label for the
    task-verb reading, and what is known when the folder did not record it."""
    reading = settings.get("verb_reading")
    if not settings.get("backend"):
        return "<p class='note'>Verb-noun parsing was off (<code>--parser none</code>).</p>"
    if reading == "paper":
        return ("<p class='note' id='verb-reading'>Verb-noun reading: <b>paper</b> "
                "(<code>--verb-reading paper</code>). Pairs follow MMEvol's definition (arXiv 2409.05840): the "
                "verb closest to the root and its first direct-object noun; a main verb \"be\" stays \"be\".</p>")
    if reading == "task":
        return ("<div class='reading' id='verb-reading'><b>Task-verb reading, not the paper's definition.</b> "
                "These pairs were parsed with <code>--verb-reading task</code>: questions whose main verb is "
                "\"be\" are named by their task (identify, count, locate, check, explain, describe). The sunbursts "
                "and pair counts are not comparable with MMEvol's sunburst (arXiv 2409.05840); analyse again with "
                "<code>--verb-reading paper</code> for that.</div>")
    if reading is None:
        # folders written before --verb-reading: evol's parser then named "be" questions by their task
        return ("<p class='note' id='verb-reading'>Verb-noun reading not recorded. Folders written before "
                "<code>--verb-reading</code> existed do not say; evol's parser then named questions with a main "
                "verb \"be\" by their task (as <code>--verb-reading task</code> does), so do not compare such a "
                "folder with MMEvol's sunburst. Run <code>evol analyze</code> again to record the reading.</p>")
    return (f"<div class='reading' id='verb-reading'>Unknown verb-noun reading "
            f"<code>{html.escape(str(reading))}</code>: not comparable with MMEvol's sunburst.</div>")


def pair_text(item: dict[str, Any], parsing: str) -> str | None:
    """An example item's parsed pair as shown ("verb / noun", "-" for no noun, "no verb"),
    "not parsed" when parsing was off (`parsing` "off"), "not counted" for an item the
    analysis skipped (--kept-only), None when the folder predates per-item pairs ("old")."""
    vn = item.get("verb_noun")
    if vn is None:
        return {"off": "not parsed", "on": "not counted (--kept-only)"}.get(parsing)
    if vn.get("verb"):
        return f"{vn['verb']} / {vn.get('noun') or '-'}"
    why = {"empty": "empty", "non_english": "non-English", "parse_error": "parse error"}.get(vn.get("status") or "")
    return f"no verb ({why})" if why else "no verb"


def parsing_state(settings: dict[str, Any]) -> str:
    """"off" when nothing was parsed, "on" when example items carry their pairs, "old" for
    folders written before they did (no "verb_reading" setting)."""
    if not settings.get("backend"):
        return "off"
    return "on" if "verb_reading" in settings else "old"


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = []
    for row in rows:
        cells = []
        for key, _ in columns:
            v = row.get(key)
            cls = " class='num'" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{_fmt(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<div class='scroll'><table><tr>{head}</tr>{''.join(body)}</table></div>"


def _summary_table(summary: Any) -> str:
    if summary.empty:
        return "<p class='note'>No records could be read.</p>"
    return _table(summary.to_dict("records"), _SUMMARY_COLUMNS)


_STAGE_COLUMNS = [
    ("source", "source"), ("stage", "stage"), ("examined", "examined"), ("rejected", "rejected"),
    ("share", "share rejected"), ("requests", "requests"), ("tokens_in", "tokens in"), ("tokens_out", "tokens out"),
]
_STAGE_ORDER = ("rules", "judge", "blind", "answer")


def stage_rows(sources: list[dict]) -> list[dict[str, Any]]:
    """One row per run input and elimination stage in its manifest's "stages" (sources.json
    rows): examined, rejected, share rejected, requests, tokens in and out; None ("no data")
    where the manifest lacks a figure. The manifest counts from zero, so a stage that
    examined items but names no rejections rejected none, and the rules make no requests."""
    rows = []
    for src in sources:
        stages = (src.get("manifest") or {}).get("stages")
        if not isinstance(stages, dict):
            continue
        names = [k for k in _STAGE_ORDER if k in stages] + [k for k in stages if k not in _STAGE_ORDER]
        for name in names:
            st = stages[name] if isinstance(stages[name], dict) else {}
            row: dict[str, Any] = {"source": src.get("source"), "stage": name}
            for key in ("examined", "rejected", "requests", "tokens_in", "tokens_out"):
                v = st.get(key)
                row[key] = v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
            if row["rejected"] is None and row["examined"] is not None and "rejected" not in st:
                row["rejected"] = 0
            if name == "rules":
                for key in ("requests", "tokens_in", "tokens_out"):
                    row[key] = 0 if row[key] is None and key not in st else row[key]
            row["share"] = (round(row["rejected"] / row["examined"], 4)
                            if row["examined"] and row["rejected"] is not None else None)
            rows.append(row)
    return rows


def stages_table(sources: list[dict]) -> str:
    """The "Elimination stages" table, or "" when no run input has per-stage figures."""
    rows = stage_rows(sources)
    return _table(rows, _STAGE_COLUMNS) if rows else ""


def _bad_input(summary: Any, sources: list[dict]) -> str:
    rows = []
    for src in sources:
        rows.append({"source": src["source"], "records": src["records"], "read_errors": src["read_errors"],
                     "records_without_items": src["records_without_items"],
                     "rejects": ", ".join(f"{k} {v}" for k, v in sorted(src.get("rejects_by_stage", {}).items())) or None})
    out = [_table(rows, [("source", "source"), ("records", "records read"), ("read_errors", "unreadable records"),
                         ("records_without_items", "records without items"), ("rejects", "rejects.jsonl by stage")])]
    if not summary.empty:
        out.append(_table(summary.to_dict("records"), [("source", "source"), ("round", "round"), ("items", "items")]
                          + _BAD_COLUMNS))
    for src in sources:
        if src.get("error_examples"):
            items = "".join(f"<li>{html.escape(e)}</li>" for e in src["error_examples"])
            more = src["read_errors"] - len(src["error_examples"])
            tail = f"<li>… and {more:,} more</li>" if more > 0 else ""
            out.append(f"<p class='bad'>Unreadable records in <b>{html.escape(src['source'])}</b>:</p><ul>{items}{tail}</ul>")
    return "".join(out)


def _item_cell(item: dict, evolved: bool = False, parsing: str = "on") -> str:
    question = html.escape(item.get("question", "")) or "<i class='bad'>(empty)</i>"
    text = f"<b>Q:</b> {question}<br><b>A:</b> {html.escape(item.get('answer', ''))}"
    pair = pair_text(item, parsing)
    if pair is not None:
        text += f"<br><small class='vn'>verb-noun: {html.escape(pair)}</small>"
    meta = []
    if item.get("format"):
        meta.append(html.escape(item["format"]))
    if item.get("skills"):
        meta.append("skills: " + html.escape(", ".join(item["skills"])))
    if item.get("steps"):
        meta.append(f"{item['steps']} steps")
    if meta:
        text += f"<br><small>{' · '.join(meta)}</small>"
    v = item.get("verdict")
    if v:
        cls, word = ("kept", "kept") if v.get("improved") else ("dropped", "dropped")
        rule = f" by rule <code>{html.escape(v['rule'])}</code>" if v.get("rule") else ""
        if not rule and v.get("stage") and not v.get("improved"):
            rule = f" by the {html.escape(str(v['stage']))} check"
        text += (f"<br><span class='{cls}'>{word}{rule}, score {_fmt(v.get('score'))}</span>"
                 f" — {html.escape(v.get('reason') or '')}")
    elif evolved:
        text += "<br><span class='bad'>no score</span>"
    return text


def _examples(examples: dict[str, list[dict]], parsing: str = "on") -> str:
    out = []
    for source, records in examples.items():
        for ex in records:
            rounds = sorted({v["round"] for v in ex.get("versions", [])})
            head = "<th>seed</th>" + "".join(f"<th>round {r}</th>" for r in rounds)
            rows = []
            for seed in ex.get("items", []) or [{}]:
                cells = [f"<td>{_item_cell(seed, parsing=parsing) if seed else '<i>no seed items</i>'}</td>"]
                chain = {seed.get("id")}
                for r in rounds:
                    version = next(v for v in ex["versions"] if v["round"] == r)
                    children = [it for it in version["items"] if it.get("parent") in chain]
                    chain |= {it["id"] for it in children}
                    if version.get("status") != "judged":
                        cell = f"<span class='bad'>round failed: {html.escape(version.get('error') or '')}</span>"
                    else:
                        cell = f"<small>operator: {html.escape(version['operator'])}</small><br>" + (
                            "<hr>".join(_item_cell(it, evolved=True, parsing=parsing) for it in children)
                            or "<i>no rewrite</i>")
                    cells.append(f"<td>{cell}</td>")
                rows.append("<tr>" + "".join(cells) + "</tr>")
            caption = f"<br><small>{html.escape(ex['caption'])}</small>" if ex.get("caption") else ""
            gen = f" · generator {html.escape(ex['generator'])}" if ex.get("generator") else ""
            out.append(f"<div class='ex'><b>{html.escape(source)}</b> · record <code>{html.escape(ex['id'])}</code>"
                       f" · {html.escape(', '.join(ex.get('images', [])))}{gen}{caption}"
                       f"<table><tr>{head}</tr>{''.join(rows)}</table></div>")
    return "".join(out) or "<p class='note'>No examples.</p>"
