"""The main.cf lines that plug the milter into Postfix (printed by
``aliasd postfix-config`` and used verbatim by the end-to-end tests)."""

from __future__ import annotations

import math

from aliasd.config import Settings
from aliasd.listen import ListenSpec
from aliasd.postfix.section import Section, postfix_socket_path


def postfix_milter_address(listen: str, queue_directory: str | None = None) -> str:
    """``127.0.0.1:10033`` → ``inet:127.0.0.1:10033``; ``unix:/path`` stays, relative to
    Postfix's queue directory when inside it (see postfix_socket_path)."""
    spec = ListenSpec.parse(listen)
    if spec.path:
        return "unix:" + postfix_socket_path(spec.path, queue_directory)
    return spec.postfix()


def postfix_milter_settings(settings: Settings, listen: str | None = None) -> dict[str, str]:
    """main.cf parameters, in the order they are printed."""
    address = postfix_milter_address(listen or settings.milter_listen,
                                     settings.postfix_queue_directory)
    return {
        "smtpd_milters": address,
        # Postfix's own bounces and success notices name the owner's mailbox; they reach
        # a milter only through non_smtpd_milters, and only with the bounce class.
        "non_smtpd_milters": address,
        "internal_mail_filter_classes": "bounce",
        "milter_protocol": "6",
        # When the milter is down or does not answer, Postfix delivers the message
        # unscanned instead of refusing it with 451 (the Postfix default, "tempfail").
        "milter_default_action": "accept",
        "milter_connect_timeout": "10s",
        "milter_command_timeout": "30s",
        # The milter gives up scanning after milter_timeout and answers; Postfix must
        # wait at least that long.
        "milter_content_timeout": f"{math.ceil(settings.milter_timeout) + 30}s",
    }


COMMENT = (
    "Every message for an alias passes aliasd's milter (aliasd milter): spam scan, headers\n"
    "X-Spamd-Result / X-Spam / X-Aliasd-Alias, reject or defer by score, event records.\n"
    "If the milter is down, milter_default_action = accept delivers mail unscanned.\n"
    "Postfix's delivery status notifications pass it too (non_smtpd_milters with\n"
    "internal_mail_filter_classes = bounce): a bounce or success notice about forwarded\n"
    "mail names the alias, not the owner's mailbox. This also runs header_checks on them,\n"
    "and the milter sees mail submitted with sendmail; mail to no alias passes untouched.\n"
    "Database or scanner trouble inside the milter also passes the message, marked\n"
    "'X-Aliasd-Scan: skipped (reason)'. A unix:/path socket must be inside Postfix's\n"
    "chroot (/var/spool/postfix) when smtpd runs chrooted; it is then named relative to it."
)


def milter_section(settings: Settings) -> Section:
    """The "aliasd milter" section of ``aliasd postfix-config``."""
    lines = [f"{k} = {v}" for k, v in postfix_milter_settings(settings).items()]
    return Section("aliasd milter", COMMENT, lines)
