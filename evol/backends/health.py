"""When to stop sending: one breaker per run that notices a server nobody can use.

Retries handle a server that fails now and then. They are the wrong tool for a server
that fails every call (a wrong key, a closed port, a crashed replica): each record would
spend all its attempts, and the run would end with every record failed. `Breaker` watches
the outcome of every HTTP attempt and trips when

- the server refuses the credentials (401/403) or the address is wrong (404): at once;
- `max_streak` attempts in a row failed by transport (connection refused, timeout, 5xx,
  429) with no success between them, or such a streak has lasted `max_seconds`;
- `max_streak` requests in a row were refused (another 4xx, e.g. every prompt longer than
  the model's context) with no success between them: each of those is a model fault of its
  record (rerun with --retry-failed once the cause is fixed), but going on would fail every
  record the same way.

Once tripped it stays tripped: `check()` raises `RunStopped` with the cause, so no new
call goes out, the runner writes what is finished and exits non-zero, and a rerun (with
the server fixed) finishes the run from its journal and cache.
"""

from __future__ import annotations

import time
from typing import Callable

from evol.backends.base import RunStopped


class Breaker:
    def __init__(self, max_streak: int = 20, max_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.max_streak, self.max_seconds, self.clock = max_streak, max_seconds, clock
        self.streak = 0
        self.streak_started: float | None = None
        self.refusals = 0
        self.last_failure = ""
        self.cause: str | None = None

    @property
    def tripped(self) -> bool:
        return self.cause is not None

    def check(self) -> None:
        """Raise `RunStopped` once the breaker has tripped."""
        if self.cause is not None:
            raise RunStopped(self.cause)

    def success(self) -> None:
        self.streak, self.streak_started, self.refusals = 0, None, 0

    def refused(self, cause: str) -> None:
        """One request refused (a 4xx other than auth, 404, 408, 429)."""
        self.refusals += 1
        if self.cause is None and self.refusals >= self.max_streak:
            self.cause = f"{cause} ({self.refusals} requests in a row were refused)"

    def failure(self, cause: str) -> None:
        """One attempt failed by transport; `cause` says how, for the stop line."""
        now = self.clock()
        if self.streak == 0:
            self.streak_started = now
        self.streak += 1
        self.last_failure = cause
        if self.cause is None and (
                self.streak >= self.max_streak
                or (self.streak > 1 and now - self.streak_started >= self.max_seconds)):
            self.cause = f"{cause} ({self.streak} attempts in a row failed; no call succeeded in between)"

    def stop(self, cause: str) -> None:
        """Trip at once (an auth error, a full disk): `cause` is the line the user sees."""
        if self.cause is None:
            self.cause = cause
