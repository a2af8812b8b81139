"""The errors the public API raises for problems the user must fix before anything runs.

`EvolError` is a usage, configuration or file-system problem, said in one line (the CLI
prints it as ``error: ...`` and exits 1). Faults of a run itself are not errors here: bad
records go to the rejects file, and a stopped server leaves records pending
(`EvolveResult.complete` is False, the CLI exits 3); see README "When things fail".
"""

from __future__ import annotations


class EvolError(Exception):
    """A problem to fix before evol can run: bad settings, a missing file, a locked run folder."""


class ConfigError(EvolError, ValueError):
    """Settings that are invalid, with every problem named."""


class RunIncomplete(Exception):
    """A seed command stopped before it finished: the server, the network or the disk failed
    (never the records' fault). What was answered is cached: run it again to finish."""


class NoRecords(EvolError):
    """A command that makes records made none; the message gives the top reasons."""
