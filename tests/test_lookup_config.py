"""``aliasd postfix-config`` prints main.cf lines that real Postfix accepts and that reach
a ``aliasd lookupd`` started with the same settings and no listen options."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time

from aliasd.config import load_settings
from aliasd.core import aliases as core
from aliasd.postfix.config_lines import postfix_table, render
from tests.harness.cli import settings_env
from tests.harness.net import free_port
from tests.harness.postfix import client_config_dir, postmap_query


def test_printed_lines_reach_lookupd_started_from_the_same_settings(database, aliasd_cli, tmp_path):
    with database.session() as s:
        bob = core.create_user(s, "bob", "bob@real.example")
        core.create_domain(s, "d.example", bob)
        core.create_alias(s, "github.com@d.example", bob)
    # Short path: unix socket paths are limited to ~107 bytes.
    sock_dir = tempfile.mkdtemp(prefix="aliasd-sock-")
    extra = {
        "ALIASD_LOOKUP_SOCKETMAP": f"unix:{sock_dir}/lookup.sock",
        "ALIASD_LOOKUP_TCP": f"127.0.0.1:{free_port()}",
    }
    printed = aliasd_cli("postfix-config", env_extra=extra).stdout
    active = dict(  # other features print their own sections; ours are virtual_alias_*
        line.split(" = ", 1) for line in printed.splitlines() if line.startswith("virtual_alias")
    )
    alternative = dict(
        line[1:].split(" = ", 1) for line in printed.splitlines() if line.startswith("#virtual_")
    )
    assert active == {
        "virtual_alias_domains": f"socketmap:unix:{sock_dir}/lookup.sock:virtual",
        "virtual_alias_maps": f"socketmap:unix:{sock_dir}/lookup.sock:virtual",
    }
    assert alternative["virtual_alias_maps"] == "tcp:" + extra["ALIASD_LOOKUP_TCP"]

    # Real postconf accepts every printed line (comments included, as a file would).
    cf = tmp_path / "etc"
    cf.mkdir()
    (cf / "main.cf").write_text((client_config_dir() / "main.cf").read_text() + printed)
    (cf / "master.cf").write_text((client_config_dir() / "master.cf").read_text())
    proc = subprocess.run(["postconf", "-c", str(cf), "-n", "virtual_alias_maps"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.strip() == f"virtual_alias_maps = {active['virtual_alias_maps']}"

    env = settings_env(load_settings(
        environ={}, data_dir=str(tmp_path / "data"), database_url=database.url,
        env="development", secret_key="t",
    ))  # fmt: skip
    env.update(extra)
    lookupd = subprocess.Popen([sys.executable, "-m", "aliasd", "lookupd"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        for table in (active["virtual_alias_maps"], alternative["virtual_alias_maps"]):
            deadline = time.monotonic() + 20  # process start and first load
            while postmap_query("d.example", table)[0] != 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert postmap_query("GitHub.com+x@d.example", table)[:2] == (0, "bob@real.example")
            assert postmap_query("nobody@d.example", table)[:2] == (1, "")
    finally:
        lookupd.terminate()
        lookupd.wait(10)
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_postfix_table_names():
    assert postfix_table("socketmap", "127.0.0.1:10031") == "socketmap:inet:127.0.0.1:10031:virtual"
    assert postfix_table("socketmap", "[::1]:7", "sender_access") == "socketmap:inet:[::1]:7:sender_access"
    assert postfix_table("tcp", "127.0.0.1:10032") == "tcp:127.0.0.1:10032"
    text = render(load_settings(environ={}, lookup_tcp="", lookup_socketmap="127.0.0.1:5"))
    assert "virtual_alias_maps = socketmap:inet:127.0.0.1:5:virtual" in text
    assert "tcp:" not in text
    text = render(load_settings(environ={}, lookup_socketmap="", lookup_tcp="127.0.0.1:6"))
    assert "\nvirtual_alias_maps = tcp:127.0.0.1:6" in text
