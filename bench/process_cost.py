"""What one message costs the milter in-process: ``MailPath.process`` (as the milter
runs it, with its metrics) on a fixed sample of the SpamAssassin corpus, with everything
the default mail path has on:

  - the bundled scanner with SpamAssassin's content rules (default settings),
  - SPF, DKIM and DMARC checks, every DNS lookup answered by the tests' own DNS server
    on 127.0.0.1 (real queries, no network); each corpus message arrives DKIM-signed
    (RSA 2048) by its From: domain, whose SPF lists the client and which publishes a
    DMARC record,
  - the reverse alias of each correspondent in Reply-To: (preserve mode; the first pass
    makes them, the timed ones find them), the one-click headers, and so our forward DKIM
    signature and the ARC seal with the alias domain's keys,
  - the owner's quarantine_score set (messages scoring between it and reject are held:
    recorded in the database before the answer), learning copies kept,
  - events recorded by the background writer thread, as in the milter.

Auto-block is off: the same spam comes round again each pass and would otherwise block
its senders part-way, so later passes would measure a different path.

Prints the median and mean ms per message and the time per stage (ms per message,
summed over the messages; stages in other threads overlap the caller's, nested ones are
indented). ``--profile`` adds a cProfile summary of every thread of this tree's run.
With ``--compare-tree DIR`` (another checkout, e.g. ``git worktree add /tmp/base main``)
the same run is made from that code too, rounds interleaved, side by side.

    python bench/process_cost.py [--files 40] [--passes 5] [--rounds 3]
                                 [--compare-tree DIR] [--profile] [--spf]
                                 [--database-url POSTGRESQL_ADMIN_URL]

``--spf`` turns the scanner's SPF symbols on too (``spf_enabled``, off by default).

SQLite by default (a file per run); with ``--database-url`` each run creates its own
PostgreSQL database on that server and drops it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from scratch_database import drop_database, fresh_database
from tree_runs import run_worker, trees

ROOT = Path(__file__).resolve().parent.parent
ALIAS = "shop@example.net"
CLIENT = "192.0.2.10"
# (label, module, attribute, class or None); a piece absent from a tree is left out.
STAGES = [
    ("process", "aliasd.milter.metrics", "MeasuredMailPath", "process"),
    ("  outgoing (reverse alias?)", "aliasd.milter.replies", "ReplyPath", "outgoing"),
    ("  learn by mail", "aliasd.milter.learn_by_mail", None, "handle"),
    ("  auth start", "aliasd.milter.authstep", None, "start"),
    ("  [pool] lookup", "aliasd.milter.processing", "MailPath", "_lookup"),
    ("  [pool] blocks", "aliasd.milter.processing", "MailPath", "_blocks"),
    ("  [pool] scan", None, None, "scan"),
    ("  [auth thread] verify", "aliasd.milter.authstep", None, "authenticate"),
    ("  [either thread] SPF (pyspf)", "spf", None, "check2"),
    ("  review before", "aliasd.milter.review", None, "before_record"),
    ("  forwarded (reverse alias)", "aliasd.milter.replies", "ReplyPath", "forwarded"),
    ("    reverse alias facts", "aliasd.core.reverse_aliases", None, "forward_facts"),
    ("    new or named reverse alias", "aliasd.core.reverse_aliases", None,
     "for_correspondent"),
    ("  transformed envelope", "aliasd.milter.processing", None, "transformed_envelope"),
    ("  auth finish", "aliasd.milter.authstep", None, "finish"),
    ("    wait for verify", "aliasd.milter.authstep", None, "_result"),
    ("    forward DKIM sign", "aliasd.mailauth.signing", None, "forward_signature"),
    ("    ARC seal", "aliasd.mailauth.seal", None, "seal_parts"),
    ("  record (queue events)", "aliasd.milter.processing", "MailPath", "_record"),
    ("  review after", "aliasd.milter.review", None, "after_record"),
    ("    held: preview", "aliasd.milter.review", None, "text_preview"),
    ("    held: record", "aliasd.core.quarantine", None, "record_hold"),
]


class Stages:
    """Time spent in each wrapped function, summed over every thread."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self.on = False

    def wrap(self, label: str, func):
        def timed(*args, **kwargs):
            if not self.on:
                return func(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                spent = time.perf_counter() - t0
                with self._lock:
                    self.seconds[label] = self.seconds.get(label, 0.0) + spent
                    self.calls[label] = self.calls.get(label, 0) + 1

        timed.__wrapped__ = func
        return timed

    def install(self, scanner) -> None:
        import importlib

        for label, module, owner, name in STAGES:
            if module is None:  # the scanner instance
                setattr(scanner, name, self.wrap(label, getattr(scanner, name)))
                continue
            target = importlib.import_module(module)
            if owner is not None:
                target = getattr(target, owner, None)
            if target is None or name not in vars(target):
                continue
            setattr(target, name, self.wrap(label, vars(target)[name]))


def _envelopes(samples, count: int):
    """The messages as the milter gets them: header values without the line end
    (continuation lines joined with LF), body with CRLF."""
    from aliasd.milter.processing import OWN_HEADERS, Envelope

    own = {h.lower() for h in OWN_HEADERS}
    out = []
    for i in range(count):
        raw, sender = samples[i % len(samples)]
        head, _, body = raw.partition(b"\n\n")
        headers: list[tuple[str, bytes]] = []
        for line in head.split(b"\n"):
            if line[:1] in (b" ", b"\t") and headers:
                name, value = headers[-1]
                headers[-1] = (name, value + b"\n" + line)
            elif b":" in line:
                name, _, value = line.partition(b":")
                headers.append((name.decode("ascii", "replace"), value.lstrip(b" ")))
        headers = [(n, v) for n, v in headers if n.lower() not in own]
        env = Envelope(sender=sender, recipients=[ALIAS], client_addr=CLIENT,
                       helo="mail." + sender.rpartition("@")[2], queue_id=f"Q{i:08X}",
                       headers=headers, body=bytearray(body.replace(b"\n", b"\r\n")))
        env.size = len(env.raw_message())
        out.append(env)
    return out


def _corpus(files: int) -> list[tuple[bytes, str]]:
    """``files`` test-split messages, half ham, half spam: (raw with LF, envelope sender)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import email.utils

    from corpus import load, split

    _train, test = split(load())
    ham = [s for s in test if not s.is_spam][: files // 2]
    spam = [s for s in test if s.is_spam][: files - len(ham)]
    out = []
    for sample in ham + spam:
        raw = sample.raw.replace(b"\r\n", b"\n")
        head = raw.partition(b"\n\n")[0].decode("latin-1")
        sender = sample.envelope_from
        if "@" not in sender:
            for line in head.split("\n"):
                if line.lower().startswith("from:"):
                    sender = email.utils.parseaddr(line[5:])[1]
        if "@" not in sender:
            sender = "someone@unknown.example"
        out.append((raw, sender.lower()))
    return out


def _from_domain(raw: bytes) -> str | None:
    from aliasd.milter.processing import from_domain

    for line in raw.partition(b"\n\n")[0].split(b"\n"):
        if line.lower().startswith(b"from:"):
            return from_domain(line[5:].strip())
    return None


def _publish_and_sign(dns, base: Path, samples):
    """Each message DKIM-signed by its From: domain; SPF and DMARC published."""
    from aliasd.config import load_settings
    from aliasd.mailauth import keys

    senders = load_settings(environ={}, data_dir=str(base / "senders"), dkim_selector="s1")
    out = []
    done: set[str] = set()
    for raw, sender in samples:
        domain = _from_domain(raw)
        env_domain = sender.rpartition("@")[2]
        if env_domain not in done:
            dns.add(env_domain, "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
            done.add(env_domain)
        if domain:
            try:
                found = keys.signing_keys(senders, domain)
            except Exception:  # a name keys refuses: that message arrives unsigned
                found = []
            if found and domain + "/dkim" not in done:
                for key in found:
                    dns.add(key.dns_name, "TXT", key.dns_txt())
                dns.add("_dmarc." + domain, "TXT", "v=DMARC1; p=none")
                done.add(domain + "/dkim")
            crlf = raw.replace(b"\n", b"\r\n")
            header = keys.dkim_sign(senders, domain, crlf, ["from", "to", "subject", "date"]) \
                if found else None
            if header:
                raw = header.replace(b"\r\n", b"\n") + raw
        out.append((raw, sender))
    return out


def worker(root: str, url: str, files: int, passes: int, profile: bool,
           spf: bool = False) -> dict:
    sys.path.insert(0, root)
    from aliasd.config import load_settings
    from aliasd.core import aliases as core
    from aliasd.db import Database
    from aliasd.mailauth import keys
    from aliasd.milter import authstep
    from aliasd.milter.metrics import MeasuredMailPath
    from aliasd.scanner import build_scanner
    from tests.harness.dns import DnsServer

    admin_url = url
    dns = DnsServer(ttl=300).start()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        url = fresh_database(admin_url, "bench_process") if admin_url else f"sqlite:///{base / 'bench.db'}"
        settings = load_settings(
            environ={}, database_url=url, data_dir=str(base / "data"), env="development",
            secret_key="bench", dns_resolver=dns.address, authserv_id="mx.example.net",
            web_base_url="https://aliases.example.net", autoblock_enabled=False,
            spf_enabled=spf)
        for key in keys.signing_keys(settings, "example.net"):
            dns.add(key.dns_name, "TXT", key.dns_txt())
        samples = _publish_and_sign(dns, base, _corpus(files))
        db = Database(url)
        db.upgrade()
        with db.session() as s:
            user = core.create_user(s, "bench", "bench@mailbox.example")
            user.quarantine_score = 5.0
            core.create_domain(s, "example.net", user)
            core.create_alias(s, ALIAS, user, site="shop.example")
        profiles = _profile_threads() if profile else None
        scanner = build_scanner(settings, db)
        stages = Stages()
        stages.install(scanner)
        mail = MeasuredMailPath(settings, db, scanner, background_events=True)
        envelopes = _envelopes(samples, len(samples) * (passes + 1))
        for env in envelopes[: len(samples)]:  # first pass: reverse aliases made, warm
            mail.process(env)
        mail.flush_events()
        times = []
        statuses: dict[str, int] = {}
        stages.on = True
        for env in envelopes[len(samples):]:
            t0 = time.perf_counter()
            verdict = mail.process(env)
            times.append(time.perf_counter() - t0)
            statuses[verdict.status] = statuses.get(verdict.status, 0) + 1
        stages.on = False
        mail.flush_events()
        mail.close()
        mail._pool.shutdown(wait=True)
        if authstep._pool is not None:
            authstep._pool.shutdown(wait=True)
        db.dispose()
        if admin_url:
            drop_database(admin_url, url)
    dns.stop()
    n = len(times)
    out = {"times": [t * 1000 for t in times], "statuses": statuses,
           "stages": {k: v * 1000 / n for k, v in stages.seconds.items()},
           "calls": {k: v / n for k, v in stages.calls.items()}}
    if profiles is not None:
        out["profile"] = _profile_summary(profiles, n)
    return out


def _profile_threads() -> list:
    """A cProfile per thread (this one and every thread started from now on), merged at
    the end: the scan, the checks and the event writer run in threads of their own."""
    import cProfile

    profiles = []
    original = threading.Thread.run

    def run(self):
        p = cProfile.Profile()
        profiles.append(p)
        p.enable()
        try:
            original(self)
        finally:
            p.disable()

    threading.Thread.run = run
    main = cProfile.Profile()
    profiles.append(main)
    main.enable()
    return profiles


def _profile_summary(profiles: list, messages: int, top: int = 45) -> str:
    import io
    import pstats

    profiles[0].disable()
    stream = io.StringIO()
    stats = None
    for p in profiles:
        p.create_stats()
        if not p.stats:
            continue
        if stats is None:
            stats = pstats.Stats(p, stream=stream)
        else:
            stats.add(p)
    if stats is None:
        return ""
    stream.write(f"(all threads, {messages} timed messages plus the warm-up pass)\n")
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return stream.getvalue()



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=40, help="distinct corpus messages")
    ap.add_argument("--passes", type=int, default=5, help="timed passes over them")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compare-tree", default="")
    ap.add_argument("--database-url", default="")
    ap.add_argument("--profile", action="store_true", help="cProfile this tree's runs")
    ap.add_argument("--spf", action="store_true", help="spf_enabled: the scanner's SPF too")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.database_url, args.files, args.passes,
                                args.profile, args.spf)))
        return
    roots = trees(args.compare_tree)
    results: dict[str, list[dict]] = {name: [] for name in roots}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for name, root in roots.items():
            argv = ["--files", str(args.files), "--passes", str(args.passes),
                    "--database-url", args.database_url]
            if args.profile and name == "this":
                argv.append("--profile")
            if args.spf:
                argv.append("--spf")
            results[name].append(run_worker(__file__, name, root, argv))
    load = os.getloadavg()
    first = results["this"][0]
    print(f"load average {load_before[0]:.2f} before, {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} after; {args.files} corpus messages x {args.passes} passes, "
          f"{args.rounds} rounds; verdicts per round: {first['statuses']}")
    names = list(roots)
    print(f"{'ms per message':34}" + "".join(f"{n:>10}" for n in names)
          + ("  this/other" if len(names) == 2 else ""))

    def row(label: str, values: list[float]) -> None:
        ratio = f"  {values[0] / values[1]:9.2f}" if len(values) == 2 and values[1] else ""
        print(f"{label:34}" + "".join(f"{v:10.3f}" for v in values) + ratio)

    row("median", [statistics.median(t for r in results[n] for t in r["times"])
                   for n in names])
    row("mean", [statistics.fmean(t for r in results[n] for t in r["times"]) for n in names])
    row("p90", [statistics.quantiles([t for r in results[n] for t in r["times"]], n=10)[-1]
                for n in names])
    print("stages (ms per message, mean over rounds; calls per message, each tree)")
    for label, *_ in STAGES:
        values = [statistics.fmean(r["stages"].get(label, 0.0) for r in results[n])
                  for n in names]
        calls = " / ".join(f"{results[n][0]['calls'].get(label, 0.0):.2f}" for n in names)
        if any(values):
            ratio = f"  {values[0] / values[1]:9.2f}" if len(values) == 2 and values[1] else \
                ("" if len(values) == 1 else "          ")
            print(f"{label:34}" + "".join(f"{v:10.3f}" for v in values) + ratio
                  + f"  ({calls} calls)")
    for name in names:  # the spread between rounds says how noisy the run was
        print(f"{name} median per round: " + ", ".join(
            f"{statistics.median(r['times']):.3f}" for r in results[name]))
    if args.profile:
        print(results["this"][0].get("profile", ""))


if __name__ == "__main__":
    main()
