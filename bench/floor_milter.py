"""aliasd's milter with a mail path that accepts every message at once: the milter
protocol, the process model (one worker per CPU on one socket) and Postfix's own milter
round trips, and nothing else. ``bench/mailpath.py`` runs it as setup ``aliasd-floor``:
what any aliasd milter costs before it scans, checks, seals or records anything, so
what the mail-path target leaves for that work.

    python bench/floor_milter.py --listen HOST:PORT|unix:/path   (settings from ALIASD_*)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aliasd.config import load_settings  # noqa: E402
from aliasd.db import Database  # noqa: E402
from aliasd.milter.processing import Envelope, MailPath, Verdict  # noqa: E402
from aliasd.milter.server import serve  # noqa: E402


class AcceptingMailPath(MailPath):
    """Every message accepted as it ends, unread: no scanner is built."""

    def scanner(self) -> None:
        return None

    def process(self, envelope: Envelope) -> Verdict:
        return Verdict()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="floor-milter %(levelname)s: %(message)s")
    settings = load_settings()
    database = Database(settings.database_url)
    serve(settings, database, args.listen, AcceptingMailPath(settings, database))
    return 0


if __name__ == "__main__":
    sys.exit(main())
