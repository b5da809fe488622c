"""``aliasd lookupd`` as a real process with the real Postfix as its client: postmap over
socketmap and tcp_table, a private Postfix smtpd driven with swaks relaying to a capture
server, freshness across two lookupd processes, catch-all creation, and a database
outage (a TCP proxy in front of PostgreSQL that we stop) answered with 451."""

from __future__ import annotations

import contextlib
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from aliasd.config import load_settings
from aliasd.core import aliases as core
from aliasd.db import Database
from aliasd.models import Alias
from tests.harness.cli import settings_env
from tests.harness.net import free_port, wait_for_port
from tests.harness.postfix import (
    CaptureServer,
    PostfixInstance,
    postmap,
    postmap_query,
    smtp_reply_codes,
    swaks,
)

pytestmark = pytest.mark.postfix

GATE = r"[a-z0-9-]+(\.[a-z0-9-]+)+"  # catch-all only for host-name-like local parts


def wait_until(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> float:
    """Poll ``check`` every 20 ms; return the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not true after {timeout}s: {what}")
        time.sleep(0.02)
    return time.monotonic() - started


class Lookupd:
    """One ``aliasd lookupd`` process on fresh loopback ports."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        ports: tuple[int, int] | None = None,
        descriptor_limit: int | None = None,
    ) -> None:
        self.sm_port, self.tcp_port = ports or (free_port(), free_port())
        limit = descriptor_limit
        self.log_path = log_path
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aliasd", "lookupd",
             "--socketmap", f"127.0.0.1:{self.sm_port}", "--tcp", f"127.0.0.1:{self.tcp_port}"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
            if limit else None,
        )  # fmt: skip
        wait_for_port(self.sm_port, timeout=20)
        wait_for_port(self.tcp_port, timeout=20)

    @property
    def sm(self) -> str:
        return f"socketmap:inet:127.0.0.1:{self.sm_port}:virtual"

    @property
    def tcp(self) -> str:
        return f"tcp:127.0.0.1:{self.tcp_port}"

    def wait_loaded(self, domain: str = "d.example") -> None:
        wait_until(lambda: postmap_query(domain, self.sm)[0] == 0, 20, f"lookupd serving {domain}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def lookupd_env(settings, **extra: str) -> dict[str, str]:
    env = settings_env(settings)
    env.update(ALIASD_LOOKUP_SYNC_INTERVAL="0.1", **extra)
    return env


@pytest.fixture
def setup_cli(database, aliasd_cli):
    """Users, domains and aliases (made through core, which the CLI calls, for speed);
    the returned real CLI is what the tests change things with."""
    with database.session() as s:
        bob = core.create_user(s, "bob", "bob@real.example")
        core.create_domain(s, "d.example", bob)
        core.create_domain(s, "c.example", bob, catch_all="create", catch_all_regex=GATE,
                           catch_all_max_per_hour=2)  # fmt: skip
        core.create_alias(s, "github.com@d.example", bob, site="github.com")
        core.create_alias(s, "multi@d.example", bob,
                          destinations=["one@real.example", "two@real.example"])  # fmt: skip
        core.set_state(s, core.create_alias(s, "gone@d.example", bob), "burned")
    return aliasd_cli


@pytest.fixture
def lookupd_pair(setup_cli, settings, tmp_path) -> Iterator[tuple[Lookupd, Lookupd]]:
    """Two lookupd processes sharing one database, like two MX hosts."""
    first = Lookupd(lookupd_env(settings), tmp_path / "lookupd-1.log")
    second = Lookupd(lookupd_env(settings), tmp_path / "lookupd-2.log")
    try:
        first.wait_loaded()
        second.wait_loaded()
        yield first, second
    finally:
        first.stop()
        second.stop()


def open_idle_connections(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(sock)
    return socks


def test_many_idle_connections_past_the_descriptor_limit_do_not_stop_lookups(
    setup_cli, settings, tmp_path
):
    """Postfix processes keep connections open; far more of them than the process may
    have descriptors for must not starve new lookups."""
    log_path = tmp_path / "lookupd.log"
    lookupd = Lookupd(lookupd_env(settings), log_path, descriptor_limit=256)
    socks: list[socket.socket] = []
    try:
        lookupd.wait_loaded()
        socks = open_idle_connections(lookupd.sm_port, 400)
        for _ in range(20):
            code, out, err = postmap_query("github.com@d.example", lookupd.sm)
            assert (code, out.strip(), err) == (0, "bob@real.example", ""), err
        log = log_path.read_text()
        assert "at most 192 connections" in log
        assert log.count("connection cap of 192 reached") == 1, log  # once per interval
    finally:
        for sock in socks:
            sock.close()
        lookupd.stop()


def test_a_cap_above_the_descriptor_limit_is_lowered_and_said(setup_cli, settings, tmp_path):
    log_path = tmp_path / "lookupd.log"
    env = lookupd_env(settings, ALIASD_LOOKUP_MAX_CONNECTIONS="5000")
    lookupd = Lookupd(env, log_path, descriptor_limit=128)
    socks: list[socket.socket] = []
    try:
        lookupd.wait_loaded()
        socks = open_idle_connections(lookupd.sm_port, 200)
        code, out, err = postmap_query("github.com@d.example", lookupd.sm)
        assert (code, out.strip()) == (0, "bob@real.example"), err
        log = log_path.read_text()
        assert "lookup_max_connections 5000 is more than the descriptor limit allows" in log
        assert "at most 64 connections" in log
    finally:
        for sock in socks:
            sock.close()
        lookupd.stop()


def batch(keys: list[str], spec: str) -> dict[str, str]:
    """One postmap process, one connection, many keys: found keys → values."""
    proc = postmap("-q", "-", spec, input="".join(k + "\n" for k in keys))
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stderr == "", proc.stderr
    return dict(line.split("\t", 1) for line in proc.stdout.splitlines())


def test_postmap_answers_and_changes_show_within_a_second(lookupd_pair, setup_cli):
    one, two = lookupd_pair
    found = {
        "github.com@d.example": "bob@real.example",
        "GitHub.COM+news@D.Example": "bob@real.example",
        "multi@d.example": "one@real.example,two@real.example",
        "d.example": "managed",
        "C.Example": "managed",
    }
    missing = ["gone@d.example", "nobody@d.example", "bob@real.example", "one@real.example",
               "real.example", "other.example", "a@@d.example", "@d.example",
               "srs0=abcd=xy=shop.example=news@c.example", "plainword@c.example"]  # fmt: skip
    for spec in (one.sm, one.tcp, two.sm, two.tcp):
        assert batch([*found, *missing] * 3, spec) == found
    assert postmap_query("bad key@d.example", one.tcp)[:2] == (1, "")

    # Changes through the CLI reach both processes within a second.
    setup_cli("alias", "burn", "github.com@d.example")
    setup_cli("alias", "add", "fresh@d.example", "--owner", "bob")
    for proc in (one, two):
        # A poll may fall between the two commits: wait for both, each within a second.
        took = wait_until(lambda p=proc: postmap_query("github.com@d.example", p.sm)[0] == 1, 1.0,
                          "burn seen")  # fmt: skip
        assert took < 1.0
        took = wait_until(
            lambda p=proc: postmap_query("fresh@d.example", p.tcp)[:2] == (0, "bob@real.example"),
            1.0, "new alias seen")  # fmt: skip
        assert took < 1.0

    # Catch-all: the first query creates the alias; the other process learns it.
    assert postmap_query("News.Shop.example+x@c.example", one.sm)[:2] == (0, "bob@real.example")
    listed = setup_cli("alias", "list", "--search", "news.shop").stdout
    assert "news.shop.example@c.example\tactive\tnews.shop.example\tbob@real.example" in listed
    wait_until(lambda: postmap_query("news.shop.example@c.example", two.tcp)[0] == 0, 1.0)
    assert postmap_query("plainword@c.example", one.sm)[:2] == (1, "")  # regex gate
    assert postmap_query("second.example@c.example", two.sm)[:2] == (0, "bob@real.example")
    status, _out, err = postmap_query("third.example@c.example", one.sm)  # cap: 2 per hour
    assert status == 1 and "temporary error" in err and "cap" in err
    assert "third.example" not in setup_cli("alias", "list").stdout


def test_the_longest_destination_list_an_alias_may_have_reaches_postfix_whole(
        lookupd_pair, setup_cli, database):
    """Postfix reads at most 4,096 bytes of a tcp_table reply, and '%' takes three there:
    core refuses a list that could not reach Postfix whole (its mail would be deferred
    for ever), and the longest one it allows is answered by both tables."""
    first, _second = lookupd_pair
    per = (core.MAX_DESTINATIONS_BYTES + 1) // core.MAX_DESTINATIONS - 1  # with its comma
    longest = [f"{i:02d}%{'x' * (per - 3 - len('@real.example'))}@real.example"
               for i in range(core.MAX_DESTINATIONS)]
    assert len(",".join(longest)) <= core.MAX_DESTINATIONS_BYTES
    with database.session() as s:
        bob = core.get_user(s, "bob")
        core.create_alias(s, "many@d.example", bob, destinations=longest)
        with pytest.raises(core.AliasdError, match="at most 20 destinations"):
            core.create_alias(s, "more@d.example", bob,
                              destinations=[*longest[:-1], "a@real.example", "b@real.example"])
        with pytest.raises(core.AliasdError, match="too long together"):
            core.set_destinations(s, core.get_alias(s, "multi@d.example"),
                                  [d.replace("@", "y@") for d in longest])
    expected = ",".join(longest)
    for table in (first.sm, first.tcp):
        wait_until(lambda table=table: postmap_query("many@d.example", table)[0] == 0, 10,
                   f"{table} answering the new alias")
        assert postmap_query("many@d.example", table) == (0, expected, ""), table


def test_a_backtracking_prone_gate_cannot_stall_lookups(setup_cli, settings, tmp_path):
    """The text a gate reads is whatever a sender puts before the @. With a gate an admin
    might well write, a backtracking engine takes longer with each character (minutes for
    40); the lookup server answers at once, and answers the next query too."""
    setup_cli("domain", "set", "c.example", "--catch-all-regex", r"([a-z0-9]+\.?)+",
              "--max-per-hour", "-1")  # fmt: skip
    lookupd = Lookupd(lookupd_env(settings), tmp_path / "lookupd.log")
    try:
        lookupd.wait_loaded()
        started = time.monotonic()
        assert postmap_query("a" * 60 + "!@c.example", lookupd.sm)[:2] == (1, "")
        assert postmap_query("b" * 60 + "_@c.example", lookupd.tcp)[:2] == (1, "")
        assert time.monotonic() - started < 5
        assert postmap_query("shop.example@c.example", lookupd.sm)[:2] == (0, "bob@real.example")
    finally:
        lookupd.stop()
    # a gate only a backtracking engine runs is refused, saying why
    refused = setup_cli("domain", "set", "c.example", "--catch-all-regex", r"(?!www)[a-z.]+",
                        check=False)  # fmt: skip
    assert refused.returncode != 0 and "look-arounds" in refused.stderr


class Mta:
    """A private Postfix wired once to lookupd's (fixed) ports, so tests start their own
    lookupd on those ports and never pay for a ``postfix reload``. The main smtpd and
    cleanup use socketmap; a second smtpd (``tcp_port``) and its own cleanup use tcp_table.
    ``max_use = 1``: every SMTP session and message gets fresh Postfix processes, so no
    connection to a previous test's lookupd lingers."""

    def __init__(self) -> None:
        # Not under pytest's basetemp: every pytest session resets /tmp/pytest-of-<user>
        # to mode 0700, which would lock the postfix user out of a running queue.
        self.base = tempfile.mkdtemp(prefix="aliasd-lookup-postfix-")
        self.lookupd_ports = (free_port(), free_port())
        self.sm = f"socketmap:inet:127.0.0.1:{self.lookupd_ports[0]}:virtual"
        self.tcp = f"tcp:127.0.0.1:{self.lookupd_ports[1]}"
        self.capture = CaptureServer()
        self.capture.start()
        self.pf = PostfixInstance(self.base, relay_port=self.capture.port, main_cf={
            "max_use": "1", "virtual_alias_domains": self.sm, "virtual_alias_maps": self.sm,
        })  # fmt: skip
        self.tcp_smtp_port = free_port()
        service = f"127.0.0.1:{self.tcp_smtp_port}"
        cf = ["postconf", "-c", str(self.pf.config_dir)]
        for args in (
            ["-M", f"{service}/inet={service} inet n - n - - smtpd"],
            ["-M", "cleanuptcp/unix=cleanuptcp unix n - n - 0 cleanup"],
            ["-P", f"{service}/inet/cleanup_service_name=cleanuptcp"],
            *(["-P", f"{svc}/{name}={self.tcp}"] for svc in (f"{service}/inet", "cleanuptcp/unix")
              for name in ("virtual_alias_domains", "virtual_alias_maps")),
        ):  # fmt: skip
            subprocess.run([*cf, *args], check=True, capture_output=True)
        self.pf.start()
        wait_for_port(self.tcp_smtp_port)

    def lookupd(self, env: dict[str, str], log_path: Path) -> Lookupd:
        return Lookupd(env, log_path, self.lookupd_ports)

    def stop(self) -> None:
        self.pf.stop()
        self.capture.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def mta() -> Iterator[Mta]:
    mta = Mta()
    try:
        yield mta
    finally:
        mta.stop()


def delivered_to(capture: CaptureServer, marker: str, timeout: float = 20) -> list[str]:
    msg = capture.wait_for(lambda m: marker in m.text, timeout=timeout)
    return msg.rcpt_tos


def test_smtp_accepts_live_aliases_and_refuses_the_rest(mta, setup_cli, settings, tmp_path):
    pf, capture = mta.pf, mta.capture
    with Database(settings.effective_database_url).session() as s:
        core.create_domain(s, "one.example", core.get_user(s, "bob"), catch_all="create",
                           catch_all_max_per_hour=1)  # fmt: skip
    lookupd = mta.lookupd(lookupd_env(settings), tmp_path / "lookupd.log")
    try:
        lookupd.wait_loaded()
        for port, marker in ((pf.smtp_port, "via-socketmap"), (mta.tcp_smtp_port, "via-tcp")):
            res = swaks(port, to="GitHub.COM+News@D.Example", body=marker)
            assert res.returncode == 0, res.stdout + res.stderr
            assert delivered_to(capture, marker) == ["bob@real.example"]
        res = swaks(mta.tcp_smtp_port, to="gone@d.example", body="refused")
        assert "550" in smtp_reply_codes(res.stdout), res.stdout

        res = swaks(pf.smtp_port, to="multi@d.example", body="multi-dest")
        assert res.returncode == 0, res.stdout
        assert sorted(delivered_to(capture, "multi-dest")) == ["one@real.example",
                                                                "two@real.example"]  # fmt: skip
        for rcpt in ("nobody@d.example", "gone@d.example", "plainword@c.example"):
            res = swaks(pf.smtp_port, to=rcpt, body="refused")
            assert res.returncode != 0
            assert "550" in smtp_reply_codes(res.stdout), res.stdout
            assert "User unknown in virtual alias table" in res.stdout

        # Catch-all: the first mail creates the alias; past the hourly cap → 451.
        res = swaks(pf.smtp_port, to="shop.example@one.example", body="first-mail")
        assert res.returncode == 0, res.stdout
        assert delivered_to(capture, "first-mail") == ["bob@real.example"]
        assert "shop.example@one.example\tactive" in setup_cli("alias", "list").stdout
        res = swaks(pf.smtp_port, to="other.example@one.example", body="capped")
        assert res.returncode != 0
        assert "451" in smtp_reply_codes(res.stdout), res.stdout
    finally:
        lookupd.stop()


class TcpProxy:
    """A TCP forwarder we can stop (refusing and cutting connections) and start again,
    standing in for a database server that goes away."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        if self.listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would leave
            # the listening socket alive until that accept() returned.
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            self.listener = None
        with self.lock:
            for conn in self.conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self.conns.clear()


def test_database_down_answers_451_and_mail_goes_through_once_back(mta, request, tmp_path):
    pg = request.getfixturevalue("_postgres")
    pg.clean()
    database = Database(pg.url)
    with database.session() as s:
        bob = core.create_user(s, "bob", "bob@real.example")
        core.create_domain(s, "d.example", bob)
        core.create_alias(s, "github.com@d.example", bob)
    database.dispose()
    proxy = TcpProxy(5432)
    proxy.start()
    url = pg.url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    assert url != pg.url
    env = settings_env(load_settings(environ={}, data_dir=str(tmp_path / "data"),
                                     database_url=url, env="development", secret_key="t"))
    env.update(ALIASD_LOOKUP_SYNC_INTERVAL="0.1", ALIASD_LOOKUP_MAX_STALENESS="1",
               ALIASD_DB_TIMEOUT="1")  # fmt: skip
    pf, capture = mta.pf, mta.capture
    lookupd = mta.lookupd(env, tmp_path / "lookupd.log")
    try:
        lookupd.wait_loaded()
        res = swaks(pf.smtp_port, to="github.com@d.example", body="before-outage")
        assert res.returncode == 0, res.stdout
        delivered_to(capture, "before-outage")

        proxy.stop()
        wait_until(lambda: "query error" in postmap_query("github.com@d.example", lookupd.sm)[2],
                   10, "TEMP while the database is away")  # fmt: skip
        for spec in (lookupd.sm, lookupd.tcp):
            for key in ("github.com@d.example", "nobody@d.example", "d.example"):
                status, _out, err = postmap_query(key, spec)
                assert status == 1 and "query error" in err, (spec, key, err)  # never NOTFOUND
        res = swaks(pf.smtp_port, to="github.com@d.example", body="during-outage")
        assert res.returncode != 0
        codes = smtp_reply_codes(res.stdout)
        assert "451" in codes and "550" not in codes, res.stdout
        assert "Temporary lookup failure" in res.stdout

        proxy.start()
        wait_until(lambda: postmap_query("github.com@d.example", lookupd.sm)[0] == 0, 15,
                   "lookupd recovers")  # fmt: skip
        res = swaks(pf.smtp_port, to="github.com@d.example", body="during-outage retried")
        assert res.returncode == 0, res.stdout
        assert delivered_to(capture, "during-outage retried") == ["bob@real.example"]

        # lookupd started while the database is away: it runs, answers TEMP, then serves.
        lookupd.stop()
        proxy.stop()
        lookupd = mta.lookupd(env, tmp_path / "lookupd-2.log")
        for key in ("github.com@d.example", "d.example"):
            status, _out, err = postmap_query(key, lookupd.sm)
            assert status == 1 and "not loaded" in err, err
        proxy.start()
        lookupd.wait_loaded()
        assert postmap_query("github.com@d.example", lookupd.tcp)[:2] == (0, "bob@real.example")
    finally:
        lookupd.stop()
        proxy.stop()
    with Database(pg.url).session() as s:  # the outage changed nothing
        assert s.scalar(select(Alias.state).where(Alias.address == "github.com@d.example")) == "active"
