"""A private, real rspamd (Debian's 3.4) on loopback for tests and benchmarks.

Uses the packaged configuration in /etc/rspamd with a private LOCAL_CONFDIR (passed
with ``--var``) that binds one normal worker and the controller to free 127.0.0.1
ports, turns off the proxy and every module that needs the network, and points
Bayes at a private redis-server. Nothing is written outside the temp directory.

    with RspamdInstance() as rspamd:
        requests.post(rspamd.url + "/checkv2", data=message)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import requests

from tests.harness.net import free_port, wait_for_port

# Modules that query DNS or remote services, or need redis for something other than
# Bayes: off, so scans are local and deterministic ("no network checks").
NETWORK_MODULES = (
    "rbl", "surbl", "emails", "fuzzy_check", "asn", "dkim", "spf", "dmarc", "arc",
    "mx_check", "url_redirector", "greylist", "ratelimit", "replies", "reputation",
    "neural", "history_redis", "dcc", "external_services", "antivirus", "clickhouse",
    "elastic", "metadata_exporter", "rspamd_update", "dkim_signing", "arc_signing",
    "bimi", "known_senders", "p0f", "phishing", "whitelist", "maillist",
)


class NxDomainResolver:
    """A loopback DNS server that answers every query at once with NXDOMAIN, so
    rspamd's remaining lookups (reverse DNS of relays found in Received headers, ...)
    fail immediately instead of waiting for a resolver timeout: no network checks,
    and no waiting either."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._serve, name="nxdomain-dns", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import dns.message
        import dns.rcode

        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
                reply = dns.message.make_response(query)
                reply.set_rcode(dns.rcode.NXDOMAIN)
                self.sock.sendto(reply.to_wire(), peer)
            except Exception:  # noqa: BLE001 - garbage in: no answer
                continue

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=2)
        self.sock.close()


# Compiled hyperscan databases survive between instances: compiling them is most of
# rspamd's start-up time (about 20 s cold, a second or two warm).
HS_CACHE = Path(tempfile.gettempdir()) / "aliasd-rspamd-hs-cache"


class RspamdInstance:
    def __init__(
        self, *, password: str = "test-password", min_learns: int = 1, bayes: bool = True
    ) -> None:
        """``bayes=False``: no redis at all, so no Bayes (rspamd logs that and scans on)."""
        self.bayes = bayes
        self.dir = Path(tempfile.mkdtemp(prefix="aliasd-rspamd-"))
        self.normal_port = free_port()
        self.controller_port = free_port()
        self.redis_port = free_port()
        self.password = password
        self.min_learns = min_learns
        self.proc: subprocess.Popen | None = None
        self.redis: subprocess.Popen | None = None
        self.dns: NxDomainResolver | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.normal_port}"

    @property
    def controller_url(self) -> str:
        return f"http://127.0.0.1:{self.controller_port}"

    def _write_config(self) -> None:
        local = self.dir / "local"
        (local / "local.d").mkdir(parents=True)
        (local / "override.d").mkdir()
        for sub in ("run", "db", "log"):
            (self.dir / sub).mkdir()
        od = local / "override.d"
        ld = local / "local.d"
        (od / "worker-normal.inc").write_text(
            f'bind_socket = "127.0.0.1:{self.normal_port}";\ncount = 1;\n'
        )
        (od / "worker-controller.inc").write_text(
            f'bind_socket = "127.0.0.1:{self.controller_port}";\ncount = 1;\n'
            f'password = "{self.password}";\nenable_password = "{self.password}";\n'
            'secure_ip = [];\n'
        )
        (od / "worker-proxy.inc").write_text("enabled = false;\n")
        (od / "worker-fuzzy.inc").write_text("enabled = false;\ncount = -1;\n")
        if self.bayes:
            (ld / "redis.conf").write_text(f'servers = "127.0.0.1:{self.redis_port}";\n')
        (ld / "classifier-bayes.conf").write_text(
            f"min_learns = {self.min_learns};\nautolearn = false;\n"
        )
        # no resolver traffic leaves the machine: a loopback stub answers NXDOMAIN
        (ld / "options.inc").write_text(
            f'dns {{ nameserver = ["127.0.0.1:{self.dns.port}"]; timeout = 1s; retransmits = 1; }}\n'
            "check_all_filters = false;\n"
            f'hs_cache_dir = "{HS_CACHE}";\n'
        )
        (od / "logging.inc").write_text('type = "file";\nlevel = "warning";\n')
        for module in NETWORK_MODULES:
            (od / f"{module}.conf").write_text("enabled = false;\n")
        # hfilter's pattern checks stay; its DNS checks (A/MX of the From domain, the
        # client's reverse DNS) go: each would wait for a resolver timeout here
        (ld / "hfilter.conf").write_text("from_enabled = false;\nhostname_enabled = false;\n")

    def start(self) -> None:
        self.dns = NxDomainResolver()
        self._write_config()
        if self.bayes:
            self._start_redis()
        self._start_rspamd()

    def _start_redis(self) -> None:
        self.redis = subprocess.Popen(
            [
                "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir / "db"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.redis_port)

    def _start_rspamd(self) -> None:
        cmd = [
            "rspamd", "-f", "-c", "/etc/rspamd/rspamd.conf",
            "--var", f"LOCAL_CONFDIR={self.dir / 'local'}",
            "--var", f"RUNDIR={self.dir / 'run'}",
            "--var", f"DBDIR={self.dir / 'db'}",
            "--var", f"LOGDIR={self.dir / 'log'}",
        ]
        HS_CACHE.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(HS_CACHE, "_rspamd", "_rspamd")
            shutil.chown(self.dir, "_rspamd", "_rspamd")
            for path in self.dir.rglob("*"):
                shutil.chown(path, "_rspamd", "_rspamd")
            cmd += ["-u", "_rspamd", "-g", "_rspamd"]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                raise RuntimeError(f"rspamd exited with {self.proc.returncode}:\n{out}\n{self.log()}")
            try:
                ok = requests.get(self.url + "/ping", timeout=1).ok and requests.get(
                    self.controller_url + "/ping", timeout=1
                ).ok
                if ok:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"rspamd did not come up:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        path = self.dir / "log" / "rspamd.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        if self.redis and self.redis.poll() is None:
            self.redis.terminate()
            self.redis.wait(timeout=10)
        if self.dns:
            self.dns.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RspamdInstance:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
