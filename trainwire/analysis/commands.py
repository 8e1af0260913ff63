"""The ``trainwire query`` and ``trainwire analyze`` commands (click), registered by the CLI.

Both receive the :class:`~trainwire.config.Settings` of the ``trainwire`` group as the click
context object, make sure the schema and the analysis views exist, and work while a worker owns
the embedded chdb (the statements are routed through it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from trainwire.analysis.report import HIGH_QUALITY_THRESHOLD
from trainwire.config import Settings
from trainwire.errors import TrainwireError
from trainwire.output import echo_arrow, format_option

if TYPE_CHECKING:
    from trainwire.store.clickhouse import Store

__all__ = ["analyze_command", "open_migrated", "query_command"]


def open_migrated(settings: Settings) -> Store:
    """The store, migrated, with the analysis views (close it after use: a context manager)."""
    from trainwire.store.clickhouse import open_store

    store = open_store(settings)
    try:
        store.migrate()
    except Exception:
        store.close()
        raise
    return store


def _parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--param")
        params[key.strip()] = value
    return params


@click.command("query")
@click.argument("name", required=False)
@click.option(
    "--param",
    "-p",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A query parameter (repeatable); lists are comma-separated.",
)
@format_option
@click.option("--list", "list_", is_flag=True, help="List the named queries and their parameters.")
@click.pass_obj
def query_command(settings: Settings, name: str | None, pairs: tuple[str, ...], fmt: str, list_: bool) -> None:
    """Run the named analysis query NAME (see --list) and print its rows.

    trainwire query reward_summary -p runs=grpo-1,grpo-2 -p reward_fn=accuracy --format csv
    """
    try:
        _query(settings, name, pairs, fmt, list_)
    except TrainwireError as exc:
        raise click.ClickException(str(exc)) from exc


def _query(settings: Settings, name: str | None, pairs: tuple[str, ...], fmt: str, list_: bool) -> None:
    from trainwire.analysis.queries import check_reward_fn, get_query, list_queries, run_query

    if list_ or not name:
        if not list_:
            raise click.UsageError("give a query NAME, or --list to see them")
        for query in list_queries():
            click.echo(f"{query.name}\n    {query.description}")
            for p in query.params:
                default = "required" if p.required else f"default {json.dumps(p.default)}"
                choices = f"; one of {', '.join(p.choices)}" if p.choices else ""
                click.echo(f"    --param {p.name}=<{p.type}>  ({default}{choices}) {p.description}")
        return
    query = get_query(name)  # unknown names fail before opening the store
    params = _parse_params(pairs)
    bound = query.bind(params)  # unknown, missing or malformed parameters fail before opening the store too
    with open_migrated(settings) as store:
        if "reward_fn" in params:  # a reward function the runs do not have is named, not answered with nothing
            runs = bound.get("runs") or ([bound["run"]] if bound.get("run") else [])
            check_reward_fn(store, name, runs, bound["reward_fn"])
        table = run_query(store, name, **params)
    echo_arrow(table, fmt)


@click.command("analyze")
@click.option("--run", "runs", multiple=True, help="A run to include (repeatable); default: every run.")
@click.option(
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("analysis_output"),
    show_default=True,
    help="Directory for the plots, JSON files and dashboard.",
)
@click.option(
    "--threshold",
    type=float,
    default=HIGH_QUALITY_THRESHOLD,
    show_default=True,
    help="Rewards at or above this are high quality.",
)
@click.option("--bins", type=click.IntRange(min=1, max=1000), default=20, show_default=True, help="Histogram bins.")
@click.option(
    "--samples", type=click.IntRange(min=0), default=5, show_default=True, help="Examples of each kind in samples.json."
)
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the random examples.")
@click.pass_obj
def analyze_command(
    settings: Settings, runs: tuple[str, ...], output: Path, threshold: float, bins: int, samples: int, seed: int
) -> None:
    """Report on the stored runs: statistics as tables, PNG plots, samples.json, analysis_results.json
    and an interactive dashboard.html that opens from a file (no server, no network).
    """
    from trainwire.analysis.report import analyze
    from trainwire.progress import Progress

    started = time.monotonic()
    queries = 0
    try:
        with open_migrated(settings) as store, Progress("analyze") as progress:

            def ran(done: int, total: int) -> None:
                nonlocal queries
                queries = done
                progress.update(done, f"{done}/{total} queries", total=total)

            report = analyze(
                store, output, list(runs), threshold=threshold, bins=bins, samples=samples, seed=seed, on_query=ran
            )
    except TrainwireError as exc:
        raise click.ClickException(str(exc)) from exc
    if report.results.empty:  # as export: an error, exit status 1
        from trainwire.analysis.report import nothing_to_analyze

        raise click.ClickException(nothing_to_analyze(runs))
    click.echo(f"wrote {len(report.files)} files to {output}:")
    for path in report.files:
        click.echo(f"  {path.name}")
    analyzed = len({row["run_id"] for row in report.results.rows("runs_overview")})
    click.echo(
        f"analyzed {analyzed} run{'s' if analyzed != 1 else ''}: {queries} queries, "
        f"{len(report.files)} files in {time.monotonic() - started:.1f}s"
    )
