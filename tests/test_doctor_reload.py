"""``aliasd doctor`` on the blocklist reload with the production setting
``blocklist_reload_command = ""``: content when the installed aliasd-postfix-reload.path
unit watches the blocklist file aliasd writes, a warning naming both fixes otherwise."""

from __future__ import annotations

from pathlib import Path

from aliasd.config import Settings, load_settings
from aliasd.doctor import reload_check
from aliasd.systemd_units import rendered_files


def _settings(data_dir: Path) -> Settings:
    return load_settings(environ={}, data_dir=str(data_dir), blocklist_reload_command="",
                         secret_key="t")


def _install_units(root: Path, settings: Settings) -> Path:
    """What `aliasd systemd --write ROOT` writes for ``settings``; the unit directory."""
    for target, content in rendered_files(settings, "/usr/bin").items():
        path = root / target.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root / "etc/systemd/system"


def test_doctor_is_content_when_the_reload_path_unit_watches_the_blocklist(tmp_path):
    settings = _settings(tmp_path / "data")
    check = reload_check(settings, unit_dirs=[str(_install_units(tmp_path, settings))])
    assert check.status == "ok", check.line()
    assert check.line() == ("ok   blocklist reload: aliasd-postfix-reload.path reloads Postfix "
                            f"when {tmp_path}/data/header_checks changes")


def test_doctor_warns_naming_both_fixes_when_nothing_reloads_postfix(tmp_path):
    check = reload_check(_settings(tmp_path / "data"), unit_dirs=[str(tmp_path / "empty")])
    assert check.status == "warn"
    assert "aliasd-postfix-reload.path is not installed" in check.line()
    assert "new blocks apply when Postfix restarts" in check.line()
    assert "systemctl enable --now aliasd-postfix-reload.path" in check.fix
    assert "set blocklist_reload_command" in check.fix


def test_doctor_warns_when_the_reload_path_unit_watches_another_data_dir(tmp_path):
    """Units written for the default data_dir do not notice a table written elsewhere."""
    unit_dir = _install_units(tmp_path, _settings(Path("/var/lib/aliasd")))
    check = reload_check(_settings(tmp_path / "data"), unit_dirs=[str(unit_dir)])
    assert check.status == "warn"
    assert (f"watches /var/lib/aliasd/header_checks, not {tmp_path}/data/header_checks"
            in check.line())
    assert "aliasd systemd --write /" in check.fix and "blocklist_reload_command" in check.fix
