"""The DNS records a managed domain needs for forwarded mail to arrive, in zone-file
form: MX to this host, SPF listing this host (so SRS senders at the domain pass), the
DKIM key(s) its ARC seals are made with, and a DMARC policy to start from. ``aliasd
doctor`` checks the same records through the configured resolver."""

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
    return settings.effective_authserv_id.rstrip(".").lower()


def spf_value(settings: Settings) -> str:
    return f"v=spf1 mx a:{mail_host(settings)} ~all"


def records_for(settings: Settings, domain: str) -> list[Record]:
    domain = domain.lower().rstrip(".")
    host = mail_host(settings)
    out = [
        Record(domain, "MX", f"10 {host}."),
        Record(domain, "TXT", spf_value(settings),
               "SPF: this host sends the domain's SRS-rewritten forwarded mail"),
    ]  # fmt: skip
    for key in keys.published_keys(settings, domain):
        note = (f"DKIM {key.algorithm}, rotated out: remove after {key.retire_after}"
                if key.retire_after else f"DKIM {key.algorithm} (ARC seals)")  # fmt: skip
        out.append(Record(key.dns_name, "TXT", key.dns_txt(), note))
    out.append(Record(f"_dmarc.{domain}", "TXT", "v=DMARC1; p=none",
                      "start with p=none; raise to quarantine or reject once reports are clean"))
    srs = settings.srs_domain.lower().rstrip(".")
    if settings.srs_enabled and srs and srs != domain:
        out.append(Record(srs, "TXT", spf_value(settings),
                          "SPF of the SRS domain (envelope sender of forwarded mail)"))
    return out


def zone_text(settings: Settings, domain: str) -> str:
    lines = [f"; DNS records for {domain} (aliasd)"]
    lines += [r.zone_line() for r in records_for(settings, domain)]
    return "\n".join(lines) + "\n"
