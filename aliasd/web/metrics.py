"""The web app's Prometheus metrics: requests by endpoint and status, and ``/metrics``.

``/metrics`` answers a direct request from loopback, or any request carrying
``Authorization: Bearer <web_metrics_token>``. A request that came through a proxy
(X-Forwarded-For, Forwarded, X-Real-IP) is not "from loopback" even when the proxy is:
otherwise a reverse proxy on the same host would publish the metrics to the world.

Under gunicorn every worker is its own process: with ``PROMETHEUS_MULTIPROC_DIR`` set
(an empty directory, before the app starts; the systemd unit does this) each worker writes
its values there and ``/metrics`` adds up all workers' (prometheus-client's multiprocess
mode). Without it the numbers are those of the worker that answered."""

from __future__ import annotations

import hmac
import ipaddress
import os
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from aliasd.web.permissions import public

REQUESTS = Counter(
    "aliasd_web_requests", "HTTP requests answered, by endpoint and status code.",
    ["endpoint", "status"],
)
LATENCY = Histogram(
    "aliasd_web_request_seconds", "Time to answer a request, by endpoint.", ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")

bp = Blueprint("metrics", __name__)


def scrape_allowed() -> bool:
    token = current_app.config["ALIASD_SETTINGS"].web_metrics_token
    if token:
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
    if any(header in request.headers for header in PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def _registry():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


@bp.get("/metrics")
@public  # the access rule is scrape_allowed(): loopback or the metrics token
def scrape() -> Response:
    if not scrape_allowed():
        return Response("metrics: loopback or 'Authorization: Bearer <web_metrics_token>'\n",
                        status=403, mimetype="text/plain")
    return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)


def _started() -> None:
    g.aliasd_request_started = time.perf_counter()


def _count(response: Response) -> Response:
    endpoint = request.endpoint or "none"  # unmatched URLs share one label
    REQUESTS.labels(endpoint, str(response.status_code)).inc()
    started = g.get("aliasd_request_started")
    if started is not None:
        LATENCY.labels(endpoint).observe(time.perf_counter() - started)
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.before_request_funcs.setdefault(None, []).insert(0, _started)
    app.after_request(_count)
