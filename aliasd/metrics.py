"""Prometheus metrics for aliasd's daemons (prometheus-client): one small HTTP endpoint
per daemon (``--metrics HOST:PORT``). What each daemon counts is defined next to it
(``aliasd.lookup.metrics``, ``aliasd.milter.metrics``, ``aliasd.web.metrics``)."""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY, start_http_server

log = logging.getLogger(__name__)


class MetricsListenError(ValueError):
    pass


def parse_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:9120`` / ``[::1]:9120`` → (host, port). Port 0 picks a free one."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise MetricsListenError(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def serve_metrics(listen: str, registry=None) -> tuple[str, int]:
    """Serve ``registry``'s metrics (default: the default registry) on ``listen`` from a
    daemon thread; returns the bound (host, port)."""
    host, port = parse_listen(listen)
    server, _thread = start_http_server(port, addr=host, registry=registry or REGISTRY)
    bound = server.server_address[:2]
    log.info("metrics on http://%s:%s/metrics", *bound)
    return bound[0], bound[1]
