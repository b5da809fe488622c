"""Before/after in one run: a bench's worker run in this checkout and, with
``--compare-tree``, in another, each in a fresh process whose ``aliasd`` is that tree's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def trees(compare_tree: str) -> dict[str, str]:
    """{"this": this checkout[, "other": the tree to compare with]}."""
    found = {"this": str(ROOT)}
    if compare_tree:
        found["other"] = str(Path(compare_tree).resolve())
    return found


def run_worker(script: str, name: str, root: str, args: list[str]) -> Any:
    """``python script --worker root *args`` with ``root`` first on the path; the JSON of
    its last line. A failed run ends the bench with that run's stderr."""
    out = subprocess.run([sys.executable, script, "--worker", root, *args], capture_output=True,
                         text=True, cwd=root, env={**os.environ, "PYTHONPATH": root})  # fmt: skip
    if out.returncode != 0:
        sys.exit(f"{name} tree's run failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
