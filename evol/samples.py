"""Where the sample data shipped with evol lies: photos, scene graphs, the instruction bank.

Everything that names a shipped file (the demo, benches, `evol seed instruct`'s default
bank) asks `shipped`, so the data can move (into the wheel) by changing this one place,
and is found wherever evol is run from.
"""

from __future__ import annotations

from pathlib import Path


def shipped(name: str = "") -> Path:
    """The shipped sample file or folder `name` ("scene_graphs", "instructions.txt"), or
    with no name the folder that holds them all. An absolute path, whatever the current folder."""
    root = Path(__file__).resolve().parent.parent / "seeds"
    return root / name if name else root
