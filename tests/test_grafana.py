"""Grafana (infra/grafana, compose profile ``grafana``): every dashboard query runs on chdb and returns rows.

The store is filled the way a deployment fills it: a crafted stream of two GRPO runs (interactions with
two reward functions, trainer steps with a non-finite loss, judge scores as the judge worker publishes
them) and two runs of API calls (models, latencies, tokens, a failed call) go through the embedded bus
and the worker, which stores it and publishes the reward and group statistics and alerts. Each panel,
annotation and variable query is then interpolated as the ClickHouse data source plugin does it
(``grafana_sql``) and run.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import importlib.util
import json
import math
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from grafana_sql import ALL, QueryContext, UnknownMacro, Variable, interpolate

from trainwire.bus import Emitter
from trainwire.config import Settings
from trainwire.events import Event, Interaction, JudgeScore, TrainStep
from trainwire.processors.stats import StatsConfig
from trainwire.runtime import WorkerOptions, build_pipeline
from trainwire.store.clickhouse import OwnerEndpoint, Store, open_store

GRAFANA = ROOT / "infra" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
PLUGIN = "grafana-clickhouse-datasource"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
STEPS, GROUPS, GENERATIONS = 6, 3, 4
TRAINING_RUNS = ("grpo-a", "grpo-b")
API_RUNS = ("api-a", "api-b")


def _training_run(run: str, offset_s: int) -> list[Event]:
    """Interactions (group 0 never varies), judge scores (one failed per step), a train step per step."""
    events: list[Event] = []
    for step in range(STEPS):
        at = T0 + timedelta(seconds=offset_s + 10 * step)
        for group in range(GROUPS):
            for index in range(GENERATIONS):
                accuracy = 1.0 if group == 0 else float((step + group + index) % 2)
                fmt = 0.5 if group == 0 else 0.25 * index
                interaction = Event(
                    run,
                    Interaction(
                        prompt=f"question {step}-{group}",
                        completion="x" * (5 + 3 * index),
                        reward=accuracy + fmt,
                        rewards={"accuracy": accuracy, "format": fmt},
                        step=step,
                        group_id=f"{step}:{group}",
                        group_index=index,
                        prompt_tokens=8,
                        completion_tokens=5 + 3 * index,
                    ),
                    ts=at + timedelta(milliseconds=100 * (GENERATIONS * group + index)),
                )
                events.append(interaction)
                if index % 2 == 0:
                    # the judge agrees with the accuracy reward, but on group 2 it says the opposite
                    judged = 1.0 - accuracy if group == 2 else accuracy
                    verdict = JudgeScore(
                        interaction_id=interaction.event_id,
                        judge_model="judge",
                        template_version="v1",
                        score=10 * judged,
                        score_normalized=judged,
                        reasoning="checked the answer",
                        step=step,
                        reward=accuracy + fmt,
                        rewards={"accuracy": accuracy, "format": fmt},
                    )
                    events.append(Event(run, verdict, ts=at + timedelta(seconds=5)))
                elif index == 1 and group == 1:
                    failed = JudgeScore(
                        interaction_id=interaction.event_id,
                        judge_model="judge",
                        template_version="v1",
                        success=False,
                        raw_output="no score in this",
                        error="no score found",
                        step=step,
                    )
                    events.append(Event(run, failed, ts=at + timedelta(seconds=5)))
        loss = math.nan if step == 3 else 1.0 / (step + 1)
        metrics = {"kl": 0.01 * step, "completions/mean_length": 10.0 + step}
        train_step = TrainStep(step=step, loss=loss, grad_norm=1.0, learning_rate=1e-5, metrics=metrics)
        events.append(Event(run, train_step, ts=at + timedelta(seconds=8)))
    return events


def _api_calls(run: str) -> list[Event]:
    """Calls to two models, one of them failed."""
    events = []
    for i in range(12):
        model = ("small", "large")[i % 2]
        failed = i == 7
        call = Interaction(
            prompt=f"call {i}",
            completion="" if failed else f"answer {i}",
            success=not failed,
            error="timeout after 30 s" if failed else None,
            latency_ms=100.0 * (1 + i % 3) * (3 if model == "large" else 1),
            prompt_tokens=20 + i,
            completion_tokens=None if failed else 10 + i,
            model=model,
        )
        events.append(Event(run, call, ts=T0 + timedelta(seconds=30 * i)))
    return events


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The crafted stream through the embedded bus and the worker, into chdb."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("grafana") / "data")
    stream = _training_run("grpo-a", 0) + _training_run("grpo-b", 120) + _api_calls("api-a") + _api_calls("api-b")
    with Emitter(settings) as emitter:
        for event in stream:
            emitter.emit(event)
    with open_store(settings) as store:
        store.migrate()
        options = WorkerOptions(stats=StatsConfig(step_window=2))
        asyncio.run(build_pipeline(settings, store, options).run(idle_exit_s=1.5))
        yield store


def _load_library_panels():
    """``infra/grafana/library_panels.py`` (a script beside the dashboards, not part of the package)."""
    spec = importlib.util.spec_from_file_location("library_panels", GRAFANA / "library_panels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


library_panels = _load_library_panels()


def _datasource() -> dict:
    """The data source infra/grafana provisions for the dashboards."""
    config = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "trainwire.yaml").read_text())
    (datasource,) = config["datasources"]
    return datasource


def _queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, SQL) of every panel target and annotation of ``dashboard`` that reads ClickHouse."""
    queries = [(f"panel {p['title']!r}", t["rawSql"]) for p in dashboard["panels"] for t in p["targets"]]
    for annotation in dashboard["annotations"]["list"]:
        if annotation["datasource"].get("type") == PLUGIN:
            queries.append((f"annotation {annotation['name']!r}", annotation["target"]["rawSql"]))
    return queries


def _run_variable(dashboard: dict) -> dict:
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "run"]
    return variable


def _runs(store: Store, dashboard: dict, context: QueryContext) -> tuple[str, ...]:
    """The options of the dashboard's ``run`` variable in ``context``'s time range, by its own query."""
    sql = interpolate(_run_variable(dashboard)["query"]["rawSql"], context)
    return tuple(next(iter(row.values())) for row in store.query_rows(sql))


IN_RANGE = QueryContext(T0 - timedelta(hours=1), T0 + timedelta(hours=1), interval_s=30)
SELECTED_RUN = {"llm_calls": API_RUNS[0]}  # the run selected alone; the others: the first training run


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_query_returns_rows_for_all_runs_and_for_one(store: Store, path: Path) -> None:
    dashboard = json.loads(path.read_text())
    runs = _runs(store, dashboard, IN_RANGE)
    assert set(runs) == {*TRAINING_RUNS, *API_RUNS}
    one = SELECTED_RUN.get(path.stem, TRAINING_RUNS[0])
    for selection in ((ALL,), (one,)):
        context = QueryContext(IN_RANGE.time_from, IN_RANGE.time_to, 30, {"run": Variable(runs, selection)})
        for where, sql in _queries(dashboard):
            rows = store.query_rows(interpolate(sql, context))
            assert rows, f"{path.name}: {where} returned no rows with run = {selection}"
            if selection != (ALL,):
                shown = {row.get("run", row.get("run_id")) for row in rows} - {None}
                assert shown <= {one}, f"{path.name}: {where} shows runs {shown} with only {one} selected"


def test_every_query_runs_as_the_read_only_user_on_the_embedded_endpoint(store: Store) -> None:
    """What the grafana-embedded profile does: the plugin logs in as trainwire_ro on the endpoint of the
    process owning the data directory (here this test's store) and sends each query with
    max_execution_time on the URL, as clickhouse-go does over HTTP."""
    owner = OwnerEndpoint.read(store.data_dir)
    login = base64.b64encode(f"{owner.read_only_user.name}:{owner.read_only_user.password}".encode()).decode()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        runs = Variable(_runs(store, dashboard, IN_RANGE), (ALL,))
        context = QueryContext(IN_RANGE.time_from, IN_RANGE.time_to, 30, {"run": runs})
        for where, sql in _queries(dashboard):
            request = urllib.request.Request(
                f"{owner.url}/?max_execution_time=60&default_format=JSONEachRow",
                data=interpolate(sql, context).encode(),
                headers={"Authorization": f"Basic {login}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    rows = response.read().splitlines()
            except urllib.error.HTTPError as refused:
                pytest.fail(f"{path.name}: {where}: {refused.code} {refused.read().decode()[:300]}")
            assert rows, f"{path.name}: {where} returned no rows through the endpoint"


def test_the_judge_score_per_step_is_on_0_to_1_as_the_panel_says(store: Store) -> None:
    """judge_pairs.score is the judge's own scale (1-5; here 0-10) since migration 0009: the panel
    reads score_normalized, as its description says."""
    dashboard = json.loads((GRAFANA / "dashboards" / "judge_vs_reward.json").read_text())
    context = QueryContext(
        IN_RANGE.time_from, IN_RANGE.time_to, 30, {"run": Variable(_runs(store, dashboard, IN_RANGE))}
    )
    (panel,) = [p for p in dashboard["panels"] if "score_normalized" in p.get("description", "")]
    rows = store.query_rows(interpolate(panel["targets"][0]["rawSql"], context))
    judge = [row["value"] for row in rows if row["series"].endswith(" judge score")]
    assert judge and all(0 <= value <= 1 for value in judge)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_but_the_library_tables_follows_the_time_range(store: Store, path: Path) -> None:
    dashboard = json.loads(path.read_text())
    before = QueryContext(T0 - timedelta(days=2), T0 - timedelta(days=1), 30)
    assert _runs(store, dashboard, before) == ()
    runs = _runs(store, dashboard, IN_RANGE)
    context = QueryContext(before.time_from, before.time_to, 30, {"run": Variable(runs)})
    library = {t["rawSql"] for t in library_panels.library_targets(dashboard)}  # a run's whole history
    filtered = [(where, sql) for where, sql in _queries(dashboard) if sql not in library]
    assert filtered
    for where, sql in filtered:
        assert "$__timeFilter" in sql, f"{path.name}: {where} does not follow the dashboard's time range"
        assert store.query_rows(interpolate(sql, context)) == [], f"{path.name}: {where} ignores the time range"


def test_panels_that_show_a_library_query_are_in_step_with_it() -> None:
    shown = []
    for path in DASHBOARDS:
        for target in library_panels.library_targets(json.loads(path.read_text())):
            name = target["trainwireQuery"]
            shown.append(name)
            assert target["rawSql"] == library_panels.library_sql(name), (
                f"{path.name}: the panel showing library query {name} is out of step with "
                f"trainwire/analysis/queries/{name}.sql: run python infra/grafana/library_panels.py"
            )
    assert shown


def test_dashboards_are_valid_for_provisioning() -> None:
    datasource = _datasource()
    assert datasource["type"] == PLUGIN and datasource["jsonData"]["protocol"] == "http"
    reference = {"type": PLUGIN, "uid": datasource["uid"]}
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    plugin_version = compose["services"]["grafana"]["environment"]["GF_PLUGINS_PREINSTALL_SYNC"].split("@")[1]
    uids = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        where = path.name
        uids.append(dashboard["uid"])
        assert dashboard["title"] and len(dashboard["uid"]) <= 40, where
        # Grafana migrates schemaVersion 9 and up; 36 is the first with data source references as
        # {type, uid}, as here; 39 is what the plugin's own dashboards ship
        assert 36 <= dashboard["schemaVersion"] <= 41, where
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids), f"{where}: panel ids {ids}"
        for panel in dashboard["panels"]:
            at = f"{where}: panel {panel['title']!r}"
            assert panel["datasource"] == reference, at
            grid = panel["gridPos"]
            assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, at
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert ref_ids and len(ref_ids) == len(set(ref_ids)), at
            for target in panel["targets"]:
                assert target["datasource"] == reference and target["editorType"] == "sql", at
                # the plugin migrates a target without its 4.x version as a 3.x one
                assert target["pluginVersion"] == plugin_version, at
                assert target["format"] == (0 if panel["type"] == "timeseries" else 1), at
        for annotation in dashboard["annotations"]["list"]:
            if not annotation.get("builtIn"):
                assert annotation["datasource"] == reference == annotation["target"]["datasource"], where
                assert annotation["target"]["pluginVersion"] == plugin_version, where
        variable = _run_variable(dashboard)
        assert variable["type"] == "query" and variable["datasource"] == reference, where
        assert variable["multi"] and variable["includeAll"] and "allValue" not in variable, where
        for _, sql in _queries(dashboard):
            assert re.search(r"\$\{run:singlequote\}|\$run\b", sql), where
    assert len(uids) == len(set(uids))
    assert {p.stem for p in DASHBOARDS} == {"training_overview", "grpo_groups", "judge_vs_reward", "llm_calls"}


def test_compose_profile_provisions_the_data_source_and_the_dashboards() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "trainwire.yaml").read_text())
    (dashboards,) = provider["providers"]
    wanted = set(re.findall(r"\$(\w+)", (GRAFANA / "provisioning" / "datasources" / "trainwire.yaml").read_text()))
    assert wanted
    for name, profile in (("grafana", "grafana"), ("grafana-embedded", "grafana-embedded")):
        service = compose["services"][name]
        assert service["profiles"] == [profile]
        assert service["environment"]["GF_PLUGINS_PREINSTALL_SYNC"].startswith(f"{PLUGIN}@")
        assert wanted <= set(service["environment"]), f"{name} leaves {wanted - set(service['environment'])} unset"
        mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in service["volumes"] if ":ro" in volume)
        assert mounts["./infra/grafana/provisioning"] == "/etc/grafana/provisioning", name
        assert mounts["./infra/grafana/dashboards"] == dashboards["options"]["path"], name
    server = compose["services"]["grafana"]["environment"]
    assert server["TRAINWIRE_GRAFANA_CLICKHOUSE_HOST"] == "clickhouse"
    assert server["TRAINWIRE_GRAFANA_CLICKHOUSE_PORT"] == "8123"


# --------------------------------------------------------------------------- the expander itself

DOCUMENTED = QueryContext(
    datetime.fromtimestamp(1415792726.123, UTC), datetime.fromtimestamp(1447328726.456, UTC), interval_s=20
)


def test_interpolate_gives_the_plugins_documented_expansions() -> None:
    ctx = dataclasses.replace(DOCUMENTED, variables={"run": Variable(("a", "b'c", "d"), ("a", "b'c"))})
    cases = {
        "$__timeFilter(time)": "time >= toDateTime(1415792726) AND time <= toDateTime(1447328726)",
        "$__timeFilter_ms(time)": (
            "time >= fromUnixTimestamp64Milli(1415792726123) AND time <= fromUnixTimestamp64Milli(1447328726456)"
        ),
        "$__fromTime AND $__toTime": "toDateTime(1415792726) AND toDateTime(1447328726)",
        "$__fromTime_ms": "fromUnixTimestamp64Milli(1415792726123)",
        "$__interval_s": "20",
        "$__timeInterval(column)": "toStartOfInterval(toDateTime(column), INTERVAL 20 second)",
        "$__timeInterval_ms(column)": "toStartOfInterval(toDateTime64(column, 3), INTERVAL 20000 millisecond)",
        "$__dateFilter(date)": "date >= toDate('2014-11-12') AND date <= toDate('2015-11-12')",
        "x IN (${run:singlequote})": "x IN ('a','b\\'c')",
        "$__conditionalAll(f(x, ','), $run) AND 1": "f(x, ',') AND 1",
    }
    for sql, expanded in cases.items():
        assert interpolate(sql, ctx) == expanded, sql
    everything = dataclasses.replace(ctx, variables={"run": Variable(("a", "d"))})
    assert interpolate("$__conditionalAll(x IN (${run:singlequote}), $run)", everything) == "1=1"
    assert interpolate("[${run:singlequote}]", everything) == "['a','d']"


@pytest.mark.parametrize(
    "sql",
    ["$__unknownMacro(x)", "${run:csv}", "x = $run", "${other:singlequote}", "$__timeFilter(a, b)", "$__timeFilter(a"],
)
def test_interpolate_refuses_what_it_does_not_expand_as_the_plugin(sql: str) -> None:
    ctx = dataclasses.replace(DOCUMENTED, variables={"run": Variable(("a",))})
    with pytest.raises(UnknownMacro):
        interpolate(sql, ctx)
