"""The report's plotly figures, each built from one table `evol analyze` wrote.

Each function takes a pandas DataFrame and returns a figure, or None when the table has
nothing to draw. Colours: one per input (source), shades of it per round.
"""

from __future__ import annotations

from typing import Any

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
           "#bcbd22", "#7f7f7f"]
MAX_SUNBURSTS = 16


def _group_label(source: str, rnd: int) -> str:
    return f"{source} · seed" if int(rnd) == 0 else f"{source} · round {int(rnd)}"


def _source_colors(sources: list[str]) -> dict[str, str]:
    return {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(sources)}


def _groups(df: Any) -> list[tuple[str, int]]:
    """(source, round) pairs in the table's order of appearance."""
    seen: dict[tuple[str, int], None] = {}
    for s, r in zip(df["source"], df["round"]):
        seen[(str(s), int(r))] = None
    return list(seen)


VERB_PALETTE = PALETTE + ["#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
                          "#dbdb8d", "#9edae5", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]
OTHER = "(other)"
OTHER_COLOR = "#c7c7c7"


def verb_color(verb: str) -> str:
    """The verb's colour in every panel: a stable hash of the word into the palette."""
    import zlib

    if verb == OTHER:
        return OTHER_COLOR
    return VERB_PALETTE[zlib.crc32(verb.encode("utf-8")) % len(VERB_PALETTE)]


def sunburst_figure(sun: Any, banner: str | None = None) -> Any:
    """One verb -> noun sunburst per (source, round): seed, round 1, 2, 3 ...

    `sun` is sunburst.csv: counts from every parsed item, with "(other)" wedges, so each
    sunburst's total is the number of items parsed in that round. `banner` is written
    above the panels (the report names the task-verb reading there, so that a copy of
    the chart alone still says it is not the paper's definition)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if sun.empty:
        return None
    shown = _groups(sun)[:MAX_SUNBURSTS]
    cols = min(4, len(shown))
    rows = (len(shown) + cols - 1) // cols
    titles = []
    for s, r in shown:
        total = int(sun[(sun["source"].astype(str) == s) & (sun["round"] == r)]["count"].sum())
        titles.append(f"{_group_label(s, r)} ({total:,} items)")
    fig = make_subplots(rows=rows, cols=cols, specs=[[{"type": "domain"}] * cols for _ in range(rows)],
                        subplot_titles=titles)
    for i, (s, r) in enumerate(shown):
        sub = sun[(sun["source"].astype(str) == s) & (sun["round"] == r)]
        ids, labels, parents, values, colors = _sunburst_nodes(sub)
        fig.add_trace(go.Sunburst(ids=ids, labels=labels, parents=parents, values=values,
                                  branchvalues="total", insidetextorientation="radial", maxdepth=2,
                                  marker=dict(colors=colors), name=_group_label(s, r),
                                  hovertemplate="%{id}: %{value} items<extra></extra>"),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(height=max(430, (1240 // cols + 40) * rows), margin=dict(l=10, r=10, t=40, b=10))
    if banner:
        fig.update_layout(title=dict(text=banner, x=0.01, y=0.995, yanchor="top", font=dict(size=14, color="#b54708")),
                          margin=dict(t=70))
    return fig


def _sunburst_nodes(sub: Any) -> tuple[list[str], list[str], list[str], list[int], list[str]]:
    verbs: dict[str, int] = {}
    for verb, count in zip(sub["verb"].astype(str), sub["count"]):
        verbs[verb] = verbs.get(verb, 0) + int(count)
    ids, labels, parents, values, colors = [], [], [], [], []
    for verb, total in verbs.items():
        ids.append(verb)
        labels.append(verb)
        parents.append("")
        values.append(total)
        colors.append(verb_color(verb))
        rows = sub[sub["verb"].astype(str) == verb]
        for noun, count in zip(rows["noun"], rows["count"]):
            name = noun if isinstance(noun, str) and noun else "(none)"
            ids.append(f"{verb}/{name}")
            labels.append(name)
            parents.append(verb)
            values.append(int(count))
            colors.append(OTHER_COLOR if name == OTHER else verb_color(verb))
    return ids, labels, parents, values, colors


def _no_data(fig: Any, row: int, col: int) -> None:
    """Write "no data" in a panel that has nothing to draw (never an empty or zero panel)."""
    fig.add_annotation(text="no data", x=0.5, y=0.5, xref="x domain", yref="y domain", showarrow=False,
                       font=dict(size=16, color="#888"), row=row, col=col)


COMPARISON = [
    ("distinct_pairs", "distinct verb-noun pairs"), ("pair_entropy_bits", "pair entropy (bits)"),
    ("distinct_pairs_at_n", "distinct pairs, equal-size samples"),
    ("pair_entropy_bits_at_n", "pair entropy, equal-size samples"),
    ("distinct_pairs_per_1k", "distinct pairs per 1,000 items"),
    ("skills_mean", "skills per item"), ("steps_mean", "steps per item"),
    ("score_mean", "mean judge score"), ("improved_ratio", "improved ratio"),
    ("question_words_mean", "question words"), ("rare_object_share", "rare object share"),
]


def comparison_figure(summary: Any) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if summary.empty:
        return None
    sources = list(dict.fromkeys(summary["source"].astype(str)))
    colors = _source_colors(sources)
    fig = make_subplots(rows=3, cols=4, subplot_titles=[t for _, t in COMPARISON],
                        horizontal_spacing=0.06, vertical_spacing=0.12)
    for i, (col, _) in enumerate(COMPARISON):
        drawn = False
        for s in sources:
            sub = summary[summary["source"].astype(str) == s].sort_values("round")
            if col not in sub or sub[col].isna().all():
                continue
            sub = sub[sub[col].notna()]  # a missing value is left out, never drawn as zero
            drawn = True
            fig.add_trace(go.Scatter(x=sub["round"], y=sub[col], mode="lines+markers", name=s,
                                     legendgroup=s, showlegend=i == 0,
                                     line=dict(color=colors[s], width=3), marker=dict(size=9)),
                          row=i // 4 + 1, col=i % 4 + 1)
        if not drawn:
            _no_data(fig, i // 4 + 1, i % 4 + 1)
    fig.update_xaxes(dtick=1, title_text="round", title_standoff=2)
    fig.update_yaxes(rangemode="tozero")  # levels are compared: every axis starts at zero
    fig.update_layout(height=780, margin=dict(l=40, r=10, t=50, b=40), legend=dict(orientation="h", y=-0.08))
    return fig


DISTRIBUTIONS = [("score", "judge score (evolved rounds)"), ("question_words", "question length (words)"),
                 ("skills_per_item", "skills per item"), ("steps_per_item", "steps per item")]


def _bin(metric: str, value: float) -> float:
    if metric in ("question_words", "answer_words"):
        return min(int(value) // 5 * 5, 100)
    return min(float(value), 10.0) if metric != "score" else float(value)


def distribution_figure(dists: Any) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if dists.empty:
        return None
    groups = _groups(dists)
    colors = _source_colors(list(dict.fromkeys(s for s, _ in groups)))
    group_colors = {g: PALETTE[k % len(PALETTE)] for k, g in enumerate(groups)}
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in DISTRIBUTIONS],
                        horizontal_spacing=0.08, vertical_spacing=0.16)
    for i, (metric, _) in enumerate(DISTRIBUTIONS):
        sub = dists[dists["metric"] == metric]
        if sub.empty:
            _no_data(fig, i // 2 + 1, i % 2 + 1)
        for s, r in groups:
            g = sub[(sub["source"].astype(str) == s) & (sub["round"] == r)]
            if g.empty:
                continue
            if metric == "score":  # a density curve per round, each round its own colour
                xs, ys = _density(list(g["value"]), list(g["count"]))
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{_group_label(s, r)} score",
                                         legendgroup=f"{s}/{r}/score", line=dict(color=group_colors[(s, r)], width=3)),
                              row=i // 2 + 1, col=i % 2 + 1)
                continue
            binned = g.assign(bin=[_bin(metric, v) for v in g["value"]]).groupby("bin")["count"].sum()
            share = binned / binned.sum()
            fig.add_trace(go.Bar(x=list(share.index), y=list(share.values), name=_group_label(s, r),
                                 legendgroup=f"{s}/{r}", showlegend=i == 0,
                                 marker=dict(color=colors[s], opacity=max(0.35, 1.0 - 0.2 * r))),
                          row=i // 2 + 1, col=i % 2 + 1)
    fig.update_layout(barmode="group", height=620, margin=dict(l=40, r=10, t=50, b=40),
                      legend=dict(orientation="h", y=-0.1))
    fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    fig.update_yaxes(tickformat=".2f", title_text="density", row=1, col=1)
    fig.update_xaxes(range=[0, 10], row=1, col=1)
    return fig


def _density(values: list[float], counts: list[int], bandwidth: float = 0.6) -> tuple[list[float], list[float]]:
    """A Gaussian kernel density of judge scores on 0..10 (from the score counts, not items)."""
    import math

    total = sum(counts) or 1
    xs = [k / 10 for k in range(101)]
    norm = 1 / (bandwidth * math.sqrt(2 * math.pi) * total)
    ys = [norm * sum(c * math.exp(-0.5 * ((x - float(v)) / bandwidth) ** 2) for v, c in zip(values, counts))
          for x in xs]
    return xs, ys


MIX_KINDS = [("operator", "operator"), ("format", "task form"), ("generator", "generator")]


def mix_figure(counts: Any, top: int = 10) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    sub = counts[counts["kind"].isin([k for k, _ in MIX_KINDS])] if not counts.empty else counts
    if sub.empty:
        return None
    kinds = [(k, t) for k, t in MIX_KINDS if (sub["kind"] == k).any()]
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[t for _, t in kinds], horizontal_spacing=0.08)
    palette = PALETTE + ["#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5"]
    for c, (kind, _) in enumerate(kinds):
        k = sub[sub["kind"] == kind]
        totals = k.groupby("name")["count"].sum().sort_values(ascending=False)
        names = list(totals.index[:top])
        groups = _groups(k)
        labels = [_group_label(s, r) for s, r in groups]
        for j, name in enumerate(names + ["(other)"]):
            ys = []
            for s, r in groups:
                g = k[(k["source"].astype(str) == s) & (k["round"] == r)]
                total = g["count"].sum() or 1
                value = g[g["name"] == name]["count"].sum() if name != "(other)" else \
                    g[~g["name"].isin(names)]["count"].sum()
                ys.append(value / total)
            if not any(ys):
                continue
            fig.add_trace(go.Bar(x=labels, y=ys, name=str(name)[:40], marker=dict(color=palette[j % len(palette)]),
                                 legendgroup=kind, legendgrouptitle_text=kind if j == 0 else None),
                          row=1, col=c + 1)
    fig.update_layout(barmode="stack", height=460, margin=dict(l=40, r=10, t=50, b=90))
    fig.update_yaxes(tickformat=".0%")
    return fig


def longtail_figure(counts: Any) -> Any:
    import plotly.graph_objects as go

    sub = counts[counts["kind"] == "object"] if not counts.empty else counts
    if sub.empty:
        return None
    groups = _groups(sub)
    colors = _source_colors(list(dict.fromkeys(s for s, _ in groups)))
    fig = go.Figure()
    for s, r in groups:
        g = sub[(sub["source"].astype(str) == s) & (sub["round"] == r)].sort_values("count", ascending=False)
        fig.add_trace(go.Scatter(x=list(range(1, len(g) + 1)), y=list(g["count"]), mode="lines+markers",
                                 name=_group_label(s, r), text=list(g["name"]),
                                 hovertemplate="%{text}: %{y} items<extra></extra>",
                                 line=dict(color=colors[s], width=2, dash="solid" if r == 0 else "dot"),
                                 marker=dict(size=5)))
    fig.update_layout(height=380, margin=dict(l=50, r=10, t=20, b=40), xaxis_title="rank of object label",
                      yaxis_title="items", yaxis_type="log")
    return fig
