"""DKIM keys per managed domain: made when the domain is added (and by ``db upgrade``
for older domains), private files 0600, signatures that verify against the published
record through the tests' DNS server, rotation that keeps the old key published."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import dkim

from aliasd.mailauth import keys
from aliasd.mailauth.dns import DkimDns

MESSAGE = (
    b"From: Shop <news@shop.example>\r\nTo: a@example.net\r\nSubject: hello\r\n"
    b"Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@shop.example>\r\n\r\nbody\r\n"
)


def _publish(dns_server, key: keys.SigningKey) -> None:
    dns_server.add(key.dns_name, "TXT", key.dns_txt())


def test_adding_a_domain_creates_a_private_rsa_key(aliasd_cli, settings):
    aliasd_cli("user", "add", "bob", "--mailbox", "bob@real.example")
    out = aliasd_cli("domain", "add", "mail.example", "--owner", "bob").stderr
    assert "aliasd dns mail.example" in out
    (key,) = keys.signing_keys(settings, "mail.example")
    assert key.algorithm == keys.RSA and b"BEGIN RSA PRIVATE KEY" in key.private_key_pem
    files = list(Path(settings.effective_dkim_keys_dir, "mail.example").glob("*.pem"))
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    listed = aliasd_cli("dkim", "list").stdout
    assert f"mail.example\t{key.selector}\trsa-sha256" in listed and "signing" in listed


def test_db_upgrade_gives_existing_domains_keys_and_makes_the_srs_secret(aliasd_cli, settings):
    aliasd_cli("user", "add", "bob", "--mailbox", "bob@real.example")
    aliasd_cli("domain", "add", "old.example", "--owner", "bob")
    # as if the domain predated DKIM keys
    import shutil

    shutil.rmtree(settings.effective_dkim_keys_dir)
    out = aliasd_cli("db", "upgrade").stderr
    assert "DKIM key" in out and "old.example" in out
    assert "SRS secret created" in out
    secret = os.path.join(settings.data_dir, "srs_secrets")
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert "SRS secret created" not in aliasd_cli("db", "upgrade").stderr  # only once


def test_signature_verifies_with_the_published_record(tmp_path, dns_server):
    from aliasd.config import load_settings

    settings = load_settings(environ={}, data_dir=str(tmp_path), dns_resolver=dns_server.address,
                             dkim_ed25519=True)  # fmt: skip
    signing = keys.signing_keys(settings, "shop.example")
    assert [k.algorithm for k in signing] == [keys.RSA, keys.ED25519]
    for key in signing:
        _publish(dns_server, key)
    header = keys.dkim_sign(settings, "shop.example", MESSAGE, ["from", "to", "subject"])
    assert header is not None and header.count(b"DKIM-Signature:") == 2
    signed = header + MESSAGE
    d = dkim.DKIM(signed)
    assert d.verify(idx=0, dnsfunc=DkimDns(settings))
    assert d.verify(idx=1, dnsfunc=DkimDns(settings))


def test_rotation_signs_with_the_new_key_and_keeps_the_old_one_published(aliasd_cli, settings):
    aliasd_cli("user", "add", "bob", "--mailbox", "bob@real.example")
    aliasd_cli("domain", "add", "mail.example", "--owner", "bob")
    (old,) = keys.signing_keys(settings, "mail.example")
    out = aliasd_cli("dkim", "rotate", "mail.example", "--overlap-days", "3").stdout
    (new,) = keys.signing_keys(settings, "mail.example")
    assert new.selector != old.selector and new.selector in out
    assert f'{new.dns_name}. 3600 IN TXT "v=DKIM1; k=rsa; p=' in out
    published = keys.published_keys(settings, "mail.example")
    assert [k.selector for k in published] == [new.selector, old.selector]
    assert published[1].retire_after
    # with no overlap the rotated-out key is forgotten at once
    keys.rotate(settings, "mail.example", overlap_days=0)
    assert new.selector not in [k.selector for k in keys.published_keys(settings, "mail.example")]


def test_rotating_an_unknown_domain_says_so(aliasd_cli):
    proc = aliasd_cli("dkim", "rotate", "nowhere.example", check=False)
    assert proc.returncode == 1 and "not a managed domain" in proc.stderr


def test_a_name_that_cannot_be_a_domain_gets_no_key(tmp_path):
    from aliasd.config import load_settings

    settings = load_settings(environ={}, data_dir=str(tmp_path))
    assert keys.dkim_sign(settings, "../etc", MESSAGE, ["from"]) is None
    assert not (tmp_path / "etc").exists()


def test_srs_rotate_puts_a_new_secret_first_and_keeps_the_old_for_bounces(aliasd_cli, settings):
    from aliasd.mailauth import srs_secret

    aliasd_cli("db", "upgrade")
    (first,) = srs_secret.read_secrets(settings)
    assert "restart aliasd lookupd" in aliasd_cli("srs", "rotate").stdout
    new = srs_secret.read_secrets(settings)
    assert len(new) == 2 and new[1] == first and new[0] != first
    configured = aliasd_cli("srs", "rotate", check=False,
                            env_extra={"ALIASD_SRS_SECRETS": "from-config"})  # fmt: skip
    assert configured.returncode == 1 and "rotate it there" in configured.stderr


def test_keys_made_by_root_belong_to_the_data_directorys_owner(tmp_path):
    """`aliasd domain add` in a root shell; the milter runs as the data dir's owner."""
    import pwd

    from aliasd.config import load_settings
    from aliasd.mailauth import srs_secret

    assert os.geteuid() == 0  # the test machine runs tests as root
    nobody = pwd.getpwnam("nobody")
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, nobody.pw_uid, nobody.pw_gid)
    settings = load_settings(environ={}, data_dir=str(data))
    keys.signing_keys(settings, "mail.example")
    srs_secret.ensure_secret(settings)
    made = [p for p in data.rglob("*") if not p.name.endswith(".lock")]
    assert made and all(p.stat().st_uid == nobody.pw_uid for p in made), [
        (str(p), p.stat().st_uid) for p in made]


def test_a_rotation_or_a_key_file_replaced_by_hand_is_used_at_once(tmp_path):
    from aliasd.config import load_settings

    settings = load_settings(environ={}, data_dir=str(tmp_path))
    (first,) = keys.signing_keys(settings, "kept.example")
    assert keys.signing_keys(settings, "kept.example") == [first]  # kept between calls
    (rotated,) = keys.rotate(settings, "kept.example")
    assert keys.signing_keys(settings, "kept.example") == [rotated]
    # an admin restores another key file under the same name (cp -p: the backup's time)
    path = Path(settings.effective_dkim_keys_dir) / "kept.example" / f"{rotated.selector}.rsa.pem"
    path.write_bytes(first.private_key_pem)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    (now,) = keys.signing_keys(settings, "kept.example")
    assert now.private_key_pem == first.private_key_pem
