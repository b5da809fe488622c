"""What a map lookup decided, independent of any protocol. Each protocol adapter maps
it to its own reply words (socketmap OK/NOTFOUND/TEMP/PERM, tcp_table 200/500/400)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class LookupOutcome(enum.Enum):
    FOUND = "found"
    NOTFOUND = "notfound"
    TEMP = "temp"  # try again later: Postfix defers (4xx), nothing is lost
    PERM = "perm"  # a configuration error on our side


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: LookupOutcome
    value: str = ""  # the result for FOUND, a reason otherwise

    @classmethod
    def found(cls, value: str) -> Decision:
        if not value:
            raise ValueError("a FOUND decision needs a non-empty value (Postfix rejects bare OK)")
        return cls(LookupOutcome.FOUND, value)

    @classmethod
    def notfound(cls) -> Decision:
        return _NOTFOUND

    @classmethod
    def temp(cls, reason: str) -> Decision:
        return cls(LookupOutcome.TEMP, reason)

    @classmethod
    def perm(cls, reason: str) -> Decision:
        return cls(LookupOutcome.PERM, reason)


_NOTFOUND = Decision(LookupOutcome.NOTFOUND)
