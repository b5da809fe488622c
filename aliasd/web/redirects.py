"""Where a form or sign-in may send the browser next: only a path on this site, never
another host (an open redirect) and never a header-breaking character."""

from __future__ import annotations

from urllib.parse import urlsplit


def same_site_path(target: str | None) -> str | None:
    """``target`` when it is a relative path on this site, else None."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return None  # CR/LF would break the Location header; browsers drop tabs
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return None
    return target
