"""The report's plotly figures, each built from one table `evol analyze` wrote.

Each function takes a pandas DataFrame and returns a figure, or None when the table has
nothing to draw. Colours: one per input (source), shades of it per round.
"""

from __future__ import annotations

from typing import Any

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
           "#bcbd22", "#7f7f7f"]
TOP_VERBS, NOUNS_PER_VERB = 12, 6
MAX_SUNBURSTS = 6


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


def sunburst_figure(pairs: Any) -> Any:
    """One verb -> noun sunburst per source for its seed round and its last round."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if pairs.empty:
        return None
    groups = _groups(pairs)
    by_source: dict[str, list[int]] = {}
    for s, r in groups:
        by_source.setdefault(s, []).append(r)
    shown = []
    for s, rounds in by_source.items():
        shown.append((s, rounds[0]))
        if len(rounds) > 1:
            shown.append((s, rounds[-1]))
    shown = shown[:MAX_SUNBURSTS]
    cols = min(3, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, specs=[[{"type": "domain"}] * cols for _ in range(rows)],
                        subplot_titles=[_group_label(s, r) for s, r in shown])
    for i, (s, r) in enumerate(shown):
        sub = pairs[(pairs["source"].astype(str) == s) & (pairs["round"] == r)]
        ids, labels, parents, values = _sunburst_nodes(sub)
        fig.add_trace(go.Sunburst(ids=ids, labels=labels, parents=parents, values=values,
                                  branchvalues="total", insidetextorientation="radial", maxdepth=2,
                                  hovertemplate="%{id}: %{value} items<extra></extra>"),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(height=430 * rows, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def _sunburst_nodes(sub: Any) -> tuple[list[str], list[str], list[str], list[int]]:
    verbs = sub.groupby("verb")["count"].sum().sort_values(ascending=False)
    ids, labels, parents, values = [], [], [], []
    for verb in verbs.index[:TOP_VERBS]:
        rows = sub[sub["verb"] == verb].sort_values("count", ascending=False)
        total = int(verbs[verb])
        ids.append(verb)
        labels.append(verb)
        parents.append("")
        values.append(total)
        shown = 0
        for noun, count in zip(rows["noun"][:NOUNS_PER_VERB], rows["count"][:NOUNS_PER_VERB]):
            name = noun if isinstance(noun, str) and noun else "(none)"
            ids.append(f"{verb}/{name}")
            labels.append(name)
            parents.append(verb)
            values.append(int(count))
            shown += int(count)
        if total > shown:
            ids.append(f"{verb}/(other)")
            labels.append("(other)")
            parents.append(verb)
            values.append(total - shown)
    return ids, labels, parents, values


COMPARISON = [
    ("distinct_pairs", "distinct verb-noun pairs"), ("pair_entropy_bits", "pair entropy (bits)"),
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
    fig = make_subplots(rows=2, cols=4, subplot_titles=[t for _, t in COMPARISON],
                        horizontal_spacing=0.06, vertical_spacing=0.16)
    for i, (col, _) in enumerate(COMPARISON):
        for s in sources:
            sub = summary[summary["source"].astype(str) == s].sort_values("round")
            if col not in sub or sub[col].isna().all():
                continue
            fig.add_trace(go.Scatter(x=sub["round"], y=sub[col], mode="lines+markers", name=s,
                                     legendgroup=s, showlegend=i == 0,
                                     line=dict(color=colors[s], width=3), marker=dict(size=9)),
                          row=i // 4 + 1, col=i % 4 + 1)
    fig.update_xaxes(dtick=1, title_text="round", title_standoff=2)
    fig.update_layout(height=560, margin=dict(l=40, r=10, t=50, b=40), legend=dict(orientation="h", y=-0.12))
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
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in DISTRIBUTIONS],
                        horizontal_spacing=0.08, vertical_spacing=0.16)
    for i, (metric, _) in enumerate(DISTRIBUTIONS):
        sub = dists[dists["metric"] == metric]
        for s, r in groups:
            g = sub[(sub["source"].astype(str) == s) & (sub["round"] == r)]
            if g.empty:
                continue
            binned = g.assign(bin=[_bin(metric, v) for v in g["value"]]).groupby("bin")["count"].sum()
            share = binned / binned.sum()
            fig.add_trace(go.Bar(x=list(share.index), y=list(share.values), name=_group_label(s, r),
                                 legendgroup=f"{s}/{r}", showlegend=i == 0,
                                 marker=dict(color=colors[s], opacity=max(0.35, 1.0 - 0.2 * r))),
                          row=i // 2 + 1, col=i % 2 + 1)
    fig.update_layout(barmode="group", height=620, margin=dict(l=40, r=10, t=50, b=40),
                      legend=dict(orientation="h", y=-0.1))
    fig.update_yaxes(tickformat=".0%")
    return fig


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
