"""The main.cf lines this install needs, as named sections. Each feature (lookup maps,
milter, header_checks, sender access, SRS) contributes one section builder to
SECTION_BUILDERS with a one-line edit; ``aliasd postfix-config`` prints them all."""

from __future__ import annotations

from collections.abc import Callable

from aliasd.config import Settings
from aliasd.listen import ListenSpec
from aliasd.postfix.milter_lines import milter_section
from aliasd.postfix.reply_lines import reply_section
from aliasd.postfix.section import Section, postfix_socket_path
from aliasd.systemd_units import RELOAD_PATH_UNIT


def postfix_table(kind: str, listen: str, map_name: str | None = None,
                  queue_directory: str | None = None) -> str:
    """``socketmap:inet:127.0.0.1:10031:virtual`` / ``tcp:127.0.0.1:10032`` for a listen
    spec as lookupd takes it (``host:port`` or ``unix:/path``)."""
    spec = ListenSpec.parse(listen)
    if kind == "socketmap":
        where = (f"unix:{postfix_socket_path(spec.path, queue_directory)}" if spec.path
                 else spec.postfix())
        return f"socketmap:{where}:{map_name or 'virtual'}"
    if kind == "tcp":
        if spec.path:
            raise ValueError("Postfix's tcp: tables need host:port, not a unix socket")
        return f"tcp:{spec}"
    raise ValueError(f"unknown table kind {kind!r}")


def lookup_section(settings: Settings) -> Section | None:
    lines: list[str] = []
    if settings.lookup_socketmap:
        table = postfix_table("socketmap", settings.lookup_socketmap, "virtual",
                              settings.postfix_queue_directory)
        lines += [
            f"virtual_alias_domains = {table}{_srs_domain_suffix(settings)}",
            f"virtual_alias_maps = {table}",
        ]
    if settings.lookup_tcp and not ListenSpec.parse(settings.lookup_tcp).path:
        tcp = postfix_table("tcp", settings.lookup_tcp)
        prefix = "#" if lines else ""
        lines += [
            *(["# alternative: the same map over tcp_table"] if prefix else []),
            f"{prefix}virtual_alias_domains = {tcp}{_srs_domain_suffix(settings)}",
            f"{prefix}virtual_alias_maps = {tcp}",
        ]
    if not lines:
        return None
    return Section(
        "aliasd lookup server",
        "Which addresses exist on aliasd's domains, and where they forward (aliasd lookupd).\n"
        "A database outage answers TEMP: Postfix replies 451 and the sender retries.\n"
        "A unix:/path socket must be inside Postfix's chroot (postfix_queue_directory,\n"
        "/var/spool/postfix) when smtpd runs chrooted (Debian's default master.cf); it is\n"
        "then named relative to that directory, which works chrooted or not.",
        lines,
    )


def blocklist_section(settings: Settings) -> Section:
    """Sender blocks: header_checks after DATA, and the same blocks as an access
    map at MAIL FROM through lookupd."""
    # Only the message's own headers: not an attached message's (a spam forwarded to
    # spam@ as an attachment, the original a Postfix bounce returns; a refused bounce
    # stays queued with the original, retried, "bounce failed").
    lines = [f"header_checks = pcre:{settings.effective_blocklist_file}",
             "nested_header_checks = "]
    if settings.lookup_socketmap:
        table = postfix_table("socketmap", settings.lookup_socketmap, "sender_access",
                              settings.postfix_queue_directory)
        lines.append(f"smtpd_sender_restrictions = check_sender_access {table}")
    return Section(
        "aliasd sender blocks",
        "Blocked sources, both ways. header_checks sees the From:/Reply-To:/Sender: headers\n"
        "after DATA (the message's own, not an attached or returned message's: empty\n"
        "nested_header_checks); check_sender_access refuses the envelope sender at MAIL\n"
        "FROM, earlier and cheaper; lookupd answers TEMP (451) when the database is down.\n"
        "Keep any smtpd_sender_restrictions you already have and add the check to them.\n"
        + _reload_note(settings),
        lines,
    )


def _reload_note(settings: Settings) -> str:
    """How Postfix comes to read a new table."""
    written = "aliasd writes header_checks (checked by postmap, renamed into place)"
    command = settings.blocklist_reload_command.strip()
    if command:
        return f"{written},\nthen runs '{command}'."
    # the Production setup: the service user may not reload Postfix, root's path unit does
    return (f"{written}\nand reloads nothing (blocklist_reload_command is empty): the\n"
            f"{RELOAD_PATH_UNIT} unit of 'aliasd systemd' reloads Postfix when the\n"
            "file changes; without that unit new blocks apply when Postfix restarts.")


def _srs_domain_suffix(settings: Settings) -> str:
    # SRS bounce addresses live at srs_domain: listing it with the virtual domains makes
    # smtpd refuse (550) every address there that srs_reverse does not vouch for.
    return f", {settings.srs_domain}" if settings.srs_domain else ""


def srs_section(settings: Settings) -> Section | None:
    """SRS: forwarded mail keeps passing SPF; bounces find the way back."""
    if not settings.srs_enabled or not settings.lookup_socketmap:
        return None
    forward = postfix_table("socketmap", settings.lookup_socketmap, "srs_forward",
                            settings.postfix_queue_directory)
    reverse = postfix_table("socketmap", settings.lookup_socketmap, "srs_reverse",
                            settings.postfix_queue_directory)
    where = settings.srs_domain or "<the first managed domain>"
    listed = (f"({settings.srs_domain} is listed in virtual_alias_domains above)"
              if settings.srs_domain else "(the managed domains are virtual alias domains)")
    return Section(
        "aliasd SRS (Sender Rewriting Scheme)",
        f"Forwarded mail leaves with envelope sender SRS0=...@{where}, so SPF\n"
        "passes at the destination; senders in aliasd's own domains and srs_exclude_domains\n"
        "are left alone. A bounce to a valid SRS address goes back to the original sender;\n"
        f"forged or expired ones get 550 at RCPT {listed}.\n"
        "`aliasd dns DOMAIN` prints the SPF record to publish. Off: srs_enabled = false.",
        [
            f"sender_canonical_maps = {forward}",
            "sender_canonical_classes = envelope_sender",
            f"recipient_canonical_maps = {reverse}",
            "recipient_canonical_classes = envelope_recipient, header_recipient",
        ],
    )


SECTION_BUILDERS: list[Callable[[Settings], Section | None]] = [
    lookup_section,
    milter_section,
    srs_section,
    blocklist_section,
    reply_section,
]


def sections(settings: Settings) -> list[Section]:
    return [s for s in (build(settings) for build in SECTION_BUILDERS) if s is not None]


def render(settings: Settings) -> str:
    return "\n\n".join(section.render() for section in sections(settings)) + "\n"
