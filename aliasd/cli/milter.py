"""aliasd milter --listen HOST:PORT|unix:/path"""

from __future__ import annotations

import logging

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
def milter_command(listen: str | None, log_level: str, metrics_listen: str | None) -> None:
    """Run the milter Postfix calls for every message (smtpd_milters)."""
    from aliasd.milter.server import serve

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
    if metrics_listen:
        from aliasd.metrics import MetricsListenError, serve_metrics
        from aliasd.milter.metrics import MeasuredMailPath

        try:
            host, port = serve_metrics(metrics_listen)
        except (MetricsListenError, OSError) as exc:
            raise click.BadParameter(str(exc), param_hint="--metrics") from exc
        logging.getLogger(__name__).info("metrics on http://%s:%s/metrics", host, port)
        mailpath = MeasuredMailPath(settings, database)
    serve(settings, database, listen, mailpath)


def register(group: click.Group) -> None:
    group.add_command(milter_command)
