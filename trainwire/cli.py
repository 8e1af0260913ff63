"""The ``trainwire`` command.

Every subcommand gets a :class:`~trainwire.config.Settings` built from the global flags and the
``TRAINWIRE_*`` environment (flags win) as its click context object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from trainwire.config import Settings
from trainwire.errors import TrainwireError
from trainwire.output import echo_arrow, format_option
from trainwire.private_files import make_process_private
from trainwire.progress import Progress, RateMeter
from trainwire.sinks.alert_webhook import DeliveryConfig, Webhook
from trainwire.sinks.dataset import FORMATS, dataset_config, dataset_filter_options
from trainwire.ui.command import ui_options

if TYPE_CHECKING:
    from trainwire.runtime.pipeline import WorkerCore


class _Group(click.Group):
    """A click group that turns trainwire errors into one clear line and exit code 1.

    Every command's errors start the same way, as click's own usage errors do: ``Error: ...`` on
    stderr (commands raise :class:`click.ClickException` or a :class:`TrainwireError`).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TrainwireError as exc:
            raise click.ClickException(str(exc)) from None


def quiet_libraries() -> None:
    """Show trainwire's own warnings and only the errors of the libraries it uses (MLflow, httpx,
    transformers, aiokafka, ...), so their chatter never comes before trainwire's own lines.

    MLflow and transformers set their loggers (and Hugging Face its progress bars) up from their
    environment variables when imported; those are set here unless the user set them.
    """
    logging.getLogger().setLevel(logging.ERROR)
    logging.getLogger("trainwire").setLevel(logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # trainwire reports a Kafka failure itself, naming it
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' own bars ("Loading weights") too


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trainwire", prog_name="trainwire", message="%(prog)s %(version)s")
@click.option("--kafka", envvar="TRAINWIRE_KAFKA", help="Kafka bootstrap servers (unset: the embedded bus).")
@click.option("--clickhouse", envvar="TRAINWIRE_CLICKHOUSE", help="ClickHouse URL http(s)://user:pw@host:port/db.")
@click.option(
    "--data-dir",
    envvar="TRAINWIRE_DATA_DIR",
    type=click.Path(path_type=Path),
    help="Embedded bus, spool and chdb data (default ./trainwire-data).",
)
@click.option("--topic-prefix", envvar="TRAINWIRE_TOPIC_PREFIX", help="Prefix of every topic (default trainwire).")
@click.pass_context
def main(
    ctx: click.Context, kafka: str | None, clickhouse: str | None, data_dir: Path | None, topic_prefix: str | None
) -> None:
    """trainwire: stream what an LLM does in training and inference into statistics, judge scores,
    fine-tuning data and ClickHouse.

    With no --kafka and no --clickhouse everything runs on this machine: an embedded bus and
    ClickHouse's engine in-process (chdb), both under --data-dir.
    """
    make_process_private()
    quiet_libraries()
    try:
        ctx.obj = Settings.from_env(kafka=kafka, clickhouse=clickhouse, data_dir=data_dir, topic_prefix=topic_prefix)
    except TrainwireError as exc:
        raise click.UsageError(str(exc)) from None


# --------------------------------------------------------------------------- sql


@main.command()
@click.argument("query")
@format_option
@click.pass_obj
def sql(settings: Settings, query: str, fmt: str) -> None:
    """Run a SQL QUERY against the store and print the result.

    Works while a worker owns the embedded chdb data directory: the query is routed through it.
    Count events the documented way, with FINAL, e.g.
    trainwire sql "SELECT run_id, count() FROM interactions FINAL GROUP BY run_id"
    """
    from trainwire.store.clickhouse import open_store

    with open_store(settings) as store:
        table = store.query_arrow(query)
    echo_arrow(table, fmt)


# --------------------------------------------------------------------------- worker


@main.command()
@click.option("--group", default="trainwire-worker", show_default=True, help="Consumer group name.")
@click.option("--until-idle", type=float, default=None, help="Exit after this many seconds with no new events.")
@click.option("--store/--no-store", default=True, show_default=True, help="Store every event in ClickHouse.")
@click.option("--monitor/--no-monitor", default=True, show_default=True, help="Reward stats, group stats, alerts.")
@click.option("--step-window", type=int, default=10, show_default=True, help="Tumbling stats window, in steps.")
@click.option("--time-window", type=float, default=300.0, show_default=True, help="Sliding stats window, seconds.")
@click.option(
    "--dataset",
    "dataset_output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write fine-tuning data to this JSONL file, continuously (the options below marked Dataset: filter it).",
)
@click.option(
    "--dataset-format",
    type=click.Choice(list(FORMATS)),
    default="alpaca",
    show_default=True,
    help="Dataset: the format of the --dataset file (as trainwire export --format).",
)
@dataset_filter_options(prefix="Dataset: ", seed_help="Seed of the split hash (which split an example goes to).")
@click.option(
    "--runtime",
    type=click.Choice(["auto", "faust", "embedded"]),
    default="auto",
    show_default=True,
    help="faust (Kafka only; workers of a group share partitions) or the embedded runner; auto: faust on Kafka.",
)
@click.option("--partitions", type=int, default=6, show_default=True, help="faust: partitions of topics it creates.")
@click.option("--web-port", type=int, help="faust: serve faust's web UI on 127.0.0.1:PORT (default: off).")
@click.option(
    "--session-timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="faust: seconds before a dead worker's partitions move to the others.",
)
@click.option("--flush-interval", type=float, default=0.5, show_default=True, help="Most seconds between commits.")
@click.option(
    "--alert-webhook",
    "alert_webhooks",
    metavar="URL",
    multiple=True,
    envvar="TRAINWIRE_ALERT_WEBHOOKS",
    callback=lambda ctx, param, specs: _webhooks(specs),
    help='Post each alert as JSON to this URL (the alert event; slack+URL: Slack\'s {"text"}). Repeatable; '
    "TRAINWIRE_ALERT_WEBHOOKS takes URLs separated by spaces.",
)
@click.option(
    "--alert-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DeliveryConfig.timeout_s,
    show_default=True,
    envvar="TRAINWIRE_ALERT_TIMEOUT",
    help="Seconds a webhook has to answer a post.",
)
@click.option(
    "--alert-retries",
    type=click.IntRange(min=0),
    default=DeliveryConfig.retries,
    show_default=True,
    envvar="TRAINWIRE_ALERT_RETRIES",
    help="Posts tried again after a failure (refused, hung up, no answer, HTTP 5xx or 429).",
)
@click.option(
    "--alert-backoff",
    type=click.FloatRange(min=0),
    default=DeliveryConfig.backoff_s,
    show_default=True,
    envvar="TRAINWIRE_ALERT_BACKOFF",
    help="Seconds before the first retry, doubled for each next one.",
)
@click.option(
    "--alert-queue",
    type=click.IntRange(min=1),
    default=DeliveryConfig.max_queue,
    show_default=True,
    envvar="TRAINWIRE_ALERT_QUEUE",
    help="Alerts waiting per webhook; past that, new ones are dropped (counted and logged).",
)
@ui_options
@click.pass_obj
def worker(
    settings: Settings,
    group: str,
    until_idle: float | None,
    store: bool,
    monitor: bool,
    step_window: int,
    time_window: float,
    dataset_output: Path | None,
    dataset_format: str,
    runtime: str,
    partitions: int,
    web_port: int | None,
    session_timeout: float,
    flush_interval: float,
    alert_webhooks: tuple[Webhook, ...],
    alert_timeout: float,
    alert_retries: int,
    alert_backoff: float,
    alert_queue: int,
    serve_ui: bool,
    ui_port: int,
    **dataset_filters: Any,
) -> None:
    """Process the event stream: store it in ClickHouse, publish reward stats, group stats and health
    alerts, and write fine-tuning data (Ctrl+C stops it cleanly).

    Offsets are committed only after ClickHouse acknowledged the batch and the dataset files are
    fsynced; undecodable or refused records go to the dead-letter topic with the reason. While this
    runs on the embedded chdb, `trainwire sql` from another shell is answered through it.

    The Dataset: options mean what they mean for trainwire export. Export's --limit and --shuffle
    are not here: a stream has no end to shuffle or to draw a sample from (export from the store).
    """
    from trainwire.processors.stats import StatsConfig
    from trainwire.runtime import WorkerOptions, run_worker
    from trainwire.store.clickhouse import open_store

    given = _options_given(click.get_current_context(), ("dataset_format", *dataset_filters))
    if dataset_output is None and given:
        raise click.UsageError(f"{', '.join(given)}: only for the fine-tuning data; add --dataset FILE")
    options = WorkerOptions(
        group=group,
        store=store,
        monitor=monitor,
        stats=StatsConfig(step_window=step_window, time_window_s=time_window, time_hop_s=time_window / 5),
        dataset_output=dataset_output,
        dataset_format=dataset_format,
        dataset=dataset_config(**dataset_filters),
        alert_webhooks=alert_webhooks,
        alert_delivery=DeliveryConfig(
            timeout_s=alert_timeout, retries=alert_retries, backoff_s=alert_backoff, max_queue=alert_queue
        ),
    )
    if runtime == "auto":
        runtime = "embedded" if settings.embedded_bus else "faust"
    if runtime == "faust" and settings.embedded_bus:
        raise click.UsageError("--runtime faust needs Kafka: pass --kafka HOST:PORT or set TRAINWIRE_KAFKA")
    bus = "the embedded bus" if settings.embedded_bus else f"Kafka {settings.kafka}"
    with contextlib.ExitStack() as stack:
        ch = None
        if store:
            ch = stack.enter_context(open_store(settings, own_within_s=60))
            ch.migrate()
        click.echo(f"worker {group} ({runtime} runtime): {bus}" + (" -> ClickHouse" if ch else ""))
        if serve_ui:
            from trainwire.store.clickhouse import open_reader
            from trainwire.ui.command import start_ui

            ui = start_ui(ch or stack.enter_context(open_reader(settings)), ui_port)
            stack.callback(ui.stop)
            click.echo(f"web UI: {ui.url}")
        started = time.monotonic()
        progress = stack.enter_context(Progress("worker"))

        def show(core: WorkerCore) -> None:
            progress.update(status=worker_status(core))

        if runtime == "faust":
            from trainwire.runtime.faust_app import run_faust_worker

            done = run_faust_worker(
                settings,
                ch,
                options,
                web_port=web_port,
                idle_exit_s=until_idle,
                partitions=partitions,
                flush_interval_s=flush_interval,
                session_timeout_s=session_timeout,
                on_start=show,
            )
            core = done.core
        else:
            core = run_worker(
                settings, ch, options, idle_exit_s=until_idle, flush_interval_s=flush_interval, on_start=show
            ).core
    elapsed = time.monotonic() - started
    click.echo(
        f"worker stopped: {core.records_in} records consumed, {core.events_stored} stored, "
        f"{core.publisher.published} published, {core.dead_letters.count} dead letters "
        f"in {elapsed:.1f}s ({core.records_in / max(elapsed, 1e-9):.0f} records/s)"
    )


def worker_status(core: WorkerCore) -> Callable[[], str]:
    """The worker's progress text: events consumed and stored so far, and per second lately."""
    consumed, stored = RateMeter(), RateMeter()

    def status() -> str:
        records, events = core.records_in, core.events_stored
        return f"{records} consumed ({consumed(records):.0f}/s) · {events} stored ({stored(events):.0f}/s)"

    return status


def _webhooks(specs: tuple[str, ...]) -> tuple[Webhook, ...]:
    try:
        return tuple(Webhook.parse(spec) for spec in specs)
    except TrainwireError as exc:
        raise click.BadParameter(str(exc), param_hint="--alert-webhook / TRAINWIRE_ALERT_WEBHOOKS") from None


def _options_given(ctx: click.Context, names: tuple[str, ...]) -> list[str]:
    """Which of the parameters ``names`` were set on the command line, spelled as in --help."""
    return [
        "/".join((*param.opts, *param.secondary_opts))
        for param in ctx.command.params
        if param.name in names and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
    ]


# --------------------------------------------------------------------------- db


@main.group()
def db() -> None:
    """Manage the ClickHouse schema; reach the embedded store from other clients."""


@db.command()
@click.pass_obj
def migrate(settings: Settings) -> None:
    """Apply the schema migrations that are not applied yet (safe to run again)."""
    from trainwire.store.clickhouse import open_store

    with open_store(settings) as store:
        applied = store.migrate()
    click.echo(f"applied: {', '.join(applied)}" if applied else "schema up to date")


@db.command()
@click.pass_obj
def endpoint(settings: Settings) -> None:
    """Print how other ClickHouse clients reach the embedded store while a process owns it.

    The URL, the read-write and read-only users with their passwords, and examples for curl,
    clickhouse-connect and JDBC (DBeaver). Fails if no process owns the data directory.
    """
    from trainwire.store.clickhouse import endpoint_instructions, running_owner

    if settings.clickhouse:
        raise click.ClickException("--clickhouse/TRAINWIRE_CLICKHOUSE is a ClickHouse server: connect to it directly")
    owner = running_owner(settings.data_dir)
    if owner is None:
        raise click.ClickException(
            f"no process owns the chdb data in {settings.data_dir}: start one that keeps it open "
            "(trainwire worker, trainwire ui) and run this again"
        )
    click.echo(endpoint_instructions(owner))


# --------------------------------------------------------------------------- topics


@main.group()
def topics() -> None:
    """Manage Kafka topics."""


@topics.command("create")
@click.option("--partitions", type=int, default=6, show_default=True, help="Partitions per topic.")
@click.option("--replication", type=int, default=1, show_default=True, help="Replication factor.")
@click.pass_obj
def topics_create(settings: Settings, partitions: int, replication: int) -> None:
    """Create every trainwire topic on Kafka (existing topics are left as they are)."""
    from trainwire.bus.admin import create_topics

    created = asyncio.run(create_topics(settings, partitions=partitions, replication=replication))
    for name, status in created.items():
        click.echo(f"{name}: {status}")


# --------------------------------------------------------------------------- commands of the parts


def _register_parts() -> None:
    """Add the subcommands that live next to the code they run."""
    from trainwire.analysis.audit import audit_command
    from trainwire.analysis.commands import analyze_command, query_command
    from trainwire.demo import demo_command
    from trainwire.judge.worker import judge_command
    from trainwire.producers.importers import import_command
    from trainwire.producers.probe import probe_command
    from trainwire.sinks.dataset import export_command
    from trainwire.ui.command import ui_command

    commands = (demo_command, import_command, export_command, probe_command, judge_command, query_command, ui_command)
    for command in (*commands, analyze_command, audit_command):
        main.add_command(command)


_register_parts()


if __name__ == "__main__":
    main()
