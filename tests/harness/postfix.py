"""A private, real Postfix for tests, and an SMTP capture server for what it relays.

Typical use (module-scoped fixture)::

    capture = CaptureServer()            # aiosmtpd on 127.0.0.1:<free port>
    capture.start()
    pf = PostfixInstance(tmp_dir, relay_port=capture.port, main_cf={
        "virtual_alias_domains": "example.net",
        "virtual_alias_maps": f"socketmap:inet:127.0.0.1:{port}:virtual",
    })
    pf.start()
    result = swaks(pf.smtp_port, to="github.com@example.net")
    assert result.returncode == 0
    msg = capture.wait_for(lambda m: "alice@real.example" in m.rcpt_tos)
    pf.stop(); capture.stop()

``postmap(...)`` runs Postfix's postmap against a private config directory, because a
fresh Debian machine with "No configuration" has no /etc/postfix/main.cf and postmap
refuses to run without one.

Everything listens on 127.0.0.1 only; Postfix writes its log to ``<dir>/maillog``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.net import free_port, wait_for_port

MAIN_CF_SOURCE = Path("/usr/share/postfix/main.cf.debian")
MASTER_CF_SOURCE = Path("/usr/share/postfix/master.cf.dist")


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kwargs)


def _postconf(config_dir: Path, settings: dict[str, str]) -> None:
    if not settings:
        return
    args = ["postconf", "-c", str(config_dir), "-e"]
    args += [f"{key}={value}" for key, value in settings.items()]
    proc = _run(args)
    if proc.returncode != 0:
        raise RuntimeError(f"postconf failed: {proc.stderr}")


_CONFIG_ONLY_DIR: Path | None = None
_config_lock = threading.Lock()


def client_config_dir() -> Path:
    """A minimal Postfix config directory for client tools (postmap, postconf)."""
    global _CONFIG_ONLY_DIR
    with _config_lock:
        if _CONFIG_ONLY_DIR is None:
            path = Path(f"/tmp/aliasd-postfix-client-{os.getpid()}")
            path.mkdir(exist_ok=True)
            shutil.copy(MAIN_CF_SOURCE, path / "main.cf")
            shutil.copy(MASTER_CF_SOURCE, path / "master.cf")
            _postconf(
                path,
                {
                    "maillog_file": str(path / "maillog"),
                    "maillog_file_prefixes": str(path),
                    "compatibility_level": "3.6",
                },
            )
            _CONFIG_ONLY_DIR = path
        return _CONFIG_ONLY_DIR


def postmap(*args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``postmap -c <private dir> ARGS``; e.g. ``postmap("-q", key, map_spec)``."""
    return subprocess.run(
        ["postmap", "-c", str(client_config_dir()), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def postmap_query(key: str, map_spec: str) -> tuple[int, str, str]:
    """(exit status, stdout stripped, stderr): status 0 found, 1 not found, other = error."""
    proc = postmap("-q", key, map_spec)
    return proc.returncode, proc.stdout.strip(), proc.stderr.strip()


class PostfixInstance:
    """A real Postfix (master, smtpd, cleanup, qmgr, smtp, ...) with its own queue and
    config directory, listening for SMTP on 127.0.0.1:<smtp_port> and relaying everything
    to 127.0.0.1:<relay_port> (a CaptureServer)."""

    def __init__(
        self,
        base_dir: Path | str,
        *,
        relay_port: int,
        smtp_port: int | None = None,
        main_cf: dict[str, str] | None = None,
    ) -> None:
        self.dir = Path(base_dir)
        self.config_dir = self.dir / "etc"
        self.queue_dir = self.dir / "spool"
        self.data_dir = self.dir / "lib"
        self.log_file = self.dir / "maillog"
        self.smtp_port = smtp_port or free_port()
        self.relay_port = relay_port
        self.name = f"postfix-aliasd-{uuid.uuid4().hex[:8]}"
        self.running = False
        self._setup(main_cf or {})

    # --- configuration -------------------------------------------------------------
    def _setup(self, extra: dict[str, str]) -> None:
        for path in (self.config_dir, self.queue_dir, self.data_dir):
            path.mkdir(parents=True, exist_ok=True)
        # The test's tmp_path is 0700 root; Postfix daemons run as user postfix and
        # must reach the queue and data directories through it.
        for parent in [self.dir, *self.dir.parents]:
            if str(parent) in ("/", "/tmp"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o711)
        shutil.chown(self.data_dir, "postfix", "postfix")
        shutil.copy(MAIN_CF_SOURCE, self.config_dir / "main.cf")
        master = MASTER_CF_SOURCE.read_text()
        master = re.sub(
            r"^smtp(\s+)inet", f"127.0.0.1:{self.smtp_port}\\1inet", master, count=1, flags=re.M
        )
        (self.config_dir / "master.cf").write_text(master)
        # No chroot: the private queue directory has no copy of /etc files.
        proc = _run(["postconf", "-c", str(self.config_dir), "-F", "*/*/chroot = n"])
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "multi_instance_name": self.name,
            "syslog_name": self.name,
            "maillog_file_prefixes": str(self.dir),
            "maillog_file": str(self.log_file),
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": "mx.aliasd.test",
            "mydomain": "aliasd.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "relayhost": f"[127.0.0.1]:{self.relay_port}",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "disable_dns_lookups": "yes",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "smtpd_banner": "$myhostname ESMTP",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "smtpd_helo_required": "no",
            "biff": "no",
            "append_dot_mydomain": "no",
            "readme_directory": "no",
            # Retry deferred mail quickly so "goes through once it is back" tests are fast.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "maximal_queue_lifetime": "1h",
            "bounce_queue_lifetime": "1h",
            "smtpd_error_sleep_time": "0",
            "smtpd_soft_error_limit": "1000",
            "smtpd_hard_error_limit": "1000",
            "in_flow_delay": "0",
            "smtp_connect_timeout": "5s",
            "smtputf8_enable": "no",
        }
        settings.update(extra)
        _postconf(self.config_dir, settings)

    def postconf(self, **settings: str) -> None:
        """Change main.cf settings; reloads a running instance."""
        _postconf(self.config_dir, {k: str(v) for k, v in settings.items()})
        if self.running:
            self.reload()

    def postconf_value(self, name: str) -> str:
        proc = _run(["postconf", "-c", str(self.config_dir), "-h", name])
        return proc.stdout.strip()

    # --- lifecycle -----------------------------------------------------------------
    def _postfix(self, *args: str) -> subprocess.CompletedProcess:
        return _run(["postfix", "-c", str(self.config_dir), *args])

    def start(self) -> None:
        proc = self._postfix("start")
        if proc.returncode != 0:
            raise RuntimeError(f"postfix start failed:\n{proc.stderr}\n{self.maillog()}")
        self.running = True
        wait_for_port(self.smtp_port, timeout=20)

    def reload(self) -> None:
        proc = self._postfix("reload")
        if proc.returncode != 0:
            raise RuntimeError(f"postfix reload failed:\n{proc.stderr}")
        # Let the master restart its children before tests go on.
        time.sleep(0.3)

    def _master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if not self.running:
            return
        pid = self._master_pid()
        self._postfix("stop")
        self.running = False
        deadline = time.monotonic() + 10
        while pid and Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid and Path(f"/proc/{pid}").exists():
            self._postfix("abort")

    def __enter__(self) -> PostfixInstance:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- queue and log ---------------------------------------------------------------
    def flush(self) -> None:
        """Ask the queue manager to retry deferred mail now."""
        _run(["postqueue", "-c", str(self.config_dir), "-f"])

    def queue_ids(self) -> list[str]:
        proc = _run(["postqueue", "-c", str(self.config_dir), "-j"])
        return re.findall(r'"queue_id":\s*"([0-9A-Za-z]+)"', proc.stdout)

    def maillog(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 15.0) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.maillog())
            if match:
                return match
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pattern!r} not in maillog:\n{self.maillog()[-4000:]}")
            time.sleep(0.05)


# --- sending ---------------------------------------------------------------------------
def swaks(
    port: int,
    *,
    to: str | Iterable[str],
    sender: str = "news@shop.example",
    header: dict[str, str] | None = None,
    body: str = "Hello from the aliasd tests.",
    data: str | None = None,
    extra: list[str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess:
    """Send one message with swaks to 127.0.0.1:port. ``data`` (a whole RFC 822 message,
    ``\\n`` line ends) overrides header/body. Output shows the SMTP dialog; swaks exits
    non-zero when the server refuses (e.g. 23/24/25 for RCPT/DATA refusals)."""
    recipients = [to] if isinstance(to, str) else list(to)
    cmd = [
        "swaks", "--server", "127.0.0.1", "--port", str(port),
        "--from", sender, "--to", ",".join(recipients),
        "--helo", "sender.example", "--suppress-data", "--hide-informational",
    ]  # fmt: skip
    if data is not None:
        cmd += ["--data", "-"]
    else:
        for name, value in (header or {}).items():
            cmd += ["--header", f"{name}: {value}"]
        cmd += ["--body", body]
    cmd += extra or []
    return subprocess.run(
        cmd, input=data, capture_output=True, text=True, timeout=timeout
    )


def smtp_reply_codes(swaks_output: str) -> list[str]:
    """The 3-digit codes of server replies in a swaks transcript, in order."""
    # swaks marks replies "<-", TLS ones "<~", and refusals "<**" / "<~*".
    return re.findall(r"^<[-~]?\*{0,2}\s*(\d{3})[ -]", swaks_output, flags=re.M)


# --- capture server ----------------------------------------------------------------------
@dataclass
class CapturedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    received_at: float = field(default_factory=time.time)

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def header(self, name: str) -> str | None:
        import email

        msg = email.message_from_bytes(self.data)
        return msg.get(name)


class CaptureServer:
    """An aiosmtpd SMTP server on 127.0.0.1 recording every envelope it receives.
    ``reject_with`` (e.g. "550 5.1.1 no such user") makes it refuse RCPT for addresses
    for which the predicate is true, to produce bounces."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[CapturedMessage] = []
        self._cond = threading.Condition()
        self._controller = None
        self.reject_rcpt: Callable[[str], str | None] = lambda _addr: None

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        server = self

        class Handler:
            async def handle_RCPT(self, srv, session, envelope, address, rcpt_options):
                refusal = server.reject_rcpt(address)
                if refusal:
                    return refusal
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, srv, session, envelope):
                msg = CapturedMessage(
                    mail_from=envelope.mail_from,
                    rcpt_tos=list(envelope.rcpt_tos),
                    data=envelope.original_content or envelope.content,
                )
                with server._cond:
                    server.messages.append(msg)
                    server._cond.notify_all()
                return "250 OK captured"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def wait_for(
        self, predicate: Callable[[CapturedMessage], bool] = lambda _m: True, timeout: float = 20.0
    ) -> CapturedMessage:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self.messages:
                    if predicate(msg):
                        return msg
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = [(m.mail_from, m.rcpt_tos) for m in self.messages]
                    raise TimeoutError(f"no matching message captured; got {got}")
                self._cond.wait(remaining)

    def __enter__(self) -> CaptureServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
