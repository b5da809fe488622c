"""aliasd milter --listen HOST:PORT|unix:/path"""

from __future__ import annotations

import logging
import os

import click

from aliasd.cli.common import state
from aliasd.listen import ListenError, ListenSpec


@click.command("milter")
@click.option(
    "--listen",
    help="HOST:PORT, [IPv6]:PORT or unix:/path (default: the milter_listen setting).",
)
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--metrics", "metrics_listen",
              help="HOST:PORT for Prometheus /metrics (default: setting milter_metrics; '' disables).")
@click.option("--workers", type=click.IntRange(min=0),
              help="Milter processes sharing the socket (default: setting milter_workers; "
                   "0: one per CPU).")
def milter_command(listen: str | None, log_level: str, metrics_listen: str | None,
                   workers: int | None) -> None:
    """Run the milter Postfix calls for every message (smtpd_milters)."""
    from aliasd.milter.server import serve, worker_count

    logging.basicConfig(
        level=log_level.upper(), format="aliasd-milter %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the schema check is chatty
    cli = state()
    settings = cli.settings
    listen = listen or settings.milter_listen
    try:
        ListenSpec.parse(listen)
    except ListenError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from exc
    database = cli.service_database("messages pass unscanned until it is back")
    mailpath = None
    metrics_listen = settings.milter_metrics if metrics_listen is None else metrics_listen
    count = worker_count(settings, workers)
    if metrics_listen:
        registry = None
        if count > 1:  # each worker counts in files; /metrics adds them up
            registry = _multiprocess_registry()
        from aliasd.metrics import MetricsListenError, serve_metrics
        from aliasd.milter.metrics import MeasuredMailPath

        try:
            host, port = serve_metrics(metrics_listen, registry)
        except (MetricsListenError, OSError) as exc:
            raise click.BadParameter(str(exc), param_hint="--metrics") from exc
        logging.getLogger(__name__).info("metrics on http://%s:%s/metrics", host, port)
        mailpath = MeasuredMailPath(settings, database, background_events=True)
    try:
        serve(settings, database, listen, mailpath, count)
    except ListenError as exc:
        raise click.ClickException(str(exc)) from exc


def _multiprocess_registry():
    """prometheus-client's multiprocess mode, chosen before the milter's metrics exist:
    the workers write their values under PROMETHEUS_MULTIPROC_DIR (a fresh directory
    unless one is given), the /metrics endpoint of this process sums them."""
    import atexit
    import shutil
    import tempfile

    from prometheus_client import CollectorRegistry, multiprocess, values

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        directory = tempfile.mkdtemp(prefix="aliasd-milter-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        parent = os.getpid()
        atexit.register(lambda: os.getpid() == parent
                        and shutil.rmtree(directory, ignore_errors=True))
    values.ValueClass = values.get_value_class()  # in case prometheus_client was imported
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def register(group: click.Group) -> None:
    group.add_command(milter_command)
