"""The web UI in a real browser (Playwright driving Debian's chromium, headless) over a real store.

One ``trainwire ui`` process and one browser serve the whole module. The data is made the way a
deployment makes it: events emitted to the embedded bus and stored by the worker pipeline (which
also computes the reward stats, group stats and alerts). Screenshots of every view go to
``test-artifacts/ui/``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from browser import ARTIFACTS, Console, free_port, launch_chromium
from playwright.sync_api import Browser, Page, sync_playwright

from trainwire.analysis.queries import run_query
from trainwire.bus import Emitter
from trainwire.config import Settings
from trainwire.errors import ConfigError
from trainwire.events import Event, Interaction, JudgeScore, Logits, TrainStep
from trainwire.processors.health import HealthConfig
from trainwire.processors.stats import StatsConfig
from trainwire.runtime import WorkerOptions, build_pipeline
from trainwire.store.clickhouse import OwnerEndpoint, open_store
from trainwire.ui.auth import AUTH_ENV, Credentials
from trainwire.ui.views import VIEWS

RUN, PROBE = "grpo-ui", "probe-ui"
STEPS, GROUPS, GENERATIONS = 6, 3, 4


def rewards_of(step: int, group: int, index: int) -> dict[str, float]:
    """Group 0 does not vary; groups 1 and 2 do."""
    if group == 0:
        return {"accuracy": 1.0, "format": 0.5}
    if group == 1:
        return {"accuracy": float(index % 2), "format": 0.25 * index}
    return {"accuracy": float(index == step % GENERATIONS), "format": 0.0}


def training_events(run: str, steps: range) -> list[Event]:
    events: list[Event] = []
    for step in steps:
        for group in range(GROUPS):
            totals = [sum(rewards_of(step, group, i).values()) for i in range(GENERATIONS)]
            mean = sum(totals) / GENERATIONS
            for index in range(GENERATIONS):
                text = f"answer {step}-{group}-{index}" + (" banana" if group == 2 else "")
                payload = Interaction(
                    prompt=f"Question {step}.{group}: what is {group} + {step}?",
                    completion=text,
                    reward=totals[index],
                    rewards=rewards_of(step, group, index),
                    step=step,
                    group_id=f"{step}:{group}",
                    group_index=index,
                    advantage=totals[index] - mean,
                    completion_tokens=5 + index,
                    metadata={"token_logprobs": [-0.5, -0.25]},
                )
                events.append(Event(run, payload, event_id=f"{run}-{step}-{group}-{index}"))
        loss = math.nan if step == 4 else 1.0 / (step + 1)
        metrics = {"kl": 0.01 * step, "entropy": 2.0 - 0.1 * step, "completions/mean_length": 5.5}
        events.append(Event(run, TrainStep(step=step, loss=loss, learning_rate=1e-5, grad_norm=1.0, metrics=metrics)))
    return events


def judge_events() -> list[Event]:
    events = []
    for step in range(STEPS):
        for group in (0, 1):
            for index in (0, 1, 2):
                target = f"{RUN}-{step}-{group}-{index}"
                total = sum(rewards_of(step, group, index).values())
                score = 0.25 * index + (0.25 if group == 0 else 0.0)
                payload = JudgeScore(
                    interaction_id=target,
                    judge_model="tiny-judge",
                    template_version="v1",
                    score=1 + 4 * score,
                    score_normalized=score,
                    reasoning=f"the reasoning on {target}",
                    step=step,
                    reward=total,
                    rewards=rewards_of(step, group, index),
                )
                events.append(Event(RUN, payload))
    return events


def logits_events() -> list[Event]:
    events = []
    for model, base in (("base", 0.1), ("rl", 0.3)):
        for word in ("wait", " so"):  # " so": a token with its leading space
            for level in (1, 2):
                for correct in (True, False):
                    for position in range(3):
                        probability = base + 0.01 * level + (0.05 if correct else 0.0) + 0.02 * position
                        payload = Logits(
                            model=model,
                            sample_id=f"{level}-{correct}",
                            position=position,
                            target_token=word,
                            logit=math.log(probability),
                            probability=probability,
                            rank=level,
                            level=level,
                            correct=correct,
                        )
                        events.append(Event(PROBE, payload))
    return events


def emit(settings: Settings, events: list[Event]) -> None:
    with Emitter(settings) as emitter:
        for event in events:
            emitter.emit(event)


def store_with_worker(settings: Settings) -> None:
    """Run the worker pipeline over what is on the bus until it is idle (it stores, computes stats and alerts)."""
    options = WorkerOptions(
        stats=StatsConfig(step_window=2, time_window_s=3600, time_hop_s=600), health=HealthConfig(loss_horizon=0)
    )
    with open_store(settings) as store:
        store.migrate()
        asyncio.run(build_pipeline(settings, store, options).run(idle_exit_s=1.5))


def get(url: str, auth: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if auth:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class UiProcess:
    """``trainwire ui`` in a subprocess of its own."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"ui-{self.port}.log"
        command = [sys.executable, "-m", "trainwire", "--data-dir", str(data_dir), "ui", "--port", str(self.port)]
        output = self.log.open("wb")
        self.process = subprocess.Popen([*command, *args], stdout=output, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"trainwire ui did not start: {self.log.read_text()}") from None
                time.sleep(0.2)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(30)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ui") / "data"
    settings = Settings(data_dir=path)
    emit(settings, training_events(RUN, range(STEPS)) + judge_events() + logits_events())
    store_with_worker(settings)
    return path


@pytest.fixture(scope="module")
def ui(data_dir: Path):
    server = UiProcess(data_dir)
    yield server
    assert server.stop() == 0, server.log.read_text()


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.console = Console(page)  # type: ignore[attr-defined]
    yield page
    context.close()


def shot(page: Page, name: str) -> None:
    """A screenshot of the view for the test's artefacts."""
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def plotted_steps(page: Page, chart_id: str) -> list[float]:
    """Every x value the chart draws (Plotly keeps the data on the chart's element)."""
    return page.evaluate(f"document.getElementById('{chart_id}').data.flatMap(t => Array.from(t.x || []))")


# --------------------------------------------------------------------------- the views


def test_runs_view_lists_every_run(ui: UiProcess, page: Page) -> None:
    page.goto(f"{ui.url}/")
    page.wait_for_selector(f"tr[data-run='{RUN}']")
    row = page.inner_text(f"tr[data-run='{RUN}']")
    assert f"0–{STEPS - 1}" in row and str(STEPS * GROUPS * GENERATIONS) in row
    assert "(steps 2–3)" in row  # the latest step window the worker closed: [2, 4)
    assert page.locator(f"tr[data-run='{PROBE}']").count() == 1
    shot(page, "runs")
    for run in (RUN, PROBE):  # two runs side by side in the run view
        page.check(f"tr[data-run='{run}'] input[type=checkbox]")
    page.click("#compare")
    page.wait_for_selector("#chart-reward .main-svg")
    assert page.url == f"{ui.url}/run?run={RUN}%2C{PROBE}"
    assert page.inner_text("h1") == f"Runs {RUN}, {PROBE}"
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_run_view_draws_its_charts(ui: UiProcess, page: Page) -> None:
    page.goto(f"{ui.url}/run?run={RUN}")
    page.wait_for_selector("#progress[data-last-step]")
    assert page.get_attribute("#progress", "data-last-step") == str(STEPS - 1)
    for chart in ("chart-reward", "chart-groups", "chart-judge", "chart-metric-loss", "chart-metric-kl"):
        page.wait_for_selector(f"#{chart} .main-svg")
        assert plotted_steps(page, chart), chart
    assert max(plotted_steps(page, "chart-reward")) == STEPS - 1
    names = page.evaluate("document.getElementById('chart-reward').data.map(t => t.name)")
    assert f"{RUN} · accuracy, window mean" in names and f"{RUN} · format p10–p90" in names
    assert "nan_loss" in page.inner_text("#run-alerts") or "loss" in page.inner_text("#run-alerts")
    shot(page, "run")
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_groups_view_opens_a_zero_variance_group(ui: UiProcess, page: Page) -> None:
    page.goto(f"{ui.url}/groups?run={RUN}&step=3")
    page.wait_for_selector("#group-list tr[data-group]")
    assert page.locator("#group-list tr[data-group]").count() == GROUPS
    page.check("#zero-only")
    page.wait_for_function("document.querySelectorAll('#group-list tr[data-group]').length === 1")
    page.click("#group-list tr[data-group='3:0']")
    page.wait_for_selector(".card.completion")
    assert "zv=1" in page.url and "group=3%3A0" in page.url
    cards = page.locator(".card.completion")
    assert cards.count() == GENERATIONS
    for index in range(GENERATIONS):
        card = cards.nth(index)
        assert f"answer 3-0-{index}" in card.inner_text()
        assert card.locator("dd.reward").inner_text() == "1.5"
        assert card.locator("dd[data-fn='accuracy']").inner_text() == "1"
        assert card.locator("dd[data-fn='format']").inner_text() == "0.5"
    assert "0.25" in cards.nth(0).locator("dd.judge").inner_text()  # judged: 0.25 * 0 + 0.25
    assert "not judged" in cards.nth(3).locator("dd.judge").inner_text()
    assert "Question 3.0" in page.inner_text("#group-prompt")
    shot(page, "groups")
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_a_deep_link_opens_the_same_view(ui: UiProcess, page: Page) -> None:
    page.goto(f"{ui.url}/groups?run={RUN}&step=3&zv=1&group=3%3A0")
    page.wait_for_selector(".card.completion")
    assert page.is_checked("#zero-only")
    assert page.locator(".card.completion").count() == GENERATIONS
    assert page.locator("#group-list tr.selected").get_attribute("data-group") == "3:0"
    page.goto(f"{ui.url}/groups?run={RUN}&step=2&q=banana&order=best")
    page.wait_for_selector("#group-list tr[data-group]")
    assert [page.locator("#group-list tr[data-group]").nth(0).get_attribute("data-group")] == ["2:2"]
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_samples_view_searches_and_opens_a_record(ui: UiProcess, page: Page) -> None:
    page.goto(f"{ui.url}/samples?run={RUN}&q=answer%205-1&judged=yes")
    page.wait_for_selector("tr[data-event]")
    events = sorted(page.locator("tr[data-event]").nth(i).get_attribute("data-event") for i in range(3))
    assert events == [f"{RUN}-5-1-{i}" for i in range(3)]
    assert page.locator("tr[data-event]").count() == 3
    page.click(f"tr[data-event='{RUN}-5-1-2']")
    page.wait_for_selector("#record")
    record = page.inner_text("#record")
    assert "the reasoning on" in record and "token_logprobs" in record and "Question 5.1" in record
    shot(page, "samples")
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_judge_alerts_and_logits_views(ui: UiProcess, page: Page) -> None:
    page.goto(f"{ui.url}/judge?run={RUN}")
    page.wait_for_selector("#chart-judge-grid .main-svg")
    assert plotted_steps(page, "chart-judge-steps") and plotted_steps(page, "chart-judge-agreement")
    shot(page, "judge")
    page.goto(f"{ui.url}/alerts?run={RUN}")
    page.wait_for_selector("table")
    link = page.locator("a[href*='step=4']").first
    assert link.get_attribute("href") == f"/run?run={RUN}&step=4"
    shot(page, "alerts")
    page.goto(f"{ui.url}/logits?run={PROBE}")
    page.wait_for_selector("#chart-logits-heatmap .main-svg")
    assert page.evaluate("document.getElementById('chart-logits-models').data.length") == 2
    ticks = page.evaluate(
        "[...document.querySelectorAll('#chart-logits-models .xtick text')].map((t) => t.textContent)"
    )
    assert sorted(ticks) == ["wait", "\u2423so"]  # the space shown: ' so' and 'so' are different tokens
    shot(page, "logits")
    page.goto(f"{ui.url}/logits?run={RUN}")
    page.wait_for_selector(".empty")
    assert "trainwire probe logits" in page.inner_text(".empty")
    assert page.console.errors == []  # type: ignore[attr-defined]


def test_a_right_axis_title_clears_its_tick_labels(ui: UiProcess, page: Page) -> None:
    """The twin-axis charts leave their right axis room: its title neither covers its tick labels nor is cut off."""
    for view, charts in (
        (f"run?run={RUN}", ("chart-groups", "chart-judge")),
        (f"judge?run={RUN}", ("chart-judge-steps",)),
    ):
        page.goto(f"{ui.url}/{view}")
        for chart in charts:
            page.wait_for_selector(f"#{chart} .g-y2title text")
            boxes = page.evaluate(
                """(id) => {
                  const chart = document.getElementById(id), box = (e) => e.getBoundingClientRect();
                  const ticks = [...chart.querySelectorAll('.y2tick text')].map((t) => box(t).right);
                  const title = box(chart.querySelector('.g-y2title text'));
                  return {ticks, title, svg: box(chart.querySelector('.main-svg'))};
                }""",
                chart,
            )
            assert boxes["ticks"], (chart, boxes)
            assert boxes["title"]["left"] >= max(boxes["ticks"]), (chart, boxes)  # was: over the tick labels
            assert boxes["title"]["right"] <= boxes["svg"]["right"], (chart, boxes)
    assert page.console.errors == []  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the data behind them


def _plain(value: Any) -> Any:
    """A value as the JSON of the API carries it, from run_query's Python values."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list) and all(isinstance(v, tuple) and len(v) == 2 for v in value) and value:
        return {k: _plain(v) for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


ROUTE_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("runs", "status", {}),
    ("runs", "overview", {}),
    ("runs", "latest", {"reward_fn": "accuracy"}),
    ("run", "progress", {"run": RUN}),
    ("run", "reward_stats", {"runs": [RUN]}),
    ("run", "reward_by_step", {"runs": [RUN], "reward_fn": "format"}),
    ("run", "train_metrics", {"runs": [RUN]}),
    ("run", "group_stats", {"runs": [RUN]}),
    ("run", "judge_by_step", {"runs": [RUN]}),
    ("run", "alerts", {"runs": [RUN]}),
    ("groups", "steps", {"runs": [RUN]}),
    ("groups", "groups", {"run": RUN, "step": 3}),
    ("groups", "groups", {"run": RUN, "step": 3, "zero_variance_only": True}),
    ("groups", "groups", {"run": RUN, "step": 2, "search": "BANANA", "order": "worst"}),
    ("groups", "group", {"run": RUN, "step": 3, "group": "3:1"}),
    ("samples", "search", {"runs": [RUN], "text": "answer 2-", "reward_min": 0.5, "judged": "yes"}),
    ("samples", "search", {"step_min": 4, "step_max": 4, "success": "true", "limit": 5, "offset": 2}),
    ("samples", "record", {"event_id": f"{RUN}-1-1-1", "run": RUN}),
    ("judge", "agreement", {"runs": [RUN]}),
    ("judge", "by_step", {}),
    ("judge", "agreement_by_step", {"runs": [RUN]}),
    ("judge", "confusion", {"runs": [RUN], "bins": 4}),
    ("judge", "disagreements", {"runs": [RUN], "min_gap": 0.25}),
    ("alerts", "feed", {}),
    ("alerts", "summary", {}),
    ("logits", "by_model", {}),
    ("logits", "by_level", {"model": "rl"}),
    ("logits", "by_correctness", {"runs": [PROBE]}),
    ("logits", "by_position", {"model": "base", "bucket": 2}),
]


def _query_string(params: dict[str, Any]) -> str:
    def text(value: Any) -> str:
        if isinstance(value, list):
            return ",".join(value)
        return str(value).lower() if isinstance(value, bool) else str(value)

    return urllib.parse.urlencode({k: text(v) for k, v in params.items()})


def test_every_route_is_covered_here() -> None:
    assert {(view.name, route.name) for view in VIEWS for route in view.routes} == {
        (view, route) for view, route, _ in ROUTE_CASES
    }


def test_the_json_of_every_route_is_the_sql_librarys_answer(ui: UiProcess, data_dir: Path) -> None:
    with open_store(Settings(data_dir=data_dir)) as store:  # through the UI process, which owns chdb now
        for view_name, route_name, params in ROUTE_CASES:
            route = next(v for v in VIEWS if v.name == view_name).route(route_name)
            status, body = get(f"{ui.url}/api/{view_name}/{route_name}?{_query_string(params)}")
            assert status == 200, (view_name, route_name, body)
            expected = [
                {k: _plain(v) for k, v in row.items()} for row in run_query(store, route.query, **params).to_pylist()
            ]
            assert body == {"query": route.query, "rows": expected}, (view_name, route_name)
            if route_name not in ("status", "alerts", "feed", "summary", "by_step"):
                assert expected, (view_name, route_name)  # the crafted data gives every route rows


def test_against_a_clickhouse_server_every_route_answers_as_on_the_embedded_store(
    ui: UiProcess, tmp_path: Path
) -> None:
    """``trainwire --clickhouse URL ui`` (issue #14) against a real ClickHouse HTTP interface: the one the
    module's UI process serves, as the owner of the crafted data directory, answered by chdb."""
    assert get(f"{ui.url}/api/runs/overview")[0] == 200  # the UI owns the data directory (it reads on demand)
    owner = OwnerEndpoint.read(ui.data_dir)
    url = f"http://{owner.user.name}:{owner.user.password}@127.0.0.1:{owner.port}/trainwire"
    server = UiProcess(tmp_path / "unused", env={**os.environ, "TRAINWIRE_CLICKHOUSE": url})
    try:
        for view_name, route_name, params in ROUTE_CASES:
            target = f"/api/{view_name}/{route_name}?{_query_string(params)}"
            status, body = get(server.url + target)
            assert status == 200, (view_name, route_name, body)
            assert (status, body) == get(ui.url + target), (view_name, route_name)
    finally:
        assert server.stop() == 0, server.log.read_text()
    assert url.split("@")[0] not in server.log.read_text()  # the password is not printed


def test_a_route_refuses_parameters_it_does_not_take(ui: UiProcess) -> None:
    status, body = get(f"{ui.url}/api/groups/groups?run={RUN}&step=x")
    assert status == 400 and b"step" in body
    status, body = get(f"{ui.url}/api/run/alerts?sql=DROP%20TABLE%20interactions")
    assert status == 400 and b"unknown parameter sql" in body
    status, _ = get(f"{ui.url}/api/sql?query=SELECT%201")
    assert status == 404


# --------------------------------------------------------------------------- live, and beside a worker


def test_a_worker_started_after_the_ui_stores_and_the_open_page_follows(
    ui: UiProcess, data_dir: Path, page: Page
) -> None:
    """The UI owns the embedded chdb (it was started first); a worker started afterwards asks for it,
    gets it and stores every event, and the open page's step axis advances without a reload."""
    live, settings = "live-ui", Settings(data_dir=data_dir)
    emit(settings, training_events(live, range(0, 2)))
    page.goto(f"{ui.url}/run?run={live}")
    page.wait_for_selector("#progress")
    page.wait_for_selector("#chart-reward .nsewdrag")
    page.evaluate("window.notReloaded = true")
    worker_port = free_port()
    command = [sys.executable, "-m", "trainwire", "--data-dir", str(data_dir), "worker", "--until-idle", "6"]
    worker = subprocess.Popen(
        [*command, "--step-window", "2", "--ui", "--ui-port", str(worker_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        page.wait_for_function("document.getElementById('progress').dataset.lastStep === '1'", timeout=60_000)
        box = page.locator("#chart-reward .nsewdrag").first.bounding_box()  # the user zooms in: a drag
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * 0.2, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=8)
        page.mouse.up()
        zoom = page.evaluate("document.getElementById('chart-reward').layout.xaxis.range")
        emit(settings, training_events(live, range(2, 5)))  # while the page is open
        page.wait_for_function("document.getElementById('progress').dataset.lastStep === '4'", timeout=60_000)
        assert page.evaluate("window.notReloaded") is True
        assert max(plotted_steps(page, "chart-reward")) == 4
        assert page.evaluate("document.getElementById('chart-reward').layout.xaxis.range") == zoom  # kept
        status, body = get(f"http://127.0.0.1:{worker_port}/api/run/progress?run={live}")  # worker --ui
        assert status == 200 and body["rows"][0]["last_step"] == 4
    finally:
        output, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, output.decode()
    status, body = get(f"{ui.url}/api/runs/overview?runs={live}")  # the worker is gone: the UI owns chdb again
    assert status == 200 and body["rows"][0]["interactions"] == 5 * GROUPS * GENERATIONS
    assert page.console.errors == []  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- safe by default


def test_binding_beyond_loopback_needs_credentials(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trainwire", "--data-dir", str(tmp_path / "d"), "ui", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TRAINWIRE_UI_AUTH": ""},
    )
    assert result.returncode == 1
    assert "--auth user:password" in result.stderr and "Traceback" not in result.stderr


def test_with_credentials_a_request_without_them_gets_401_and_an_empty_store_says_what_to_run(
    tmp_path: Path, browser: Browser
) -> None:
    server = UiProcess(tmp_path / "empty", "--auth", "ann:s3cret")
    try:
        status, _ = get(f"{server.url}/api/runs/status")
        assert status == 401
        status, _ = get(f"{server.url}/runs")
        assert status == 401
        assert get(f"{server.url}/api/runs/status", auth="ann:wrong")[0] == 401
        assert get(f"{server.url}/api/runs/status", auth="ann:s3cret") == (200, {"query": "store_status", "rows": []})
        context = browser.new_context(http_credentials={"username": "ann", "password": "s3cret"})
        page = context.new_page()
        console = Console(page)
        page.goto(f"{server.url}/")
        page.wait_for_selector(".empty")
        message = page.inner_text(".empty")
        assert "Nothing is stored yet" in message and "trainwire demo --ui" in message
        assert console.errors == []
        context.close()
    finally:
        assert server.stop() == 0, server.log.read_text()


def test_without_the_ui_extra_it_says_which_extra_to_install(tmp_path: Path) -> None:
    # Starlette cannot be uninstalled for one test: the child process marks it missing
    # (sys.modules[name] = None makes its import fail as if it were not installed).
    code = "import sys; sys.modules['starlette'] = None; from trainwire.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "--data-dir", str(tmp_path / "d"), "ui", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "pip install 'trainwire[ui]'" in result.stderr and "Traceback" not in result.stderr


def test_credentials_come_from_the_option_or_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(AUTH_ENV, "env-user:env-pw")
    assert Credentials.from_option(None) == Credentials("env-user", "env-pw")
    assert Credentials.from_option("ann:s3cret") == Credentials("ann", "s3cret")  # the option wins
    assert "s3cret" not in repr(Credentials.from_option("ann:s3cret"))
    monkeypatch.setenv(AUTH_ENV, "no-colon")
    with pytest.raises(ConfigError, match=f"{AUTH_ENV}: expected user:password"):
        Credentials.from_option(None)
    result = subprocess.run(
        [sys.executable, "-m", "trainwire", "--data-dir", str(tmp_path), "ui", "--auth", "ann:"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "--auth: expected user:password" in result.stderr
