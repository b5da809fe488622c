"""The milter adapter: the MTA's steps collect an Envelope, end of message hands it to
:class:`~aliasd.milter.processing.MailPath` and turns the verdict into edits and a
decision (:mod:`aliasd.milter.edits`). Nothing else: the protocol is
:mod:`aliasd.milter.connection`'s.
"""

from __future__ import annotations

import logging

from aliasd.milter.edits import ACCEPT, DISCARD, REJECT, TEMPFAIL, MessageEdits
from aliasd.milter.learn_by_mail import DISCARD as LEARNED
from aliasd.milter.processing import OWN_HEADERS, Envelope, MailPath
from aliasd.milter.replies import apply_transform
from aliasd.milter.review import QUARANTINE, TEMPFAIL_REPLY

log = logging.getLogger(__name__)

_OWN_LOWER = {h.lower(): h for h in OWN_HEADERS}


class AliasdMilter:
    """One per milter connection (one SMTP session); its steps arrive in order."""

    def __init__(self, mailpath: MailPath) -> None:
        self.mailpath = mailpath
        self.client_addr: str | None = None
        self.client_name: str | None = None
        self.helo: str | None = None
        self.made_by_postfix = False
        self._reset()

    def _reset(self) -> None:
        self.env = Envelope(client_addr=self.client_addr, client_name=self.client_name,
                            helo=self.helo, made_by_postfix=self.made_by_postfix)
        self._kept = 0  # bytes kept for scanning (headers + body)
        self._own_seen: dict[str, int] = {}  # forged copies of our headers, per name
        self._has_subject = False

    # --- SMTP envelope ----------------------------------------------------------------
    def connect(self, address: str | None, hostname: str | None = None,
                resolve: str | None = None, port: int | None = None) -> None:
        """The client's IP address (None for a unix socket or an unknown peer), port, and
        the MTA's name for it (Postfix: "unknown" without a verified reverse-DNS name).
        ``resolve`` is how the MTA's reverse-DNS lookup ended ({client_resolve}): after
        a temporary failure ("TEMP") the client has no name *for now*, which is not
        evidence of anything, so it is left unnamed (not judged) rather than "unknown"."""
        self.client_addr = address or None
        self.client_name = hostname[:255] if hostname else None
        if resolve == "TEMP":
            self.client_name = None
        # Mail that no SMTP client sent (non_smtpd_milters: Postfix's own bounces, the
        # sendmail command) comes with the connection Postfix's cleanup makes up:
        # "localhost", 127.0.0.1, port 0, which no TCP client can have.
        self.made_by_postfix = (port == 0 and address == "127.0.0.1"
                                and hostname == "localhost")

    def hello(self, hostname: str) -> None:
        self.helo = hostname[:255]

    def envfrom(self, sender: bytes, auth_authen: str | None = None) -> None:
        self._reset()
        self.env.sender = _strip_brackets(sender)
        self.env.auth_authen = auth_authen or None

    def envrcpt(self, rcpt: bytes) -> None:
        self.env.recipients.append(_strip_brackets(rcpt))

    # --- content --------------------------------------------------------------------
    def header(self, raw_name: bytes, value: bytes) -> None:
        env = self.env
        name = raw_name.decode("ascii", "replace")
        env.size += len(name) + len(value) + 4
        lname = name.lower()
        if lname in _OWN_LOWER:
            # Remembered by occurrence number so eom can delete them; not scanned.
            self._own_seen[_OWN_LOWER[lname]] = self._own_seen.get(_OWN_LOWER[lname], 0) + 1
            return
        if lname == "subject":
            self._has_subject = True
        cost = len(name) + len(value) + 4
        if self._kept + cost <= self.mailpath.settings.max_scan_size:
            env.headers.append((name, value))
            self._kept += cost
        else:
            env.truncated = True

    def eoh(self) -> None:
        self.env.size += 2

    def body(self, chunk: bytes) -> None:
        env = self.env
        env.size += len(chunk)
        room = self.mailpath.settings.max_scan_size - self._kept
        if room > 0:
            piece = chunk[:room]
            env.body += piece
            self._kept += len(piece)
        if len(chunk) > max(room, 0):
            env.truncated = True

    def eom(self, queue_id: str | None, edits: MessageEdits) -> str:
        """Process the message; its edits go to ``edits``; returns the decision."""
        try:
            return self._eom(queue_id, edits)
        except Exception:  # a fault must never lose or bounce mail
            log.exception("milter end-of-message failed; accepting unscanned")
            edits.discard_edits()
            return ACCEPT

    def _eom(self, queue_id: str | None, edits: MessageEdits) -> str:
        env = self.env
        env.queue_id = queue_id or None
        verdict = self.mailpath.process(env)
        if verdict.status == LEARNED:  # addressed to the spam filter, and learned
            return DISCARD
        if verdict.status in ("reject", "tempfail") and verdict.reply:
            edits.set_reply(*verdict.reply)
            return REJECT if verdict.status == "reject" else TEMPFAIL
        if verdict.transform is not None and verdict.transform.exclusive:
            return apply_transform(edits, verdict.transform, self._own_seen)  # a reply
        try:
            for rcpt in verdict.remove_recipients:  # recipients who blocked this sender
                edits.delete_recipient(f"<{rcpt}>")
        except Exception:  # cannot drop them: they get the message, as before the block
            log.exception("could not remove recipients of queue id %s", env.queue_id)
        try:
            for name, count in self._own_seen.items():
                for index in range(count, 0, -1):  # from the last, so numbering holds
                    edits.change_header(name, index, "")
            for name, index in sorted(verdict.remove_headers, key=lambda h: -h[1]):
                edits.change_header(name, index, "")
            for name, value in verdict.add_headers:
                edits.add_header(name, value)
            if verdict.new_subject is not None:
                if self._has_subject:
                    edits.change_header("Subject", 1, verdict.new_subject)
                else:
                    edits.add_header("Subject", verdict.new_subject)
        except Exception:  # header edits failed: deliver the message as it is
            log.exception("could not edit headers of queue id %s", env.queue_id)
        if verdict.masking is not None:  # a DSN: the alias instead of the mailbox
            try:
                for name, index, value in verdict.masking.headers:
                    edits.change_header(name, index, value)
                if verdict.masking.body is not None:
                    edits.replace_body(verdict.masking.body)
            except Exception:
                log.exception("could not hide the mailboxes in queue id %s", env.queue_id)
        if verdict.transform is not None:  # the reverse alias in forwarded mail
            apply_transform(edits, verdict.transform, {})
        if verdict.status == QUARANTINE:
            try:  # Postfix's hold queue keeps it until released or deleted
                edits.quarantine(f"aliasd: held for review, score {verdict.result.score:.2f}")
            except Exception:  # it cannot be held: the sender retries later
                log.exception("could not hold queue id %s", env.queue_id)
                edits.set_reply(*TEMPFAIL_REPLY)
                return TEMPFAIL
        return ACCEPT

    def abort(self) -> None:
        self._reset()


def _strip_brackets(address: bytes) -> str:
    text = address.decode("utf-8", "replace")
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text
