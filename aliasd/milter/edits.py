"""What the milter tells Postfix at the end of a message: the edits, in order, and the
final decision. The adapter and the reverse-alias step write here; the connection sends
it all in one write."""

from __future__ import annotations

from aliasd.milter import protocol

ACCEPT = "accept"
REJECT = "reject"
TEMPFAIL = "tempfail"
DISCARD = "discard"

_FINAL = {
    ACCEPT: protocol.SMFIR_ACCEPT,
    REJECT: protocol.SMFIR_REJECT,
    TEMPFAIL: protocol.SMFIR_TEMPFAIL,
    DISCARD: protocol.SMFIR_DISCARD,
}


class EditNotAllowed(RuntimeError):
    """The MTA did not grant this kind of edit when the connection was negotiated."""


class MessageEdits:
    """Edits for the message in flight, checked against the actions Postfix granted."""

    def __init__(self, allowed_actions: int) -> None:
        self.allowed = allowed_actions
        self.frames: list[bytes] = []
        self._reply: tuple[str, bytes] | None = None  # (first digit, frame)

    def _need(self, action: int, what: str) -> None:
        if not self.allowed & action:
            raise EditNotAllowed(f"the MTA does not allow milters to {what}")

    def add_header(self, name: str, value: str) -> None:
        self._need(protocol.SMFIF_ADDHDRS, "add headers")
        self.frames.append(protocol.add_header(name, value))

    def insert_header(self, index: int, name: str, value: str) -> None:
        """Insert at ``index`` (0: above every header, where trace fields go)."""
        self._need(protocol.SMFIF_ADDHDRS, "add headers")
        self.frames.append(protocol.insert_header(index, name, value))

    def change_header(self, name: str, index: int, value: str) -> None:
        """Occurrence ``index`` (from 1) of ``name`` gets ``value``; "" deletes it."""
        self._need(protocol.SMFIF_CHGHDRS, "change headers")
        self.frames.append(protocol.change_header(name, index, value))

    def add_recipient(self, address: str) -> None:
        self._need(protocol.SMFIF_ADDRCPT, "add recipients")
        self.frames.append(protocol.add_recipient(address))

    def delete_recipient(self, address: str) -> None:
        self._need(protocol.SMFIF_DELRCPT, "remove recipients")
        self.frames.append(protocol.delete_recipient(address))

    def change_sender(self, address: str) -> None:
        self._need(protocol.SMFIF_CHGFROM, "change the sender")
        self.frames.append(protocol.change_sender(address))

    def replace_body(self, body: bytes) -> None:
        self._need(protocol.SMFIF_CHGBODY, "replace the body")
        self.frames.append(protocol.replace_body(body))

    def quarantine(self, reason: str) -> None:
        self._need(protocol.SMFIF_QUARANTINE, "hold messages")
        self.frames.append(protocol.quarantine(reason))

    def set_reply(self, code: str, xcode: str, text: str) -> None:
        """The SMTP reply a refusal carries instead of Postfix's generic one."""
        self._reply = (code[:1], protocol.reply_code(code, xcode, text))

    def discard_edits(self) -> None:
        """Forget the edits so far (the message is refused or deferred instead)."""
        self.frames.clear()

    def encode(self, decision: str) -> bytes:
        """Everything for the MTA, ending with the decision: edits only go with an
        accepted message, a reply text only with a refusal of its own class (the reply
        is then the decision, as libmilter sends it)."""
        if decision in (REJECT, TEMPFAIL):
            wanted = "5" if decision == REJECT else "4"
            if self._reply is not None and self._reply[0] == wanted:
                return self._reply[1]
            return protocol.frame(_FINAL[decision])
        if decision == DISCARD:
            return protocol.frame(_FINAL[decision])
        return b"".join(self.frames) + protocol.frame(_FINAL[ACCEPT])
