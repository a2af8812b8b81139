"""The lines `evol analyze` prints from an analysis result (`evol.analyze`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def summary_lines(result: dict[str, Any], out: str | Path) -> list[str]:
    lines = [f"analysed {result['items']:,} items in {result['wall_s']:.1f} s "
             f"({result['items_per_s'] or 0:,.0f} items/s); tables in {out}"]
    for row in result["summary"]:
        bad = [f"{row[k]} {name}" for k, name in (("empty_instructions", "empty"), ("non_english", "non-English"),
                                                   ("no_verb", "without verb"), ("unscored", "unscored"))
               if row.get(k)]
        score = f", mean score {row['score_mean']:.2f}, improved {row['improved_ratio']:.0%}" \
            if row.get("score_mean") is not None and row.get("improved_ratio") is not None else ""
        lines.append(
            f"  {row['source']} round {row['round']}: {row['items']:,} items, {row['distinct_pairs']:,} verb-noun "
            f"pairs (entropy {row['pair_entropy_bits']:.2f} bits){score}"
            + (f"; {', '.join(bad)}" if bad else ""))
    for src in result["sources"]:
        if src["read_errors"] or src["records_without_items"]:
            lines.append(f"  {src['source']}: {src['read_errors']:,} unreadable records, "
                         f"{src['records_without_items']:,} records without items (listed in the report)")
    lines.append(f"next: evol report {out}")
    return lines
