"""Where the files that are not Python modules live: templates, migrations, systemd units.

An installed wheel carries ``templates/`` and ``migrations/`` inside the package
(``aliasd/templates``; see setup.py); a checkout (and an editable install of it) keeps
them at the top of the repository. Every caller asks here, so the two layouts are
decided in one place."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_DIR = PACKAGE_DIR.parent


def resource_dir(name: str) -> Path:
    """The directory ``name`` (``templates`` or ``migrations``), installed or in the checkout."""
    installed = PACKAGE_DIR / name
    if installed.is_dir():
        return installed
    checkout = CHECKOUT_DIR / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        f"aliasd's {name}/ directory is missing (looked in {installed} and {checkout}); "
        "reinstall aliasd"
    )


def templates_dir() -> Path:
    return resource_dir("templates")


def migrations_dir() -> Path:
    return resource_dir("migrations")
