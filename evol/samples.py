"""Where the data shipped with evol lies: prompt templates and sample data.

In a source checkout they are the top-level `prompts/` and `seeds/` folders; a wheel maps
the same folders into the package as `evol/_data/prompts` and `evol/_data/seeds`
(pyproject.toml, `[tool.setuptools.package-dir]`). Everything that names a shipped file
(the prompt loader, the demo, the benches, `evol seed instruct`'s default bank) asks here,
so evol finds its data wherever it is installed and whatever the current folder.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def data_root(kind: str) -> Path:
    """The folder of shipped `kind` ("prompts" or "seeds"): the installed copy inside the
    package, else the source checkout's top-level folder."""
    installed = _PACKAGE / "_data" / kind
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / kind


def shipped(name: str = "") -> Path:
    """The shipped sample file or folder `name` ("scene_graphs", "instructions.txt"), or
    with no name the folder that holds them all. An absolute path, whatever the current folder."""
    root = data_root("seeds")
    return root / name if name else root
