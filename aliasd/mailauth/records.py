"""The DNS records a managed domain needs for forwarded mail to arrive, in zone-file
form: MX to this host, SPF listing this host (so SRS senders at the domain pass), the
DKIM key(s) its ARC seals are made with, and a DMARC policy to start from. The
reverse-alias domain (``reply_domain``, when set) needs the same four: MX so
correspondents' replies reach this host, SPF, the DKIM key that signs forwarded mail
whose From: is rewritten to a reverse alias there, and DMARC. ``aliasd doctor`` checks
the same records through the configured resolver."""

from __future__ import annotations

from dataclasses import dataclass

from aliasd.config import Settings
from aliasd.mailauth import keys

TTL = 3600


@dataclass(frozen=True)
class Record:
    name: str  # fully qualified, without the final dot
    rtype: str
    value: str  # presentation value: TXT text unquoted
    note: str = ""

    def zone_line(self) -> str:
        if self.rtype == "TXT":
            raw = self.value
            data = " ".join(f'"{raw[i:i + 255]}"' for i in range(0, len(raw), 255)) or '""'
        else:
            data = self.value
        line = f"{self.name}. {TTL} IN {self.rtype} {data}"
        return f"{line} ; {self.note}" if self.note else line


def mail_host(settings: Settings) -> str:
    """This host's name as MX and SPF name it: the authserv-id, by default the FQDN."""
    return settings.mail_host


def spf_value(settings: Settings) -> str:
    return f"v=spf1 mx a:{mail_host(settings)} ~all"


def reply_domain(settings: Settings) -> str | None:
    """The reverse-alias domain, when one is configured."""
    return settings.reply_domain.strip().lower().rstrip(".") or None


def is_reply_domain(settings: Settings, domain: str) -> bool:
    return domain.lower().rstrip(".") == reply_domain(settings)


def dns_domains(settings: Settings, managed: list[str]) -> list[str]:
    """Every domain that needs records and keys: the managed ones and the reverse-alias
    domain (which need not be managed itself)."""
    names = [d.lower().rstrip(".") for d in managed]
    replies = reply_domain(settings)
    return names + [replies] if replies and replies not in names else names


def records_for(settings: Settings, domain: str) -> list[Record]:
    domain = domain.lower().rstrip(".")
    host = mail_host(settings)
    replies = is_reply_domain(settings, domain)
    mx_note = "replies to reverse aliases arrive here" if replies else ""
    out = [
        Record(domain, "MX", f"10 {host}.", mx_note),
        Record(domain, "TXT", spf_value(settings),
               "SPF: this host sends the domain's SRS-rewritten forwarded mail"),
    ]  # fmt: skip
    use = "ARC seals, reverse-alias From:" if replies else "ARC seals"
    for key in keys.published_keys(settings, domain):
        note = (f"DKIM {key.algorithm}, rotated out: remove after {key.retire_after}"
                if key.retire_after else f"DKIM {key.algorithm} ({use})")  # fmt: skip
        out.append(Record(key.dns_name, "TXT", key.dns_txt(), note))
    out.append(Record(f"_dmarc.{domain}", "TXT", "v=DMARC1; p=none",
                      "start with p=none; raise to quarantine or reject once reports are clean"))
    srs = settings.srs_domain.lower().rstrip(".")
    if settings.srs_enabled and srs and srs != domain:
        out.append(Record(srs, "TXT", spf_value(settings),
                          "SPF of the SRS domain (envelope sender of forwarded mail)"))
    return out


def zone_text(settings: Settings, domain: str) -> str:
    domain = domain.lower().rstrip(".")
    lines = [f"; DNS records for {domain} (aliasd)"]
    replies = reply_domain(settings)
    if replies == domain:
        lines.append("; reverse-alias domain (reply_domain): replies to reverse aliases "
                     "and rewritten From: addresses live here")
    elif replies:
        lines.append(f"; reverse aliases live on {replies}: publish `aliasd dns {replies}` too")
    lines += [r.zone_line() for r in records_for(settings, domain)]
    return "\n".join(lines) + "\n"
