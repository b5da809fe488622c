"""Build step (the rest of the metadata is in pyproject.toml).

templates/ and migrations/ stay at the top of the repository, where people edit them,
and are mapped into the package at build time as ``aliasd/templates`` and
``aliasd/migrations``: a wheel or sdist install then carries them, and
:mod:`aliasd.resources` finds them either there or in the checkout."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

RESOURCE_DIRS = {"aliasd.templates": "templates", "aliasd.migrations": "migrations"}


def mapped_packages(package: str, directory: str) -> list[str]:
    """``package`` and one (namespace) package per sub-directory of ``directory``."""
    subdirs = (p for p in Path(directory).rglob("*") if p.is_dir() and p.name != "__pycache__")
    return [package, *sorted(f"{package}.{'.'.join(p.relative_to(directory).parts)}" for p in subdirs)]


setup(
    packages=[
        *find_namespace_packages(include=["aliasd", "aliasd.*"], exclude=["*.__pycache__"]),
        *(name for package, d in RESOURCE_DIRS.items() for name in mapped_packages(package, d)),
    ],
    package_dir=RESOURCE_DIRS,
    # Data files inside the package: templates, units, shipped lists (ordinary headers, ...).
    package_data={"": ["*.html", "*.mako", "*.css", "*.js", "*.service", "*.path", "*.timer",
                       "*.conf", "*.txt", "*.json", "*.toml", "*.csv", "*.cf", "*.svg"]},
)
