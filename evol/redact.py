"""Keeping secrets out of what evol writes: credentials inside URLs.

A user may write a key into a URL (``http://user:KEY@host/v1``); such a URL is shown, logged
and stored in the manifest only as ``http://***@host/v1``.
"""

from __future__ import annotations

import re

_AUTHORITY = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)([^/?#\s]*)")


def _mask(m: re.Match) -> str:
    authority = m.group(2)
    if "@" not in authority:
        return m.group(0)
    # cut at the last "@", as URL parsers do: a password holding an unescaped "@" stays hidden
    return f"{m.group(1)}***@{authority.rpartition('@')[2]}"


def redact_url(url: str | None) -> str | None:
    """The URL (or any text holding URLs) with each ``user:password@`` part replaced by
    ``***@``; None stays None."""
    if not url:
        return url
    return _AUTHORITY.sub(_mask, url)


def url_credentials_problem(url: str | None) -> str | None:
    """Why a server URL holding ``user:password@`` is refused (the key belongs in the
    environment), with the URL shown masked; None when it holds none."""
    if not url or redact_url(url) == url:
        return None
    return (f"--base-url {redact_url(url)} holds credentials (a user:password@ part): put the key in the "
            "environment variable named by --api-key-env instead, so that it is never stored with the run")
