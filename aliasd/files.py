"""Files aliasd writes whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def replace_file(path: Path, data: bytes, *, mode: int = 0o600,
                 prepare: Callable[[Path], None] | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, with
    ``mode`` from the start, renamed over ``path``: a reader sees the old file or the
    new one, never a part. ``prepare`` gets the temporary file before it is written
    (to give it an owner)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        if prepare is not None:
            prepare(Path(tmp))
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
