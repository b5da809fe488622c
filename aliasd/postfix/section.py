"""A named section of main.cf lines, and how main.cf names a unix socket: shared by
every section builder."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Section:
    name: str
    comment: str  # one or more lines, printed as '# ...'
    lines: list[str] = field(default_factory=list)  # main.cf lines; '#' lines are hints

    def render(self) -> str:
        head = "\n".join(f"# {line}" if line else "#" for line in self.comment.splitlines())
        return "\n".join([f"# --- {self.name} ---", head, *self.lines])


def postfix_socket_path(path: str, queue_directory: str | None) -> str:
    """A unix socket path as main.cf should name it. Postfix daemons run in their queue
    directory (chrooted to it in Debian's master.cf): a socket inside it is named relative
    to it (``/var/spool/postfix/aliasd/milter.sock`` → ``aliasd/milter.sock``), which
    resolves the same inside and outside the chroot; an absolute path would be looked up
    under the jail by chrooted daemons."""
    if queue_directory:
        base = queue_directory.rstrip("/") + "/"
        if path.startswith(base) and len(path) > len(base):
            return path[len(base):]
    return path
