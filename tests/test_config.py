"""Settings: defaults ← TOML file (ALIASD_CONFIG) ← ALIASD_* environment, validated once."""

from __future__ import annotations

import pytest

from aliasd import config as config_module
from aliasd.config import SettingsError, load_settings


def test_defaults_put_sqlite_in_the_data_dir(tmp_path):
    settings = load_settings(environ={"ALIASD_DATA_DIR": str(tmp_path)})
    assert settings.effective_database_url == f"sqlite:///{tmp_path}/aliasd.db"
    assert settings.recipient_delimiter == "+"
    assert settings.effective_blocklist_file == f"{tmp_path}/header_checks"


def test_environment_overrides_the_toml_file(tmp_path):
    config = tmp_path / "aliasd.toml"
    config.write_text(
        '[aliasd]\nrecipient_delimiter = "-"\naction_reject = 20.0\n'
        'srs_exclude_domains = ["a.example", "b.example"]\n'
    )
    settings = load_settings(
        environ={"ALIASD_CONFIG": str(config), "ALIASD_ACTION_REJECT": "18.5",
                 "ALIASD_SPF_ENABLED": "yes"}
    )
    assert settings.recipient_delimiter == "-"
    assert settings.action_reject == 18.5
    assert settings.spf_enabled is True
    assert settings.srs_exclude_domains == ["a.example", "b.example"]


def test_list_settings_from_the_environment_are_comma_separated():
    settings = load_settings(
        environ={"ALIASD_SRS_DOMAIN": "example.net", "ALIASD_SRS_SECRETS": "new, old"}
    )
    assert settings.srs_secrets == ["new", "old"]


def test_a_command_from_the_environment_reads_as_a_command_line():
    settings = load_settings(environ={
        "ALIASD_SENDMAIL_COMMAND": "/usr/sbin/sendmail -t -i",
        "ALIASD_POSTSUPER_COMMAND": "sudo -n '/usr/sbin/postsuper'",
        "ALIASD_POSTQUEUE_COMMAND": "sudo,-n,postqueue",  # the comma form still reads
    })
    assert settings.sendmail_command == ["/usr/sbin/sendmail", "-t", "-i"]
    assert settings.postsuper_command == ["sudo", "-n", "/usr/sbin/postsuper"]
    assert settings.postqueue_command == ["sudo", "-n", "postqueue"]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ALIASD_ACTION_REJECT": "lots"}, "action_reject"),
        ({"ALIASD_SPF_ENABLED": "maybe"}, "spf_enabled"),
        ({"ALIASD_ACTION_GREYLIST": "30"}, "thresholds must rise"),
        ({"ALIASD_RECIPIENT_DELIMITER": "ab"}, "recipient_delimiter"),
        ({"ALIASD_SCANNER_BACKEND": "spamassassin"}, "scanner_backend"),
        ({"ALIASD_LDAP_RECHECK_INTERVAL": "-1"}, "ldap_recheck_interval"),
        ({"ALIASD_LDAP_RECHECK_INTERVAL": "nan"}, "ldap_recheck_interval"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(environ, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(environ=environ)


def test_unknown_key_or_broken_toml_file_is_reported(tmp_path):
    config = tmp_path / "aliasd.toml"
    config.write_text("recipient_delimter = '+'\n")
    with pytest.raises(SettingsError, match="unknown setting 'recipient_delimter'"):
        load_settings(environ={"ALIASD_CONFIG": str(config)})
    config.write_text("this is [not toml\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(environ={"ALIASD_CONFIG": str(config)})
    with pytest.raises(SettingsError, match="cannot read config file"):
        load_settings(environ={"ALIASD_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(("fqdn", "host", "expected"), [
    ("mx1.example.net", "mx1", "mx1.example.net"),  # the fully qualified name first
    ("localhost", "mx1", "mx1"),  # /etc/hosts mapping the name to 127.0.0.1 says localhost
    ("localhost.localdomain", "", "localhost.localdomain"),  # nothing better known
])
def test_default_authserv_id_is_this_hosts_own_name(monkeypatch, fqdn, host, expected):
    monkeypatch.setattr(config_module.socket, "getfqdn", lambda: fqdn)
    monkeypatch.setattr(config_module.socket, "gethostname", lambda: host)
    config_module.this_host_name.cache_clear()
    try:
        assert config_module.Settings().effective_authserv_id == expected
        assert config_module.Settings(authserv_id="mail.example.org").effective_authserv_id == (
            "mail.example.org")
    finally:
        config_module.this_host_name.cache_clear()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        # what a hand-edited file gets wrong: each is named, never read as something else
        ('database_url = ["postgresql://db/aliasd"]\n', "database_url.*list"),
        ("milter_workers = 2.5\n", "milter_workers.*2.5"),
        ("lookup_idle_timeout = true\n", "lookup_idle_timeout"),
        ('srs_exclude_domains = [["a.example"]]\n', "srs_exclude_domains"),
        ("[env]\nproduction = true\n", "env.*table"),
        ("aliasd = 3\n", r"\[aliasd\] must be a table"),
        ('data_dir = "/srv/aliasd"\n[aliasd]\nenv = "development"\n', "unknown setting 'data_dir'"),
        ('[aliasd]\nenv = "development"\n[lookup]\nlookup_tcp = ""\n', "unknown setting 'lookup'"),
    ],
)
def test_a_setting_of_the_wrong_type_or_place_in_the_toml_file_is_refused(tmp_path, toml, message):
    config = tmp_path / "aliasd.toml"
    config.write_text(toml)
    with pytest.raises(SettingsError, match=message):
        load_settings(environ={"ALIASD_CONFIG": str(config)})


def test_a_toml_file_that_is_not_utf8_is_refused_with_a_clear_message(tmp_path):
    config = tmp_path / "aliasd.toml"
    config.write_bytes('env = "d\u00e9veloppement"\n'.encode("latin-1"))
    with pytest.raises(SettingsError, match="not valid TOML.*UTF-8"):
        load_settings(environ={"ALIASD_CONFIG": str(config)})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ALIASD_DATABASE_URL": "aliasd.db"}, "database_url"),
        ({"ALIASD_DATABASE_URL": "nosuchengine://db/aliasd"}, "database_url"),
        # PostgreSQL refuses a negative statement_timeout: every connection would fail,
        # reported as "database unreachable"
        ({"ALIASD_DB_TIMEOUT": "-1"}, "db_timeout"),
        ({"ALIASD_DB_TIMEOUT": "0"}, "db_timeout"),
        ({"ALIASD_LOOKUP_SYNC_INTERVAL": "0"}, "lookup_sync_interval"),
        ({"ALIASD_LOOKUP_MAX_STALENESS": "-5"}, "lookup_max_staleness"),
        ({"ALIASD_LOOKUP_IDLE_TIMEOUT": "0"}, "lookup_idle_timeout"),
        ({"ALIASD_LOOKUP_MAX_CONNECTIONS": "-1"}, "lookup_max_connections"),
        ({"ALIASD_MILTER_TIMEOUT": "0"}, "milter_timeout"),
        ({"ALIASD_DB_TIMEOUT": "nan"}, "db_timeout"),
    ],
)
def test_a_database_url_or_time_limit_that_cannot_work_is_refused(environ, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(environ=environ)


def test_a_misspelt_environment_variable_is_named_with_the_setting_it_resembles(caplog):
    """A typo in aliasd.env (ALIASD_DATABSE_URL) used to be ignored without a word, and
    every process quietly used the SQLite default instead of the shared database."""
    with caplog.at_level("WARNING", logger="aliasd.config"):
        settings = load_settings(environ={
            "ALIASD_DATABSE_URL": "postgresql+psycopg://aliasd@db/aliasd",
            "ALIASD_CONFIG": "",  # not a setting, but aliasd's own
            "ALIASD_TEST_PG_ADMIN_URL": "postgresql://x@y/z",  # the test harness's
            "ALIASD_ENV": "development",
        })
    assert settings.env == "development" and settings.database_url == ""
    assert [r.getMessage() for r in caplog.records] == [
        "ALIASD_DATABSE_URL is not an aliasd setting and is ignored "
        "(did you mean ALIASD_DATABASE_URL?)"
    ]


@pytest.mark.parametrize("name", ["lookup_socketmap", "lookup_tcp", "milter_listen", "web_listen"])
def test_a_listen_address_that_is_not_host_port_or_unix_path_is_refused(name):
    """Caught when the settings are read, by every command: 'aliasd postfix-config' printed
    a traceback for a milter_listen it could not parse."""
    with pytest.raises(SettingsError, match=f"{name}: 'localhost' is not HOST:PORT"):
        load_settings(environ={f"ALIASD_{name.upper()}": "localhost"})
    assert getattr(load_settings(environ={f"ALIASD_{name.upper()}": "unix:/run/x.sock"}),
                   name) == "unix:/run/x.sock"


def test_an_empty_data_dir_is_refused_not_read_as_the_current_directory(tmp_path, monkeypatch):
    """ALIASD_DATA_DIR= (a variable left blank, or set from an unset one) put the database
    and the secrets in whatever directory the process happened to start in."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match="data_dir must not be empty"):
        load_settings(environ={"ALIASD_DATA_DIR": ""})
    assert load_settings(environ={}).data_dir  # unset: the default


def test_a_sync_interval_the_staleness_limit_cannot_cover_is_refused():
    """lookupd answers TEMP once its copy is older than lookup_max_staleness; with polls
    further apart than that, a healthy database gave Postfix 451 for part of every
    interval (seen with a sync interval of 8 s: TEMP for about 3 s in 8)."""
    with pytest.raises(SettingsError, match="lookup_max_staleness .* lookup_sync_interval"):
        load_settings(environ={"ALIASD_LOOKUP_SYNC_INTERVAL": "8"})
    with pytest.raises(SettingsError, match="lookup_max_staleness .* lookup_sync_interval"):
        load_settings(environ={"ALIASD_LOOKUP_SYNC_INTERVAL": "3"})
    load_settings(environ={"ALIASD_LOOKUP_SYNC_INTERVAL": "8", "ALIASD_LOOKUP_MAX_STALENESS": "20"})
