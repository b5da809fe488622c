"""Mail-path throughput: smtp-source → a private Postfix → smtp-sink, four setups side
by side in one run, the same messages each time:

  hash       Postfix with a hash: virtual map and no milter (the floor)
  lookupd    aliasd lookupd (socketmap) and no milter (what the lookup costs)
  aliasd     aliasd lookupd + aliasd milter with the bundled scanner (events recorded),
             SPF/DKIM/DMARC checks and ARC sealing on (the default); every DNS lookup
             answered by a local DNS server (tests/harness/dns.py), never the network
  aliasd-noauth  the same milter with mail_auth_enabled = arc_enabled = false
  aliasd-floor  aliasd's milter with a mail path that accepts every message at once
             (bench/floor_milter.py: protocol and workers only), lookupd as above: the
             floor any aliasd milter starts from, so what the target leaves for the work
  aliasd-1w  (on request) the full milter in one process (--workers 1), to compare with
             the default of one worker process per CPU
  aliasd-tree  (with --compare-tree DIR) the full milter run from another checkout of
             aliasd (e.g. ``git worktree add DIR <commit>``): before/after in one run
  rspamd     hash: map + Debian's rspamd 3.4 proxy worker as milter (milter = yes,
             self_scan, one process, no network checks) on 127.0.0.1

    python bench/mailpath.py [--messages 1000] [--sessions 1,4] [--database-url URL]

Messages: a fixed sample of the SpamAssassin corpus (bench/corpus.py; ham and spam)
sent with ``smtp-source -F``; messages/s counts every message smtpd answered at end of
DATA (accepted or refused by the milter). Target: aliasd at least 0.5x Postfix alone
(hash) and at least 1.2x rspamd's proxy milter on a unix socket. After each aliasd run the
milter's memory is printed (processes, RSS, PSS).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sqlalchemy import select  # noqa: E402

from aliasd.config import load_settings  # noqa: E402
from aliasd.core import aliases as core  # noqa: E402
from aliasd.db import Database  # noqa: E402
from aliasd.models import User  # noqa: E402
from aliasd.postfix.config_lines import postfix_table  # noqa: E402
from aliasd.postfix.milter_lines import postfix_milter_settings  # noqa: E402
from tests.harness.dns import DnsServer  # noqa: E402
from tests.harness.net import free_port, wait_for_port  # noqa: E402
from tests.harness.postfix import PostfixInstance, postmap  # noqa: E402
from tests.harness.rspamd import RspamdInstance  # noqa: E402

ALIAS = "github.com@example.net"
MAILBOX = "alice@real.example"


class RspamdProxy(RspamdInstance):
    """The harness's rspamd with the proxy worker on as a milter (Debian's usual setup)."""

    def __init__(self) -> None:
        super().__init__()
        self.milter_port = free_port()
        self.milter_socket = self.dir / "run" / "proxy.sock"

    def _write_config(self) -> None:
        super()._write_config()
        # Postfix (user postfix) must reach the unix socket inside the private dir.
        os.chmod(self.dir, 0o755)
        os.chmod(self.dir / "run", 0o755)
        (self.dir / "local" / "override.d" / "worker-proxy.inc").write_text(
            f'bind_socket = "127.0.0.1:{self.milter_port}";\n'
            f'bind_socket = "{self.milter_socket} mode=0666";\n'
            "milter = yes;\ntimeout = 120s;\ncount = 1;\n"
            'upstream "local" { default = yes; self_scan = yes; }\n'
        )


def sample_messages(dest: Path, count: int) -> list[Path]:
    from corpus import load, split

    _train, test = split(load())
    ham = [s for s in test if not s.is_spam][: count // 2]
    spam = [s for s in test if s.is_spam][: count - len(ham)]
    files = []
    for i, sample in enumerate(ham + spam):
        raw = sample.raw.replace(b"\r\n", b"\n")
        # Deliver everything to the one alias; the rest of the message stays as it was.
        path = dest / f"msg{i:03d}.eml"
        path.write_bytes(raw)
        files.append(path)
    return files


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def run_smtp_source(port: int, files: list[Path], total: int, sessions: int) -> float:
    """Send ``total`` messages spread over the files; returns messages per second."""
    per_file = max(1, total // len(files))
    started = time.perf_counter()
    procs = []
    # Run the files in parallel groups of ``sessions`` single-session clients so the
    # concurrency is exactly ``sessions`` SMTP connections.
    groups = [files[i::sessions] for i in range(sessions)]

    def client(group: list[Path]) -> list[str]:
        cmds = []
        for path in group:
            cmds.append(
                f"smtp-source -s 1 -m {per_file} -F {path} -f news@bulk.example "
                f"-t {ALIAS} 127.0.0.1:{port} || true"
            )
        return cmds

    for group in groups:
        script = "\n".join(client(group))
        procs.append(subprocess.Popen(["sh", "-c", script], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE))
    failed = False
    for proc in procs:
        _, err = proc.communicate(timeout=1800)
        if err.strip():
            failed = True
            print("   smtp-source:", err.decode(errors="replace").strip().splitlines()[-1])
    elapsed = time.perf_counter() - started
    if failed:  # a refused session sends nothing: its rate would be a lie
        return float("nan")
    return per_file * len(files) / elapsed


def _proc_kb(pid: int, path: str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory(pid: int) -> str:
    """The milter's memory now: its processes (supervisor and workers), the sum of their
    resident sizes, the largest peak, and the sum of proportional sizes (PSS: pages the
    workers share since the fork counted once overall)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(p) for p in task.read_text().split()]
    rss = sum(_proc_kb(p, "status", "VmRSS") for p in pids)
    hwm = max(_proc_kb(p, "status", "VmHWM") for p in pids)
    pss = sum(_proc_kb(p, "smaps_rollup", "Pss") for p in pids)
    return (f"{len(pids)} processes, RSS {rss / 1024:.0f} MB in all (peak of one "
            f"{hwm / 1024:.0f} MB), PSS {pss / 1024:.0f} MB")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the milter's processes (supervisor and live workers)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(p) for p in task.read_text().split()]
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy(seconds: float = 1.0) -> float:
    """The share of all CPUs busy (not idle or waiting on I/O) over ``seconds``."""
    def sample() -> tuple[int, int]:
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_until_quiet(limit: float = 180.0, busy: float = 0.15) -> None:
    """Let the milters and rspamd finish starting (rule files read, pattern databases
    compiled, Bayes loaded) before the first setup runs: their start-up would otherwise
    share the CPUs with the setup measured first, Postfix alone."""
    started = time.monotonic()
    share = machine_busy()
    while share > busy and time.monotonic() - started < limit:
        share = machine_busy()
    state = "quiet" if share <= busy else f"still {share:.0%} busy; measuring anyway"
    print(f"waited {time.monotonic() - started:.0f} s for the started processes to settle ({state})")


def measure(name: str, base: Path, main_cf: dict[str, str], files, total, sessions_list,
            sink_port: int, milter_pid: int | None = None) -> dict[int, float]:
    pf = PostfixInstance(base / f"pf-{name}", relay_port=sink_port, main_cf={
        "recipient_delimiter": "+",
        "smtpd_client_connection_count_limit": "0",
        "smtpd_client_message_rate_limit": "0",
        "default_process_limit": "100",
        **main_cf,
    })  # fmt: skip
    pf.start()
    try:
        run_smtp_source(pf.smtp_port, files[:4], 8, 2)  # warm up processes and caches
        results = {}
        for sessions in sessions_list:
            cpu_before = cpu_seconds(milter_pid) if milter_pid is not None else 0.0
            results[sessions] = run_smtp_source(pf.smtp_port, files, total, sessions)
            if milter_pid is not None:
                sent = max(1, total // len(files)) * len(files)
                cpu = (cpu_seconds(milter_pid) - cpu_before) / sent * 1e3
                print(f"   {name} milter after {sessions} session(s): {memory(milter_pid)}; "
                      f"CPU {cpu:.2f} ms per message")
        log = pf.maillog()
        if "warning: milter" in log:
            print(f"   {name}: Postfix reported milter warnings:",
                  log[log.index("warning: milter"):][:300])
        return results
    finally:
        pf.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--files", type=int, default=40, help="distinct corpus messages")
    ap.add_argument("--sessions", default="1,4")
    ap.add_argument("--database-url", default="", help="default: a SQLite file in a temp dir")
    ap.add_argument("--only", default="hash,lookupd,aliasd,aliasd-noauth,aliasd-floor,rspamd,"
                                      "aliasd-unix,rspamd-unix")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) for a look")
    ap.add_argument("--compare-tree", default="",
                    help="another aliasd checkout whose milter runs as setup aliasd-tree")
    args = ap.parse_args()
    sessions_list = [int(x) for x in args.sessions.split(",")]
    only = set(args.only.split(","))

    base = Path(tempfile.mkdtemp(prefix="aliasd-bench-mailpath-", dir="/tmp"))
    os.chmod(base, 0o755)
    procs: list[subprocess.Popen] = []
    rspamd = None
    try:
        files = sample_messages(base, args.files)
        db_url = args.database_url or f"sqlite:///{base / 'aliasd.db'}"
        db = Database(db_url)
        db.upgrade()
        with db.session() as s:
            if not s.scalar(select(User).where(User.username == "alice")):
                alice = core.create_user(s, "alice", MAILBOX)
                core.create_domain(s, "example.net", alice)
                core.create_alias(s, ALIAS, alice, site="github.com")
        dns = DnsServer(ttl=300).start()
        settings = load_settings(environ={}, data_dir=str(base / "data"), database_url=db_url,
                                 dns_resolver=dns.address)  # fmt: skip
        from aliasd.mailauth import keys

        for key in keys.signing_keys(settings, "example.net"):
            dns.add(key.dns_name, "TXT", key.dns_txt())
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALIASD_")}
        env.update(ALIASD_DATA_DIR=settings.data_dir, ALIASD_DATABASE_URL=db_url,
                   ALIASD_DNS_RESOLVER=dns.address, ALIASD_AUTHSERV_ID="mx.example.net",
                   # The same 20 spam messages come round again and again: auto-block
                   # would block their senders after a few and the next setups' runs
                   # would stop at the first 550 (smtp-source gives up on a rejection).
                   ALIASD_AUTOBLOCK_ENABLED="false",
                   ALIASD_BLOCKLIST_RELOAD_COMMAND="true")  # never reload the system Postfix

        sink_port = free_port()
        procs.append(start(["smtp-sink", "-u", "postfix", "-c", f"127.0.0.1:{sink_port}", "256"], env,
                           base / "sink.log"))
        wait_for_port(sink_port)

        virtual = base / "virtual"
        virtual.write_text(f"{ALIAS} {MAILBOX}\n")
        proc = postmap(f"hash:{virtual}")
        if proc.returncode:
            raise SystemExit(proc.stderr)
        hash_map = {"virtual_alias_domains": "example.net",
                    "virtual_alias_maps": f"hash:{virtual}"}  # fmt: skip

        lookup_port = free_port()
        milter_port = free_port()
        if only & {"lookupd", "aliasd", "aliasd-unix", "aliasd-noauth", "aliasd-1w",
                   "aliasd-floor"}:
            procs.append(start([sys.executable, "-m", "aliasd", "lookupd", "--socketmap",
                                f"127.0.0.1:{lookup_port}", "--tcp", ""], env,
                               base / "lookupd.log"))  # fmt: skip
            wait_for_port(lookup_port)
        milter_pids: dict[str, int] = {}
        if "aliasd" in only:
            procs.append(start([sys.executable, "-m", "aliasd", "milter", "--listen",
                                f"127.0.0.1:{milter_port}", "--log-level", "WARNING"], env,
                               base / "milter.log"))  # fmt: skip
            milter_pids["aliasd"] = procs[-1].pid
            wait_for_port(milter_port)
        noauth_port = free_port()
        if "aliasd-noauth" in only:
            procs.append(start([sys.executable, "-m", "aliasd", "milter", "--listen",
                                f"127.0.0.1:{noauth_port}", "--log-level", "WARNING"],
                               {**env, "ALIASD_MAIL_AUTH_ENABLED": "false",
                                "ALIASD_ARC_ENABLED": "false"},
                               base / "milter-noauth.log"))  # fmt: skip
            milter_pids["aliasd-noauth"] = procs[-1].pid
            wait_for_port(noauth_port)
        floor_port = free_port()
        if "aliasd-floor" in only:
            procs.append(start([sys.executable, str(ROOT / "bench" / "floor_milter.py"),
                                "--listen", f"127.0.0.1:{floor_port}"], env,
                               base / "milter-floor.log"))  # fmt: skip
            milter_pids["aliasd-floor"] = procs[-1].pid
            wait_for_port(floor_port)
        onew_port = free_port()
        if "aliasd-1w" in only:
            procs.append(start([sys.executable, "-m", "aliasd", "milter", "--listen",
                                f"127.0.0.1:{onew_port}", "--workers", "1",
                                "--log-level", "WARNING"], env, base / "milter-1w.log"))
            milter_pids["aliasd-1w"] = procs[-1].pid
            wait_for_port(onew_port)
        tree_port = free_port()
        if args.compare_tree:
            tree = str(Path(args.compare_tree).resolve())
            tree_env = {**env, "PYTHONPATH": tree}
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "aliasd", "milter", "--listen", f"127.0.0.1:{tree_port}",
                 "--log-level", "WARNING"], env=tree_env, cwd=tree,
                stdout=open(base / "milter-tree.log", "wb"), stderr=subprocess.STDOUT))  # noqa: SIM115
            milter_pids["aliasd-tree"] = procs[-1].pid
            wait_for_port(tree_port)
        milter_sock = base / "milter.sock"
        if "aliasd-unix" in only:
            procs.append(start([sys.executable, "-m", "aliasd", "milter", "--listen",
                                f"unix:{milter_sock}", "--log-level", "WARNING"], env,
                               base / "milter-unix.log"))  # fmt: skip
            milter_pids["aliasd-unix"] = procs[-1].pid
            deadline = time.monotonic() + 20
            while not milter_sock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        table = postfix_table("socketmap", f"127.0.0.1:{lookup_port}", "virtual")
        lookup_map = {"virtual_alias_domains": table, "virtual_alias_maps": table}

        setups: list[tuple[str, dict[str, str]]] = []
        if "hash" in only:
            setups.append(("hash", hash_map))
        if "lookupd" in only:
            setups.append(("lookupd", lookup_map))
        if "aliasd" in only:
            setups.append(("aliasd", {**lookup_map,
                                      **postfix_milter_settings(settings, f"127.0.0.1:{milter_port}")}))  # fmt: skip
        if "aliasd-noauth" in only:
            setups.append(("aliasd-noauth", {**lookup_map,
                                             **postfix_milter_settings(settings, f"127.0.0.1:{noauth_port}")}))  # fmt: skip
        if "aliasd-floor" in only:
            setups.append(("aliasd-floor", {**lookup_map,
                                            **postfix_milter_settings(settings, f"127.0.0.1:{floor_port}")}))  # fmt: skip
        if args.compare_tree:
            setups.append(("aliasd-tree", {**lookup_map,
                                           **postfix_milter_settings(settings, f"127.0.0.1:{tree_port}")}))  # fmt: skip
        if "aliasd-1w" in only:
            setups.append(("aliasd-1w", {**lookup_map,
                                         **postfix_milter_settings(settings, f"127.0.0.1:{onew_port}")}))  # fmt: skip
        if "aliasd-unix" in only:
            setups.append(("aliasd-unix", {**lookup_map,
                                           **postfix_milter_settings(settings, f"unix:{milter_sock}")}))  # fmt: skip
        if only & {"rspamd", "rspamd-unix"}:
            rspamd = RspamdProxy()
            rspamd.start()
            wait_for_port(rspamd.milter_port)
        if "rspamd" in only:
            setups.append(("rspamd", {**hash_map,
                                      **postfix_milter_settings(settings, f"127.0.0.1:{rspamd.milter_port}")}))  # fmt: skip
        if "rspamd-unix" in only:
            setups.append(("rspamd-unix", {**hash_map,
                                           **postfix_milter_settings(settings, f"unix:{rspamd.milter_socket}")}))  # fmt: skip

        wait_until_quiet()
        print(f"mail path: {args.messages} messages per run, {len(files)} distinct corpus "
              f"messages (half ham, half spam), database {db.engine.dialect.name}")
        results: dict[str, dict[int, float]] = {}
        for name, cf in setups:
            results[name] = measure(name, base, cf, files, args.messages, sessions_list,
                                    sink_port, milter_pids.get(name))
            figures = ", ".join(f"{s} session(s): {r:7.1f} msg/s" for s, r in results[name].items())
            print(f"  {name:12s} {figures}")
        if "aliasd" in results:
            with db.session() as s:
                from sqlalchemy import func

                from aliasd.models import MailEvent

                n = s.scalar(select(func.count()).select_from(MailEvent))
            print(f"  (aliasd recorded {n} mail events)")
        for sessions in sessions_list:
            if "aliasd-unix" in results and "rspamd-unix" in results:
                ratio = results["aliasd-unix"][sessions] / results["rspamd-unix"][sessions]
                print(f"  {sessions} session(s): aliasd / rspamd, both on unix sockets = "
                      f"{ratio:.2f}x  (target >= 1.2)")
            if "aliasd" in results and "rspamd" in results:
                ratio = results["aliasd"][sessions] / results["rspamd"][sessions]
                print(f"  {sessions} session(s): aliasd / rspamd, both on 127.0.0.1 = {ratio:.2f}x")
            if "aliasd" in results and "hash" in results:
                ratio = results["aliasd"][sessions] / results["hash"][sessions]
                print(f"  {sessions} session(s): aliasd / hash-no-milter = {ratio:.2f}x  "
                      f"(target >= 0.5)")
            if "aliasd-floor" in results and "hash" in results:
                floor, target = results["aliasd-floor"][sessions], results["hash"][sessions] / 2
                left = 1000 / target - 1000 / floor  # ms a message the work may add
                print(f"  {sessions} session(s): aliasd-floor / hash-no-milter = "
                      f"{floor / results['hash'][sessions]:.2f}x: the target leaves the work "
                      f"{max(left, 0):.2f} ms a message (1 / rate)")
    finally:
        if rspamd is not None:
            rspamd.stop()
        for proc in procs:
            stop(proc)
        if args.keep:
            print(f"  logs kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
