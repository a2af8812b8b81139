"""Versioned prompt templates read from `prompts/<name>.md` (inside the package once installed).

Each file starts with a line `version: N`; the rest is a `string.Template` body, so
placeholders are written `$caption` or `${caption}`, a literal dollar is `$$`, and JSON
braces need no escaping. A prompt's `id` ("name@vN") goes into `Request.template`, so a
new version of a prompt never reuses cached answers made with the old one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from string import Template

from evol.samples import data_root

PROMPT_DIR = data_root("prompts")

_VERSION_LINE = re.compile(r"version:\s*(\d+)\s*$")
_NAME = re.compile(r"[A-Za-z0-9_\-]+")


class PromptError(ValueError):
    """A prompt file that cannot be read or rendered, with the reason."""


@dataclass(frozen=True)
class Prompt:
    name: str
    version: int
    text: str
    _template: Template = field(init=False, repr=False, compare=False)
    _placeholders: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        template = Template(self.text)
        if not template.is_valid():
            raise PromptError(
                f"prompt {self.id}: the template has a '$' that is not a placeholder; write '$$' for a dollar sign"
            )
        object.__setattr__(self, "_template", template)
        # found once: every request renders a prompt
        object.__setattr__(self, "_placeholders", tuple(dict.fromkeys(template.get_identifiers())))

    @property
    def id(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def placeholders(self) -> list[str]:
        """The placeholder names the template uses, in order of first use."""
        return list(self._placeholders)

    def render(self, **vars: object) -> str:
        """Fill every placeholder; a missing one raises `PromptError` naming all that are missing."""
        missing = [p for p in self._placeholders if p not in vars]
        if missing:
            names = ", ".join("$" + m for m in missing)
            raise PromptError(f"prompt {self.id} needs a value for {names}")
        return self._template.substitute({k: str(v) for k, v in vars.items()})


@lru_cache(maxsize=None)
def load_prompt(name: str) -> Prompt:
    """The prompt `prompts/<name>.md`, read once per process."""
    if not _NAME.fullmatch(name):
        raise PromptError(f"bad prompt name {name!r}: use letters, digits, '_' or '-'")
    path = PROMPT_DIR / f"{name}.md"
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptError(f"cannot read prompt {name!r} from {path}: {exc.strerror or exc}") from None
    first, _, body = raw.partition("\n")
    m = _VERSION_LINE.fullmatch(first.strip())
    if not m:
        raise PromptError(f"{path}: the first line must be 'version: N', found {first.strip()[:60]!r}")
    return Prompt(name=name, version=int(m.group(1)), text=body.strip("\n").rstrip() + "\n")


def prompt_versions() -> dict[str, int]:
    """Every prompt in the prompt folder with its version (recorded in a run's manifest)."""
    return {p.stem: load_prompt(p.stem).version for p in sorted(PROMPT_DIR.glob("*.md"))}
