"""evol: evolve multimodal instruction data, then keep only what got better.

The Python API (each function has the settings of its command as keyword arguments):

    import evol
    seeds = evol.seed.provision("seeds.jsonl", annotations="graphs/", image_root="graphs/images")
    run = evol.evolve(seeds.out, "runs/a", base_url="http://localhost:8000/v1", model="M")
    evol.analyze([seeds.out, run.run_dir], "runs/a/analysis")
    page = evol.report("runs/a/analysis")
    ds = run.to_dataset()

Names are loaded on first use, so `import evol` stays fast.

References: MMEvol (arXiv 2409.05840), ProVision (2412.07012), SVIT (2307.04087),
MM-Instruct (2406.19736), WizardLM Evol-Instruct (2304.12244).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = ("evolve", "analyze", "report", "select", "export", "status", "filter_run", "demo", "load_dataset",
        "EvolveResult")
__all__ = [*_API, "seed", "shipped", "EvolError", "ConfigError", "RunIncomplete", "NoRecords", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("evol.api"), name)
    if name in ("EvolError", "ConfigError", "RunIncomplete", "NoRecords"):
        return getattr(importlib.import_module("evol.errors"), name)
    if name == "shipped":
        return importlib.import_module("evol.samples").shipped
    if name == "seed":
        return importlib.import_module("evol.seed")
    raise AttributeError(f"module 'evol' has no attribute {name!r}")
