"""A real rspamd as the scanner: ``/checkv2`` on the normal worker with the envelope in
HTTP headers, learning through the controller (``/learnspam``, ``/learnham``)."""

from __future__ import annotations

import threading

import requests

from aliasd.config import Settings
from aliasd.scanner.base import LearnOutcome, ScannerError
from aliasd.scanner.result import Action, ScanRequest, ScanResult, Symbol

_ACTIONS = {a.value: a for a in Action}


class RspamdScanner:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.rspamd_url.rstrip("/")
        self.controller_url = settings.rspamd_controller_url.rstrip("/")
        self.timeout = settings.milter_timeout
        self._local = threading.local()  # one keep-alive HTTP session per thread

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session

    def scan(self, request: ScanRequest) -> ScanResult:
        headers = {"From": request.envelope_from or "<>"}
        if request.client_addr:
            headers["IP"] = request.client_addr
        if request.helo:
            headers["Helo"] = request.helo
        if request.queue_id:
            headers["Queue-Id"] = request.queue_id
        # rspamd reads repeated Rcpt headers; requests sends one header per name, so
        # several recipients go comma-separated, which rspamd also accepts.
        if request.recipients:
            headers["Rcpt"] = ",".join(request.recipients)
        try:
            resp = self._session().post(
                self.url + "/checkv2", data=request.message, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise ScannerError(f"rspamd unreachable: {exc}") from exc
        if resp.status_code != 200:
            raise ScannerError(f"rspamd answered {resp.status_code}: {resp.text[:200]}")
        try:
            data = resp.json()
        except ValueError as exc:
            raise ScannerError("rspamd sent a reply that is not JSON") from exc
        return parse_checkv2(data)

    def learn(self, message: bytes, is_spam: bool) -> LearnOutcome:
        path = "/learnspam" if is_spam else "/learnham"
        headers = {}
        if self.settings.rspamd_password:
            headers["Password"] = self.settings.rspamd_password
        try:
            resp = self._session().post(
                self.controller_url + path, data=message, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise ScannerError(f"rspamd controller unreachable: {exc}") from exc
        body = resp.text.lower()
        if resp.status_code == 200:
            return LearnOutcome.LEARNED
        if resp.status_code == 208 or "already learned" in body:
            return LearnOutcome.DUPLICATE
        if resp.status_code in (401, 403):
            raise ScannerError("rspamd controller refused the password")
        return LearnOutcome.FAILED

    def stats(self) -> dict[str, int]:
        """The controller's /stat mapped to the names the bundled scanner uses."""
        headers = {"Password": self.settings.rspamd_password} if self.settings.rspamd_password else {}
        try:
            resp = self._session().get(self.controller_url + "/stat", headers=headers, timeout=self.timeout)
            resp.raise_for_status()
            data = resp.json()
        except (requests.RequestException, ValueError) as exc:
            raise ScannerError(f"rspamd controller: {exc}") from exc
        out = {"scanned:" + name: int(n) for name, n in (data.get("actions") or {}).items()}
        tokens = 0
        for statfile in data.get("statfiles") or []:
            symbol = str(statfile.get("symbol", ""))
            learned = int(statfile.get("revision", 0) or 0)
            tokens += int(statfile.get("used", 0) or 0)
            if symbol == "BAYES_SPAM":
                out["bayes_learned_spam"] = learned
            elif symbol == "BAYES_HAM":
                out["bayes_learned_ham"] = learned
        out["tokens"] = tokens
        # per-class statfile figures come from redis with a delay; the controller's
        # own learn counter is current
        out["learned"] = int(data.get("learned", 0) or 0)
        return out


def parse_checkv2(data: dict) -> ScanResult:
    symbols = []
    for name, item in (data.get("symbols") or {}).items():
        symbols.append(
            Symbol(
                name=item.get("name", name),
                score=float(item.get("score", 0.0)),
                options=tuple(str(o) for o in item.get("options", []) or []),
                description=item.get("description", "") or "",
            )
        )
    action = _ACTIONS.get(str(data.get("action", "no action")), Action.NO_ACTION)
    return ScanResult(
        score=round(float(data.get("score", 0.0)), 2),
        required_score=float(data.get("required_score", 15.0)),
        action=action,
        symbols=symbols,
        is_skipped=bool(data.get("is_skipped", False)),
        message_id=None if data.get("message-id") in (None, "undef") else data.get("message-id"),
    )
