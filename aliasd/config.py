"""Settings: built-in defaults, then an optional TOML file (``ALIASD_CONFIG``), then
``ALIASD_*`` environment variables. Read once per process through :func:`load_settings`;
nothing is read from the environment at import time."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import logging
import math
import os
import shlex
import socket
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aliasd.listen import ListenError, ListenSpec

ENV_PREFIX = "ALIASD_"
log = logging.getLogger(__name__)
DEFAULT_SECRET = "change-me"


class SettingsError(ValueError):
    """A setting is missing, malformed or contradicts another one."""


def _default_data_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/aliasd"
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(base, "aliasd")


def _is_localhost(name: str) -> bool:
    return name.lower().startswith("localhost")


def is_qualified_host_name(name: str) -> bool:
    """A name an MX record may point at: dotted, and not one of localhost's names."""
    return "." in name and not _is_localhost(name)


@functools.lru_cache(maxsize=1)
def this_host_name() -> str:
    """This host's fully qualified name, or failing that its plain name: never "localhost"
    when the host has a name of its own (getfqdn answers "localhost" where /etc/hosts maps
    the host name to 127.0.0.1 first). Looked up once: it is asked for every message."""
    fqdn = socket.getfqdn()
    if is_qualified_host_name(fqdn):
        return fqdn
    name = socket.gethostname()
    if name and not _is_localhost(name):
        return name
    return fqdn or "localhost"


@dataclass
class Settings:
    # storage
    data_dir: str = field(default_factory=_default_data_dir)
    database_url: str = ""  # empty: SQLite file in data_dir
    db_timeout: float = 5.0  # seconds a statement may take before callers see a failure

    # addresses
    recipient_delimiter: str = "+"

    # web
    env: str = "production"  # "production" refuses the default secret key
    secret_key: str = DEFAULT_SECRET
    web_listen: str = "127.0.0.1:8080"
    proxy_fix_hops: int = 0  # trusted reverse proxies in front of gunicorn
    login_rate_limit: int = 10  # failed attempts per user name within the window
    login_rate_limit_per_client: int = 50  # failed attempts per client address (any names)
    login_rate_window: int = 300  # seconds
    session_cookie_secure: bool = True

    # LDAP sign-in (empty uri: local accounts only)
    ldap_uri: str = ""
    ldap_starttls: bool = False
    ldap_base_dn: str = ""
    ldap_user_filter: str = "(uid={username})"
    ldap_bind_dn: str = ""
    ldap_bind_password: str = ""
    ldap_user_dn_template: str = ""  # e.g. "uid={username},ou=people,dc=example,dc=net"
    ldap_admin_group_dn: str = ""
    ldap_mail_attribute: str = "mail"
    ldap_timeout: float = 5.0
    ldap_ca_file: str = ""  # CA bundle for ldaps:// and StartTLS; empty: the system's
    # Seconds between re-checks of a signed-in directory user (entry still there, admin
    # group); 0: only at sign-in, so removals wait for sessions (14 days) and never
    # reach API tokens.
    ldap_recheck_interval: float = 300.0

    # lookup server (Postfix maps)
    lookup_socketmap: str = "127.0.0.1:10031"
    lookup_tcp: str = "127.0.0.1:10032"
    lookup_sync_interval: float = 0.25  # seconds between change polls
    lookup_max_staleness: float = 5.0  # answer TEMP when the replica is older than this
    # Postfix's socketmap client drops idle connections after 10 s; ours go a little later.
    lookup_idle_timeout: float = 15.0
    # Open connections at most; 0: what the descriptor limit allows less 64 kept back.
    lookup_max_connections: int = 0
    lookup_managed_domain_reply: str = "managed"  # value answered for a bare managed domain

    # milter and scanner
    milter_listen: str = "127.0.0.1:10033"
    milter_timeout: float = 20.0  # scan budget per message; past it the message passes unscanned
    milter_workers: int = 0  # milter processes sharing the socket; 0: one per CPU
    max_scan_size: int = 2_000_000  # bytes of body scanned in full
    scanner_backend: str = "bundled"  # bundled | rspamd
    rspamd_url: str = "http://127.0.0.1:11333"
    rspamd_controller_url: str = "http://127.0.0.1:11334"
    rspamd_password: str = ""
    action_greylist: float = 4.0
    action_add_header: float = 6.0
    action_rewrite_subject: float = 8.0
    action_reject: float = 15.0
    subject_prefix: str = "***SPAM***"
    bayes_min_learns: int = 200
    # what a user teaches from their mail counts for them only (global + own counts)
    bayes_per_user: bool = False

    # quarantine: Postfix's hold queue keeps the message, aliasd the record (README)
    quarantine_score: float = 0.0  # hold mail scoring this much (below reject); 0: off
    quarantine_keep_days: int = 30  # held messages nobody decided on are deleted after this
    quarantine_max_held: int = 10000  # held at most; past it senders get 451 (and a log alarm)
    quarantine_digest: bool = False  # `aliasd quarantine digest` mails owners what was held
    sendmail_command: list[str] = field(default_factory=lambda: ["/usr/sbin/sendmail", "-t", "-i"])
    learn_keep_days: int = 3  # recent messages kept for "this was spam / not spam"; 0: none
    learn_sample_max_bytes: int = 262_144  # of each message kept for learning
    # spam@/ham@<domain> accept mail from the owner's mailbox when SMTP AUTH was used or
    # the client is in these networks (the owner's submission server)
    # direct: the deciding process runs postsuper itself (needs root: the CLI as root);
    # queued: the web app records the decision and touches data_dir/quarantine-requests,
    # a root systemd path unit then runs `aliasd quarantine apply` (the shipped units)
    quarantine_release_mode: str = "queued"
    postfix_config_dir: str = ""  # passed as -c to postsuper/postqueue; empty: Postfix's default
    postsuper_command: list[str] = field(default_factory=lambda: ["postsuper"])  # e.g. sudo -n ...
    postqueue_command: list[str] = field(default_factory=lambda: ["postqueue"])
    # wakes Postfix's pickup for a released (requeued) message: root or group postdrop
    # (public/ is 2710 postfix:postdrop); when it cannot, pickup looks within a minute
    postkick_command: list[str] = field(default_factory=lambda: ["postkick"])
    # one-click links in forwarded mail (disable alias, block sender); empty: none added
    web_base_url: str = ""  # e.g. https://aliases.example.net
    oneclick_max_age_days: int = 60
    spf_enabled: bool = False
    # Rule files or directories (SpamAssassin syntax) loaded after aliasd's own
    # (aliasd/data/rules), e.g. "/usr/share/spamassassin" from Debian's spamassassin.
    scanner_rules: list[str] = field(default_factory=list)
    # SpamAssassin's published rules (Debian's spamassassin package), when installed:
    # "content" its body, rawbody, uri and full rules (one hyperscan pass; the default),
    # "all" its header rules too (slower: README), "off" none.
    scanner_spamassassin: str = "content"
    scanner_spamassassin_dir: str = "/usr/share/spamassassin"

    # blocklist (header_checks) and auto-block policy
    blocklist_file: str = ""  # empty: data_dir/header_checks
    blocklist_reload_command: str = "postfix reload"
    blocklist_reject_text: str = "Plz stop sending SPAM id={id}"
    autoblock_enabled: bool = True
    autoblock_threshold: int = 5  # spam messages from one sender domain ...
    autoblock_period_hours: int = 24  # ... within this many hours to one user's aliases
    # Never auto-blocked (a block is server-wide): big mailbox providers whose users also
    # send wanted mail. A person can block them by hand, unless the block would match the
    # ordinary-mail baseline (aliasd/core/ordinary_headers.txt), as gmail.com's would.
    # Attribution never learns them as a site's sender either: anyone writes from them.
    autoblock_exempt_domains: list[str] = field(
        default_factory=lambda: [
            "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com",
            "msn.com", "yahoo.com", "icloud.com", "me.com", "aol.com", "gmx.net", "gmx.de",
            "web.de", "mail.ru", "yandex.ru", "proton.me", "protonmail.com", "zoho.com",
        ]
    )

    # Postfix's queue directory, its chroot jail: unix sockets under it are printed for
    # main.cf relative to it, which chrooted and unchrooted Postfix daemons both resolve
    postfix_queue_directory: str = "/var/spool/postfix"

    # metrics (Prometheus): HOST:PORT of each daemon's /metrics; empty: off
    lookup_metrics: str = ""
    milter_metrics: str = ""
    web_metrics_token: str = ""  # bearer token for the web app's /metrics beyond loopback

    # leak attribution (which senders are a site's own; what makes a leak)
    attribution_learn_hours: float = 72.0  # first mail within this long after creation is learned
    attribution_leak_senders: int = 4  # this many unrelated clean senders make "leaked", fewer "shared"
    attribution_affiliations_file: str = ""  # admin's extra "domain domain ..." groups

    # DNS: every lookup (DKIM keys, SPF, DMARC, doctor) asks this resolver, "host" or
    # "host:port"; empty: the system's resolver
    dns_resolver: str = ""
    dns_timeout: float = 5.0  # seconds per lookup in the mail path; past it: temperror

    # mail authentication of forwarded mail
    authserv_id: str = ""  # Authentication-Results authserv-id; empty: this host's name
    mail_auth_enabled: bool = True  # DKIM/SPF/DMARC checks + Authentication-Results
    arc_enabled: bool = True  # ARC-seal forwarded mail with the alias domain's key
    # DKIM-sign forwarded mail that carries aliasd's one-click headers (RFC 8058 wants a
    # signature over List-Unsubscribe and List-Unsubscribe-Post) with the alias domain's key
    forward_dkim_sign: bool = True
    dkim_selector: str = ""  # new keys' selector; empty: "aliasd" + year and month
    dkim_ed25519: bool = False  # also sign/seal with an ed25519 key (second signature)
    dkim_rotation_overlap_days: int = 7  # a rotated-out key stays published this long
    dkim_keys_dir: str = ""  # empty: data_dir/dkim

    # SRS: on unless srs_enabled is false. srs_domain empty: each managed domain is an
    # SRS domain and forwarded mail is rewritten into the first one added
    srs_enabled: bool = True
    srs_domain: str = ""
    # the first signs, all verify; empty: generated into data_dir/srs_secrets (0600)
    srs_secrets: list[str] = field(default_factory=list)
    srs_hash_length: int = 4
    srs_max_age_days: int = 21
    srs_exclude_domains: list[str] = field(default_factory=list)

    # replies through reverse aliases
    reply_domain: str = ""  # empty: reverse aliases live on each alias's own domain
    reply_mode: str = "preserve"  # preserve | rewrite, for domains that chose none
    # Clients allowed to send as an alias's owner without SPF/DKIM/SMTP AUTH (CIDRs)
    reply_trusted_networks: list[str] = field(default_factory=list)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return "sqlite:///" + str(Path(self.data_dir) / "aliasd.db")

    @property
    def effective_dkim_keys_dir(self) -> str:
        return self.dkim_keys_dir or str(Path(self.data_dir) / "dkim")

    @property
    def effective_authserv_id(self) -> str:
        return self.authserv_id or this_host_name()

    @property
    def mail_host(self) -> str:
        """This host's name as mail names it (MX, SPF, the digest's sender): the
        authserv-id, by default the FQDN."""
        return self.effective_authserv_id.rstrip(".").lower()

    @property
    def quarantine_requests_file(self) -> str:
        return str(Path(self.data_dir) / "quarantine-requests")

    @property
    def effective_blocklist_file(self) -> str:
        return self.blocklist_file or str(Path(self.data_dir) / "header_checks")

    def validate(self) -> None:
        if not self.data_dir.strip():
            raise SettingsError(
                "data_dir must not be empty (it would be the directory the process starts "
                "in): unset ALIASD_DATA_DIR for the default, or name a directory"
            )
        if self.database_url:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError, NoSuchModuleError

            try:
                make_url(self.database_url).get_dialect()
            except (ArgumentError, NoSuchModuleError, ValueError) as exc:
                raise SettingsError(
                    f"database_url {self.database_url!r} is not a database URL SQLAlchemy "
                    f"knows ({exc}); e.g. postgresql+psycopg://user@host/db"
                ) from exc
        for name in ("db_timeout", "lookup_sync_interval", "lookup_max_staleness",
                     "lookup_idle_timeout", "milter_timeout", "ldap_timeout", "dns_timeout"):
            value = getattr(self, name)
            if not value > 0 or math.isinf(value):  # also refuses nan
                raise SettingsError(f"{name} must be a number of seconds above 0, not {value}")
        for name in ("lookup_socketmap", "lookup_tcp", "milter_listen", "web_listen"):
            if getattr(self, name):  # empty: not listening there
                try:
                    ListenSpec.parse(getattr(self, name))
                except ListenError as exc:
                    raise SettingsError(f"{name}: {exc}") from exc
        if self.lookup_max_staleness < 2 * self.lookup_sync_interval:
            # the copy counts as current until the next poll lands: answers would be TEMP
            # (451) for part of every interval with a healthy database
            raise SettingsError(
                f"lookup_max_staleness ({self.lookup_max_staleness} s) must be at least twice "
                f"lookup_sync_interval ({self.lookup_sync_interval} s)"
            )
        if self.lookup_max_connections < 0:
            raise SettingsError("lookup_max_connections must be >= 0 (0: the descriptor limit)")
        if len(self.recipient_delimiter) > 1 or self.recipient_delimiter.isalnum():
            raise SettingsError(
                "recipient_delimiter must be empty or one non-alphanumeric character"
            )
        thresholds = [
            self.action_greylist,
            self.action_add_header,
            self.action_rewrite_subject,
            self.action_reject,
        ]
        if thresholds != sorted(thresholds):
            raise SettingsError(
                "action thresholds must rise: greylist <= add_header <= rewrite_subject <= reject"
            )
        if self.quarantine_score < 0 or (
            self.quarantine_score and self.quarantine_score >= self.action_reject
        ):
            raise SettingsError("quarantine_score must be 0 (off) or below action_reject")
        if self.quarantine_keep_days < 1 or self.learn_keep_days < 0:
            raise SettingsError("quarantine_keep_days must be >= 1 and learn_keep_days >= 0")
        if self.quarantine_release_mode not in ("direct", "queued"):
            raise SettingsError("quarantine_release_mode must be 'direct' or 'queued'")
        if not self.ldap_recheck_interval >= 0:  # NaN too
            raise SettingsError("ldap_recheck_interval must be >= 0 seconds (0: off)")
        if self.milter_workers < 0:
            raise SettingsError("milter_workers must be >= 0 (0: one per CPU)")
        if self.scanner_backend not in ("bundled", "rspamd"):
            raise SettingsError("scanner_backend must be 'bundled' or 'rspamd'")
        if self.scanner_spamassassin not in ("off", "content", "scored", "all"):
            raise SettingsError("scanner_spamassassin must be 'off', 'content', 'scored' or 'all'")
        if self.srs_enabled:
            from aliasd.core.srs import SrsConfig, SrsConfigError  # local: core.srs uses Settings

            try:
                # without srs_secrets the generated ones apply: check the rest
                SrsConfig.from_settings(self, secrets=self.srs_secrets or ["generated"])
            except SrsConfigError as exc:
                raise SettingsError(str(exc)) from exc
        if self.dns_resolver:
            from aliasd.mailauth.dns import parse_resolver_address

            try:
                parse_resolver_address(self.dns_resolver)
            except ValueError as exc:
                raise SettingsError(
                    f"dns_resolver must be 'host' or 'host:port', not {self.dns_resolver!r}"
                ) from exc
        if self.autoblock_threshold < 1 or self.autoblock_period_hours < 1:
            raise SettingsError("autoblock_threshold and autoblock_period_hours must be >= 1")
        if self.attribution_learn_hours < 0 or self.attribution_leak_senders < 1:
            raise SettingsError(
                "attribution_learn_hours must be >= 0 and attribution_leak_senders >= 1"
            )
        if self.reply_mode not in ("preserve", "rewrite"):
            raise SettingsError("reply_mode must be 'preserve' or 'rewrite'")
        for network in self.reply_trusted_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise SettingsError(
                    f"reply_trusted_networks: {network!r} is not an address or CIDR network"
                ) from exc
        if self.attribution_affiliations_file:
            try:
                Path(self.attribution_affiliations_file).read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise SettingsError(
                    f"attribution_affiliations_file cannot be read: {exc}"
                ) from exc

    def with_overrides(self, **overrides: Any) -> Settings:
        new = dataclasses.replace(self, **overrides)
        new.validate()
        return new


def _convert(name: str, raw: Any, annotation: Any) -> Any:
    hint = annotation
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    # A TOML file gives typed values: a list or table where one value belongs, a fraction
    # for a whole number, or true/false for a number is a mistake, never read as text.
    if isinstance(raw, dict) or (isinstance(raw, list) and origin is not list):
        kind = "table" if isinstance(raw, dict) else "list"
        raise SettingsError(f"setting {name!r}: expected one value, not a {kind}: {raw!r}")
    if isinstance(raw, list) and any(isinstance(x, list | dict) for x in raw):
        raise SettingsError(f"setting {name!r}: expected a list of values, got {raw!r}")
    if isinstance(raw, bool) and hint in (int, float):
        raise SettingsError(f"setting {name!r}: expected a number, not {raw!r}")
    if isinstance(raw, float) and hint is int and not raw.is_integer():
        raise SettingsError(f"setting {name!r}: expected a whole number, not {raw!r}")
    try:
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if origin is list:
            if isinstance(raw, list):
                return [str(x) for x in raw]
            if name.endswith("_command") and "," not in str(raw):
                # "/usr/sbin/sendmail -t -i" is what anyone writes for a command
                return shlex.split(str(raw))
            return [part.strip() for part in str(raw).split(",") if part.strip()]
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"setting {name!r}: cannot read {raw!r} as {hint}") from exc


# ALIASD_* variables that are no setting: the file's name, and the tests' and benchmarks'
NOT_SETTINGS = ("ALIASD_CONFIG",)
NOT_SETTINGS_PREFIXES = ("ALIASD_TEST_", "ALIASD_BENCH_")


def _warn_unknown_variables(env: typing.Mapping[str, str], hints: dict[str, Any]) -> None:
    """A misspelt variable would be ignored without a word (a typo in aliasd.env leaves
    every process on the defaults): name it, and the setting it resembles. A warning, not
    an error: an environment is shared with other programs."""
    names = [ENV_PREFIX + key.upper() for key in hints]
    for variable in sorted(env):
        if not variable.startswith(ENV_PREFIX) or variable in NOT_SETTINGS \
                or variable.startswith(NOT_SETTINGS_PREFIXES) or variable in names:
            continue
        close = difflib.get_close_matches(variable, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        log.warning("%s is not an aliasd setting and is ignored%s", variable, hint)


def load_settings(
    environ: typing.Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Defaults ← TOML file named by ALIASD_CONFIG ← ALIASD_* variables ← overrides."""
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(Settings)
    values: dict[str, Any] = {}

    config_path = env.get(ENV_PREFIX + "CONFIG")
    if config_path:
        try:
            with open(config_path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise SettingsError(f"cannot read config file {config_path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {config_path} is not valid TOML: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise SettingsError(
                f"config file {config_path} is not valid TOML: not UTF-8 ({exc})"
            ) from exc
        # Accept both a flat file and one with an [aliasd] table (then nothing else: a key
        # outside it would otherwise be ignored without a word).
        if "aliasd" in data:
            if not isinstance(data["aliasd"], dict):
                raise SettingsError(f"config file {config_path}: [aliasd] must be a table")
            for key in data:
                if key != "aliasd":
                    raise SettingsError(
                        f"config file {config_path}: unknown setting {key!r} outside [aliasd]"
                    )
            data = data["aliasd"]
        for key, raw in data.items():
            if key not in hints:
                raise SettingsError(f"config file {config_path}: unknown setting {key!r}")
            values[key] = _convert(key, raw, hints[key])

    for key, hint in hints.items():
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is not None:
            values[key] = _convert(key, raw, hint)
    _warn_unknown_variables(env, hints)

    for key, raw in overrides.items():
        if key not in hints:
            raise SettingsError(f"unknown setting {key!r}")
        values[key] = raw

    settings = Settings(**values)
    settings.validate()
    return settings
