"""Judge results in MLflow: per-step metrics and the examples table; ``trainwire judge eval`` over a CSV.

Runs are read back through ``mlflow.MlflowClient`` from a SQLite tracking store in the test's
temp directory; the judge is the scripted OpenAI-compatible server on loopback.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner

from trainwire.bus import Emitter
from trainwire.config import Settings
from trainwire.errors import ConfigError
from trainwire.events import Event, Interaction
from trainwire.judge.client import Judge, JudgeConfig
from trainwire.judge.mlflow_log import (
    JUDGE_TAGS,
    RESULTS_TABLE,
    SEED_METRIC,
    JudgedExample,
    log_judgements,
    read_eval_csv,
    resolve_tracking_uri,
)
from trainwire.judge.servers import ScriptedJudgeServer
from trainwire.judge.trigger import JudgeTrigger
from trainwire.judge.worker import JudgeWorker, judge_command
from trainwire.runtime import WorkerOptions, build_pipeline
from trainwire.store.clickhouse import open_store


def table(client: mlflow.MlflowClient, run_id: str, dst: Path) -> list[dict[str, Any]]:
    """The ``judge_results.json`` table of a run, as rows."""
    path = client.download_artifacts(run_id, RESULTS_TABLE, str(dst))
    data = json.loads(Path(path).read_text())
    return [dict(zip(data["columns"], row, strict=True)) for row in data["data"]]


def test_log_judgements_metrics_per_step_and_table(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    examples = [
        JudgedExample("q1", "a1", 4.0, "good", True, 0.75, step=1),
        JudgedExample("q2", "a2", 2.0, "weak", True, 0.25, step=1),
        JudgedExample("q3", "a3", 5.0, "great", True, 1.0, step=2),
        JudgedExample("q4", "a4", None, None, False, error="unparseable: no score found", step=2, raw_output="??"),
    ]
    run_id = log_judgements(examples, tracking_uri=uri, experiment="judge-test", run_name="grpo-7")
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "grpo-7" and run.info.status == "FINISHED"
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "judge/score_mean"))
    assert history == [(1, 3.0), (2, 5.0)]
    success = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "judge/success_rate"))
    assert success == [(1, 1.0), (2, 0.5)]
    assert run.data.metrics["judge/success_rate_all"] == 0.75
    assert run.data.metrics["judge/score_mean_all"] == pytest.approx(11 / 3)
    assert run.data.metrics["judge/failed"] == 1.0
    rows = table(client, run_id, tmp_path / "dl")
    assert [(r["input"], r["output"], r["score"], r["reasoning"]) for r in rows[:3]] == [
        ("q1", "a1", 4.0, "good"),
        ("q2", "a2", 2.0, "weak"),
        ("q3", "a3", 5.0, "great"),
    ]
    assert rows[3]["score"] is None and rows[3]["error"].startswith("unparseable") and rows[3]["raw_output"] == "??"


SEED_SEARCH = "tags.experiment_type = 'llm_judge_evaluation' and metrics.llm_judge_accuracy > 3"
"""How seed 002's users find their judge runs: by its tag and its metric."""


def seed_002_runs(client: mlflow.MlflowClient) -> list[Any]:
    """The runs a seed-002 user's searches find: experiments by tag, then runs by tag and metric."""
    experiments = client.search_experiments(filter_string="tags.experiment_type = 'llm_judge_evaluation'")
    return client.search_runs([e.experiment_id for e in experiments], filter_string=SEED_SEARCH)


def test_log_judgements_logs_seed_002_tag_and_accuracy(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    examples = [
        JudgedExample("q1", "a1", 4.0, "good", True, 0.75, step=1),
        JudgedExample("q2", "a2", 2.0, "weak", True, 0.25, step=1),
        JudgedExample("q3", "a3", 5.0, "great", True, 1.0, step=2),
        JudgedExample("q4", "a4", None, None, False, error="unparseable: no score found", step=2),
    ]
    run_id = log_judgements(examples, tracking_uri=uri, experiment="judge-test", tags={"team": "rl"})
    metrics = client.get_run(run_id).data.metrics
    # "accuracy" is the seed's name for the mean 1-5 judge score over the scored examples (the
    # unparseable one is skipped, as MLflow's genai metric skips it), not a share of correct answers
    scored = [4.0, 2.0, 5.0]
    assert metrics[SEED_METRIC] == pytest.approx(11 / 3) == metrics["judge/score_mean_all"]
    assert metrics[f"{SEED_METRIC}/v1/mean"] == pytest.approx(11 / 3)
    assert metrics[f"{SEED_METRIC}/v1/variance"] == pytest.approx(np.var(scored)) == pytest.approx(14 / 9)
    assert metrics[f"{SEED_METRIC}/v1/p90"] == pytest.approx(np.percentile(scored, 90)) == pytest.approx(4.8)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, SEED_METRIC)] == [(0, pytest.approx(11 / 3))]
    tags = client.get_run(run_id).data.tags
    assert tags["experiment_type"] == "llm_judge_evaluation" and tags["team"] == "rl"
    assert client.get_experiment_by_name("judge-test").tags["experiment_type"] == "llm_judge_evaluation"
    assert [r.info.run_id for r in seed_002_runs(client)] == [run_id]

    # an experiment with its own experiment_type keeps it; nothing scored means no accuracy at all
    mine = client.create_experiment("mine", tags={"experiment_type": "ablation"})
    failed = [JudgedExample("q", "a", None, None, False, error="timeout")]
    other = log_judgements(failed, tracking_uri=uri, experiment="mine")
    assert client.get_experiment(mine).tags["experiment_type"] == "ablation"
    assert client.get_run(other).data.tags["experiment_type"] == JUDGE_TAGS["experiment_type"]
    assert not any(k.startswith(SEED_METRIC) for k in client.get_run(other).data.metrics)
    assert client.get_run(other).data.metrics["judge/failed"] == 1.0


def test_default_tracking_uri_is_sqlite_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path / "data") == f"sqlite:///{(tmp_path / 'data').resolve()}/mlflow.db"
    assert resolve_tracking_uri("http://mlflow:5000", tmp_path) == "http://mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert resolve_tracking_uri(None, tmp_path) == "sqlite:///elsewhere.db"


SEED_CSV = """inputs,predictions,expectations
What is the capital of France?,Paris is the capital of France.,Paris
Who wrote War and Peace?,Leo Tolstoy wrote it.,
Tell me about quantum physics.,I like turtles.,
What is the primary function of a CPU?,"A CPU executes instructions and performs calculations, in short.",
"""


def _judge_by_question(body: dict[str, Any]) -> str:
    user = body["messages"][-1]["content"]
    if "France" in user:
        assert "Reference answer (treat it as correct): Paris" in user
        return "Score: 5\nReasoning: accurate, complete, relevant and concise."
    if "Tolstoy" in user:
        return '```json\n{"score": 4, "reasoning": "correct but terse"}\n```'
    if "turtles" in user:
        return "Score: 1\nReasoning: irrelevant."
    return "the judge rambles without a verdict"


def test_judge_eval_command_logs_scores_and_reasoning(tmp_path: Path, embedded_settings: Settings):
    data = tmp_path / "evaluation_data.csv"
    data.write_text(SEED_CSV)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with ScriptedJudgeServer(_judge_by_question) as server:
        args = ["eval", str(data), "--url", server.base_url, "--model", server.model, "--tracking-uri", uri]
        result = CliRunner().invoke(
            judge_command, [*args, "--experiment", "seed-002", "--run-name", "eval-1"], obj=embedded_settings
        )
        assert result.exit_code == 0, result.output
        assert len(server.requests) == 4
    assert "judged 4 rows: 3 scored, 1 failed, mean score 3.333" in result.output
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("seed-002")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "eval-1"
    assert run.data.metrics["judge/score_mean"] == pytest.approx(10 / 3)
    assert run.data.metrics["llm_judge/mean"] == pytest.approx(10 / 3)  # MLflow's own aggregate of the scorer
    assert run.data.metrics["judge/failed"] == 1.0
    assert run.data.metrics[SEED_METRIC] == pytest.approx(run.data.metrics["llm_judge/mean"])
    assert run.data.metrics[f"{SEED_METRIC}/v1/p90"] == pytest.approx(np.percentile([1.0, 4.0, 5.0], 90))
    assert run.data.tags["experiment_type"] == "llm_judge_evaluation"
    assert [r.info.run_id for r in seed_002_runs(client)] == [run.info.run_id]
    assert run.data.params["judge_model"] == "scripted-judge" and run.data.params["rows"] == "4"
    rows = {r["input"]: r for r in table(client, run.info.run_id, tmp_path / "dl")}
    france = rows["What is the capital of France?"]
    assert (france["score"], france["reference"]) == (5.0, "Paris")
    assert france["reasoning"] == "accurate, complete, relevant and concise."
    assert rows["Who wrote War and Peace?"]["reasoning"] == "correct but terse"
    cpu = rows["What is the primary function of a CPU?"]
    assert cpu["score"] is None and not cpu["success"] and cpu["raw_output"] == "the judge rambles without a verdict"
    # the per-row assessments live on the evaluation traces, as MLflow's UI shows them
    mlflow.set_tracking_uri(uri)
    traces = mlflow.search_traces(locations=[experiment.experiment_id], run_id=run.info.run_id, return_type="list")
    values = sorted(
        a.value for t in traces for a in t.info.assessments if a.name == "llm_judge" and a.value is not None
    )
    assert values == [1.0, 4.0, 5.0]


SEED_STYLE_PROMPT = """\
Вы являетесь экспертным оценщиком качества ответов. Оцените ответ по шкале от 1 до 5.
Если дан эталон, сравните с ним: {reference}

**Формат вывода:**
Оценка: [ЧИСЛО ОТ 1 ДО 5]
Обоснование: [ВАШЕ ОБОСНОВАНИЕ]

---
Вопрос: {question}
Ответ для оценки: {answer}
---
"""


def test_judge_eval_with_the_seed_002_prompt_file(tmp_path: Path, embedded_settings: Settings):
    data = tmp_path / "evaluation_data.csv"
    data.write_text(SEED_CSV)
    prompt = tmp_path / "judge_prompt.txt"
    prompt.write_text(SEED_STYLE_PROMPT, encoding="utf-8")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def respond(body: dict[str, Any]) -> str:
        [message] = body["messages"]  # the whole file is the user message, no system message
        assert message["role"] == "user" and "{" not in message["content"]
        if "Вопрос: What is the capital of France?\nОтвет для оценки: Paris is" in message["content"]:
            assert "сравните с ним: Paris\n" in message["content"]
            return "Оценка: 5\nОбоснование: точно и кратко."
        return "Оценка: 4\nОбоснование: верно."

    with ScriptedJudgeServer(respond) as server:
        args = ["eval", str(data), "--url", server.base_url, "--model", server.model, "--tracking-uri", uri]
        result = CliRunner().invoke(judge_command, [*args, "--template", str(prompt)], obj=embedded_settings)
        assert result.exit_code == 0, result.output
        assert len(server.requests) == 4
    assert "judged 4 rows: 4 scored, 0 failed, mean score 4.250" in result.output
    client = mlflow.MlflowClient(tracking_uri=uri)
    [run] = seed_002_runs(client)
    assert run.data.metrics[SEED_METRIC] == pytest.approx(4.25) == run.data.metrics["llm_judge/mean"]
    assert run.data.params["template_version"].startswith("judge_prompt-")
    rows = {r["input"]: r for r in table(client, run.info.run_id, tmp_path / "dl")}
    assert rows["What is the capital of France?"]["reasoning"] == "точно и кратко."


def test_eval_csv_errors(tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer\nq,a\n")
    with pytest.raises(ConfigError, match=r"bad\.csv: missing column\(s\) inputs, predictions"):
        read_eval_csv(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("inputs,predictions\n,a\n")
    with pytest.raises(ConfigError, match=r"empty\.csv:2"):
        read_eval_csv(empty)


def test_log_a_judged_run_from_clickhouse(embedded_settings: Settings, tmp_path: Path):
    settings = embedded_settings
    emitter = Emitter(settings)
    for step in range(3):
        for i in range(2):
            payload = Interaction(prompt=f"question {step}.{i}", completion="good" if i == 0 else "bad", step=step)
            emitter.emit(Event(run_id="grpo-ml", payload=payload))
    emitter.close()

    def respond(body: dict[str, Any]) -> str:
        return "Score: 5\nReasoning: ok" if body["messages"][-1]["content"].endswith("good") else "Score: 2"

    with ScriptedJudgeServer(respond) as server:
        judge = Judge(JudgeConfig(base_url=server.base_url, model=server.model, backoff_s=(0.01, 0.05)))
        asyncio.run(JudgeWorker(settings, judge, trigger=JudgeTrigger(), group="j").run(idle_exit_s=1.5))
    with open_store(settings) as store:
        store.migrate()
        asyncio.run(build_pipeline(settings, store, WorkerOptions(group="s", monitor=False)).run(idle_exit_s=1.0))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(judge_command, ["log", "grpo-ml", "--tracking-uri", uri], obj=settings)
    assert result.exit_code == 0, result.output
    run_id = result.output.split("MLflow run ")[1].split()[0]
    client = mlflow.MlflowClient(tracking_uri=uri)
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "judge/score_mean"))
    assert history == [(0, 3.5), (1, 3.5), (2, 3.5)]
    rows = table(client, run_id, tmp_path / "dl")
    assert len(rows) == 6 and {r["input"] for r in rows} == {f"question {s}.{i}" for s in range(3) for i in range(2)}
    assert {(r["output"], r["score"]) for r in rows} == {("good", 5.0), ("bad", 2.0)}
    assert client.get_run(run_id).data.tags["trainwire.run_id"] == "grpo-ml"
