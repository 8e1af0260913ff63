"""``trainwire ui`` and the ``--ui`` options that ``trainwire worker`` and ``trainwire demo`` share."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from trainwire.config import Settings
from trainwire.ui.auth import AUTH_ENV, Credentials
from trainwire.ui.server import DEFAULT_PORT, UiServer

if TYPE_CHECKING:
    from trainwire.store.clickhouse import Store


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on (beyond loopback: --auth).")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="Port to serve on.")
@click.option("--auth", metavar="USER:PASSWORD", help=f"Ask browsers for these credentials (or set {AUTH_ENV}).")
@click.pass_obj
def ui_command(settings: Settings, host: str, port: int, auth: str | None) -> None:
    """Serve the live web UI over the store: runs, a run's charts (updated as it trains), GRPO groups,
    samples, judge, alerts and logits (Ctrl+C stops it).

    On the embedded chdb it reads through the worker that owns the data directory; started first,
    it owns the directory only until a worker asks for it. It only reads: no view runs SQL of its
    own or changes data.
    """
    from trainwire.store.clickhouse import open_reader

    with open_reader(settings) as store:
        server = UiServer(store, host, port, Credentials.from_option(auth))
        click.echo(f"trainwire UI: {server.url} (Ctrl+C stops it)")
        server.run()


def ui_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--ui`` and ``--ui-port`` for a command that serves the UI beside its own work (on 127.0.0.1)."""
    command = click.option("--ui-port", type=int, default=DEFAULT_PORT, show_default=True, help="--ui: port.")(command)
    return click.option(
        "--ui",
        "serve_ui",
        is_flag=True,
        help=f"Serve the web UI on 127.0.0.1 meanwhile (credentials from {AUTH_ENV} when set).",
    )(command)


def start_ui(store: Store, port: int) -> UiServer:
    """Serve the UI over ``store`` on 127.0.0.1:``port`` in the background."""
    return UiServer(store, "127.0.0.1", port, Credentials.from_option(None)).start()
