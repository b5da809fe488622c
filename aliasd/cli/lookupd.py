"""aliasd lookupd: serve Postfix lookup tables (socketmap and tcp_table)."""

from __future__ import annotations

import asyncio
import logging
import signal

import click

from aliasd.cli.common import echo_err, state
from aliasd.listen import ListenSpec
from aliasd.lookup.descriptors import raise_descriptor_limit
from aliasd.lookup.registry import build_maps
from aliasd.lookup.server import LookupServer


@click.command("lookupd")
@click.option(
    "--socketmap",
    "socketmaps",
    multiple=True,
    help="HOST:PORT or unix:/path for socketmap (repeatable; default: setting lookup_socketmap; '' disables).",
)
@click.option(
    "--tcp",
    "tcps",
    multiple=True,
    help="HOST:PORT or unix:/path for tcp_table (repeatable; default: setting lookup_tcp; '' disables).",
)
@click.option("--tcp-map", default="virtual", show_default=True, help="Map served on --tcp.")
@click.option("-v", "--verbose", is_flag=True, help="Log each sync and connection problem.")
@click.option("--metrics", "metrics_listen",
              help="HOST:PORT for Prometheus /metrics (default: setting lookup_metrics; '' disables).")
def lookupd(socketmaps: tuple[str, ...], tcps: tuple[str, ...], tcp_map: str, verbose: bool,
            metrics_listen: str | None) -> None:
    """Answer Postfix's virtual_alias_maps (and other aliasd maps) from the database."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="aliasd-lookupd %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the schema check's chatter
    cli = state()
    settings = cli.settings
    database = cli.service_database("answering TEMP (Postfix defers) until it is back")
    socketmap_specs = [s for s in (socketmaps or (settings.lookup_socketmap,)) if s]
    tcp_specs = [s for s in (tcps or (settings.lookup_tcp,)) if s]
    try:
        parsed_socketmap = [ListenSpec.parse(s) for s in socketmap_specs]
        parsed_tcp = [ListenSpec.parse(s) for s in tcp_specs]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if not parsed_socketmap and not parsed_tcp:
        raise click.UsageError("nothing to listen on: give --socketmap and/or --tcp")
    maps = build_maps(settings, database)
    metrics_listen = settings.lookup_metrics if metrics_listen is None else metrics_listen
    if metrics_listen:
        from aliasd.lookup.metrics import measured
        from aliasd.metrics import MetricsListenError, serve_metrics

        maps = measured(maps)
        try:
            host, port = serve_metrics(metrics_listen)
        except (MetricsListenError, OSError) as exc:
            raise click.BadParameter(str(exc), param_hint="--metrics") from exc
        echo_err(f"metrics on http://{host}:{port}/metrics")
    if parsed_tcp and tcp_map not in maps:
        raise click.BadParameter(f"no map named {tcp_map!r}; have {', '.join(maps)}")
    raise_descriptor_limit()
    server = LookupServer(
        maps,
        idle_timeout=settings.lookup_idle_timeout,
        max_connections=settings.lookup_max_connections,
    )
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(server, parsed_socketmap, parsed_tcp, tcp_map))
    except OSError as exc:
        raise click.ClickException(f"cannot listen: {exc}") from exc


def _loop_factory():
    """uvloop when installed: about a third less time per request than asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve(
    server: LookupServer, socketmaps: list[ListenSpec], tcps: list[ListenSpec], tcp_map: str
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    server.install_loop_handler(loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start_maps()
        for spec in socketmaps:
            bound = await server.listen_socketmap(spec)
            echo_err(f"socketmap listening on {bound} (maps: {', '.join(server.maps)})")
        for spec in tcps:
            bound = await server.listen_tcp(spec, tcp_map)
            echo_err(f"tcp_table listening on {bound} (map: {tcp_map})")
        echo_err(
            f"at most {server.max_connections} connections "
            f"(idle ones closed after {server.idle_timeout:g} s)"
        )
        await stop.wait()
    finally:
        await server.close()


def register(group: click.Group) -> None:
    group.add_command(lookupd)
