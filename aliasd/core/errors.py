"""The errors of aliasd's rules, shared by every layer (CLI, web, API show their
message to the person who asked)."""

from __future__ import annotations


class AliasdError(Exception):
    """A rule of the product was broken; the message is fit to show a user."""


class NotFound(AliasdError):
    pass


class AlreadyExists(AliasdError):
    pass


class AddressRetired(AliasdError):
    """The address was burned or deleted; it is never handed out again."""


class InvalidTransition(AliasdError):
    pass
