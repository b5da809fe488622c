"""The held-message preview (``aliasd.core.preview.text_preview``) over the whole
SpamAssassin corpus (bench/.cache, see bench/corpus.py), each message with CRLF line ends
as the milter hands it over: ms per message. With ``--compare-tree DIR`` (another
checkout) that tree's preview runs too, interleaved, and every message's preview must be
the same in both (also cut at 50 and 300 characters, and from the LF files as stored).

    python bench/preview_cost.py [--rounds 3] [--compare-tree DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _preview_of(tree: Path):
    spec = importlib.util.spec_from_file_location(
        f"preview_{abs(hash(str(tree)))}", tree / "aliasd" / "core" / "preview.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.text_preview


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compare-tree", default="")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from corpus import load

    stored = [s.raw for s in load()]
    crlf = [r.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for r in stored]
    trees = {"this": _preview_of(ROOT)}
    if args.compare_tree:
        trees["other"] = _preview_of(Path(args.compare_tree).resolve())
        this, other = trees["this"], trees["other"]
        differ = [i for i, raw in enumerate(crlf + stored) if this(raw) != other(raw)]
        differ += [(i, n) for n in (50, 300) for i, raw in enumerate(crlf)
                   if this(raw, n) != other(raw, n)]
        print(f"{len(crlf)} messages: {len(differ)} previews differ {differ[:10]}")
    times: dict[str, list[float]] = {name: [] for name in trees}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for name, preview in trees.items():
            for raw in crlf:
                t0 = time.perf_counter()
                preview(raw)
                times[name].append(time.perf_counter() - t0)
    load = os.getloadavg()
    print(f"load average {load_before[0]:.2f} before, {load[0]:.2f} after; "
          f"{len(crlf)} messages x {args.rounds} rounds")
    for name, spent in times.items():
        print(f"{name:6} ms per message: median {statistics.median(spent) * 1000:.3f}, "
              f"mean {statistics.fmean(spent) * 1000:.3f}, "
              f"p90 {statistics.quantiles(spent, n=10)[-1] * 1000:.3f}")


if __name__ == "__main__":
    main()
