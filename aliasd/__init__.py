"""aliasd: disposable per-site addresses for your own Postfix."""

__version__ = "0.1.0"
