"""The main.cf lines this install needs, as named sections. Each feature (lookup maps,
milter, header_checks, sender access, SRS) contributes one section builder to
SECTION_BUILDERS with a one-line edit; ``aliasd postfix-config`` prints them all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aliasd.config import Settings
from aliasd.lookup.server import ListenSpec


@dataclass
class Section:
    name: str
    comment: str  # one or more lines, printed as '# ...'
    lines: list[str] = field(default_factory=list)  # main.cf lines; '#' lines are hints

    def render(self) -> str:
        head = "\n".join(f"# {line}" if line else "#" for line in self.comment.splitlines())
        return "\n".join([f"# --- {self.name} ---", head, *self.lines])


def postfix_table(kind: str, listen: str, map_name: str | None = None) -> str:
    """``socketmap:inet:127.0.0.1:10031:virtual`` / ``tcp:127.0.0.1:10032`` for a listen
    spec as lookupd takes it (``host:port`` or ``unix:/path``)."""
    spec = ListenSpec.parse(listen)
    if kind == "socketmap":
        where = f"unix:{spec.path}" if spec.path else f"inet:{spec}"
        return f"socketmap:{where}:{map_name or 'virtual'}"
    if kind == "tcp":
        if spec.path:
            raise ValueError("Postfix's tcp: tables need host:port, not a unix socket")
        return f"tcp:{spec}"
    raise ValueError(f"unknown table kind {kind!r}")


def lookup_section(settings: Settings) -> Section | None:
    lines: list[str] = []
    if settings.lookup_socketmap:
        table = postfix_table("socketmap", settings.lookup_socketmap, "virtual")
        lines += [f"virtual_alias_domains = {table}", f"virtual_alias_maps = {table}"]
    if settings.lookup_tcp and not ListenSpec.parse(settings.lookup_tcp).path:
        tcp = postfix_table("tcp", settings.lookup_tcp)
        prefix = "#" if lines else ""
        lines += [
            *(["# alternative: the same map over tcp_table"] if prefix else []),
            f"{prefix}virtual_alias_domains = {tcp}",
            f"{prefix}virtual_alias_maps = {tcp}",
        ]
    if not lines:
        return None
    return Section(
        "aliasd lookup server",
        "Which addresses exist on aliasd's domains, and where they forward (aliasd lookupd).\n"
        "A database outage answers TEMP: Postfix replies 451 and the sender retries.\n"
        "A unix:/path socket must be inside Postfix's chroot (/var/spool/postfix) when smtpd\n"
        "runs chrooted (Debian's default master.cf).",
        lines,
    )


SECTION_BUILDERS: list[Callable[[Settings], Section | None]] = [
    lookup_section,
]


def sections(settings: Settings) -> list[Section]:
    return [s for s in (build(settings) for build in SECTION_BUILDERS) if s is not None]


def render(settings: Settings) -> str:
    return "\n\n".join(section.render() for section in sections(settings)) + "\n"
