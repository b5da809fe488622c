"""The pymilter adapter: milter callbacks collect an Envelope, ``eom`` hands it to
:class:`~aliasd.milter.processing.MailPath` and applies the verdict. Nothing else.

pymilter wraps libmilter, the reference implementation of the milter protocol that
sendmail ships and that most production milters (OpenDKIM, OpenDMARC, ...) use; it
negotiates protocol 6 with Postfix, including "no reply" steps, so only DATA and
end-of-message cost a round trip.
"""

from __future__ import annotations

import logging

import Milter

from aliasd.milter.learn_by_mail import DISCARD
from aliasd.milter.processing import OWN_HEADERS, Envelope, MailPath
from aliasd.milter.replies import apply_transform
from aliasd.milter.review import QUARANTINE, TEMPFAIL_REPLY

log = logging.getLogger(__name__)

_OWN_LOWER = {h.lower(): h for h in OWN_HEADERS}


class AliasdMilter(Milter.Base):
    """One instance per SMTP connection (libmilter runs each in its own thread)."""

    mailpath: MailPath  # set on the class by aliasd.milter.server before serving

    def __init__(self) -> None:
        self.client_addr: str | None = None
        self.helo: str | None = None
        self._reset()

    def _reset(self) -> None:
        self.env = Envelope(client_addr=self.client_addr, helo=self.helo)
        self._kept = 0  # bytes kept for scanning (headers + body)
        self._own_seen: dict[str, int] = {}  # forged copies of our headers, per name
        self._has_subject = False

    # --- SMTP envelope ----------------------------------------------------------------
    @Milter.noreply
    def connect(self, hostname, family, hostaddr):
        if isinstance(hostaddr, tuple) and hostaddr:
            self.client_addr = str(hostaddr[0])
        elif hostaddr:
            self.client_addr = str(hostaddr)
        return Milter.CONTINUE

    @Milter.noreply
    def hello(self, hostname):
        self.helo = str(hostname)[:255]
        return Milter.CONTINUE

    @Milter.noreply
    def envfrom(self, sender, *params):
        self._reset()
        self.env.sender = _strip_brackets(sender)
        self.env.auth_authen = self.getsymval("{auth_authen}") or None
        return Milter.CONTINUE

    @Milter.noreply
    def envrcpt(self, rcpt, *params):
        self.env.recipients.append(_strip_brackets(rcpt))
        return Milter.CONTINUE

    def data(self):
        # Answered on purpose (not "no reply", not skipped): otherwise Postfix sends the
        # DATA-stage macros without expecting a reply, the next packet waits behind
        # Nagle's algorithm for our delayed ACK, and every message stalls ~40 ms.
        return Milter.CONTINUE

    # --- content --------------------------------------------------------------------
    @Milter.noreply
    @Milter.decode("bytes")
    def header(self, name, value):
        env = self.env
        name = name if isinstance(name, str) else name.decode("ascii", "replace")
        value = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")
        env.size += len(name) + len(value) + 4
        lname = name.lower()
        if lname in _OWN_LOWER:
            # Remembered by occurrence number so eom can delete them; not scanned.
            self._own_seen[_OWN_LOWER[lname]] = self._own_seen.get(_OWN_LOWER[lname], 0) + 1
            return Milter.CONTINUE
        if lname == "subject":
            self._has_subject = True
        cost = len(name) + len(value) + 4
        if self._kept + cost <= self.mailpath.settings.max_scan_size:
            env.headers.append((name, value))
            self._kept += cost
        else:
            env.truncated = True
        return Milter.CONTINUE

    @Milter.noreply
    def eoh(self):
        self.env.size += 2
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk):
        env = self.env
        env.size += len(chunk)
        room = self.mailpath.settings.max_scan_size - self._kept
        if room > 0:
            piece = chunk[:room]
            env.body += piece
            self._kept += len(piece)
        if len(chunk) > max(room, 0):
            env.truncated = True
        return Milter.CONTINUE

    def eom(self):
        try:
            return self._eom()
        except Exception:  # a fault must never lose or bounce mail
            log.exception("milter end-of-message failed; accepting unscanned")
            return Milter.ACCEPT

    def _eom(self):
        env = self.env
        env.queue_id = self.getsymval("i") or None
        verdict = self.mailpath.process(env)
        if verdict.status == DISCARD:  # addressed to the spam filter, and learned
            return Milter.DISCARD
        if verdict.status in ("reject", "tempfail") and verdict.reply:
            code, xcode, text = verdict.reply
            self.setreply(code, xcode, text.replace("%", "%%"))
            return Milter.REJECT if verdict.status == "reject" else Milter.TEMPFAIL
        if verdict.transform is not None and verdict.transform.exclusive:
            return apply_transform(self, verdict.transform, self._own_seen)  # a reply
        try:
            for rcpt in verdict.remove_recipients:  # recipients who blocked this sender
                self.delrcpt(f"<{rcpt}>")
        except Exception:  # cannot drop them: they get the message, as before the block
            log.exception("could not remove recipients of queue id %s", env.queue_id)
        try:
            for name, count in self._own_seen.items():
                for index in range(count, 0, -1):  # from the last, so numbering holds
                    self.chgheader(name, index, "")
            for name, index in sorted(verdict.remove_headers, key=lambda h: -h[1]):
                self.chgheader(name, index, "")
            for name, value in verdict.add_headers:
                self.addheader(name, value)
            if verdict.new_subject is not None:
                if self._has_subject:
                    self.chgheader("Subject", 1, verdict.new_subject)
                else:
                    self.addheader("Subject", verdict.new_subject)
        except Exception:  # header edits failed: deliver the message as it is
            log.exception("could not edit headers of queue id %s", env.queue_id)
        if verdict.transform is not None:  # the reverse alias in forwarded mail
            apply_transform(self, verdict.transform, {})
        if verdict.status == QUARANTINE:
            try:  # Postfix's hold queue keeps it until released or deleted
                self.quarantine(f"aliasd: held for review, score {verdict.result.score:.2f}")
            except Exception:  # it cannot be held: the sender retries later
                log.exception("could not hold queue id %s", env.queue_id)
                self.setreply(*TEMPFAIL_REPLY)
                return Milter.TEMPFAIL
        return Milter.ACCEPT

    def abort(self):
        self._reset()
        return Milter.CONTINUE

    def close(self):
        return Milter.CONTINUE


def _strip_brackets(address) -> str:
    text = address if isinstance(address, str) else bytes(address).decode("utf-8", "replace")
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text
