"""Diversity analysis of instruction data and the HTML report (`evol analyze`, `evol report`).

Heavy libraries (spaCy, pandas, plotly) load only when a function here is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def analyze(inputs: list[str], out: str | Path, labels: list[str] | None = None, **options: Any) -> dict:
    """Analyse run folders and record files side by side; see `evol.analysis.pipeline.analyze`."""
    from evol.analysis.pipeline import analyze as _analyze

    return _analyze(inputs, out, labels, **options)


__all__ = ["analyze"]
