"""Judge results in MLflow: per-run metrics over steps and a table of examples; ``judge eval`` over a CSV.

Two entry points:

- :func:`log_judgements` logs graded examples as one MLflow run: ``judge/score_mean`` and
  ``judge/success_rate`` per step (``step=``), the overall ``judge/score_mean_all``,
  ``judge/success_rate_all``, ``judge/judged``, ``judge/failed``, and a table
  ``judge_results.json`` (``mlflow.log_table``) with each example's input, output, score,
  reasoning and error. :func:`log_run_from_store` reads a trainwire run's judgements from
  ClickHouse (scores joined with their requests) and logs them.
- :func:`evaluate_csv` is seed 002's experiment: a CSV with ``inputs,predictions`` (and optional
  ``expectations``, a reference answer) graded by the same judge as an MLflow GenAI scorer
  through ``mlflow.genai.evaluate``. The run gets the scorer's per-row assessments (value =
  score, rationale = reasoning; an unparseable answer is an assessment error, never a score),
  ``llm_judge/mean`` from MLflow, plus ``judge/score_mean``, ``judge/success_rate`` and the same
  ``judge_results.json`` table.

Both also log what seed 002's users look for in MLflow, so searches keyed on its names work
(``tags.experiment_type = 'llm_judge_evaluation'``, ``metrics.llm_judge_accuracy > 3``):

- the tag ``experiment_type: llm_judge_evaluation`` on the run, and on the experiment unless it
  already has an ``experiment_type`` tag;
- the metric ``llm_judge_accuracy``, plus ``llm_judge_accuracy/v1/mean``, ``/v1/variance`` and
  ``/v1/p90``, the names ``mlflow.evaluate`` gives a ``make_genai_metric(name="llm_judge_accuracy")``
  (metric version ``v1``), as the seed used. In the seed "accuracy" is only the metric's name: its
  value per example is the judge's score on its whole 1-5 rubric (accuracy, completeness,
  relevance, conciseness), and MLflow aggregates the scores of the examples the judge scored,
  skipping those it could not parse. The same here: ``llm_judge_accuracy`` is the mean score on
  the judge's scale over the examples with a score (equal to ``judge/score_mean_all``), not a
  share of correct answers; variance is the population variance and p90 the linearly interpolated
  90th percentile, as MLflow computes them. They are logged once per MLflow run (step 0) and left
  out when no example got a score.

The tracking URI is the argument, else ``MLFLOW_TRACKING_URI``, else a SQLite store in the data
directory (``sqlite:///{data_dir}/mlflow.db``).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainwire.errors import ConfigError, MissingExtraError

try:
    import mlflow
    import numpy as np
    from mlflow.entities import Feedback, Metric
    from mlflow.genai.scorers import Scorer, scorer
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtraError("judge", "trainwire.judge.mlflow_log") from exc

from trainwire.config import Settings
from trainwire.events import JudgeScore
from trainwire.judge.client import BlockingJudge, Judge, JudgeConfig, failure_kind
from trainwire.judge.prompts import prompt_text

__all__ = [
    "JUDGE_TAGS",
    "RESULTS_TABLE",
    "SEED_METRIC",
    "EvalResult",
    "JudgedExample",
    "evaluate_csv",
    "examples_from_store",
    "judge_scorer",
    "log_judgements",
    "log_run_from_store",
    "read_eval_csv",
    "resolve_tracking_uri",
]

RESULTS_TABLE = "judge_results.json"
"""The artifact file of the per-example table."""
DEFAULT_EXPERIMENT = "trainwire-judge"
SEED_METRIC = "llm_judge_accuracy"
"""Seed 002's metric: the mean judge score (see the module docstring)."""
JUDGE_TAGS = {"experiment_type": "llm_judge_evaluation"}
"""Seed 002's tag, set on every judge run and (when it has no such tag) on its experiment."""


@dataclass(frozen=True, slots=True)
class JudgedExample:
    """One graded example as logged to MLflow."""

    input: str
    output: str
    score: float | None
    reasoning: str | None
    success: bool
    score_normalized: float | None = None
    error: str | None = None
    reference: str | None = None
    step: int | None = None
    interaction_id: str | None = None
    raw_output: str = ""

    @classmethod
    def from_score(cls, prompt: Any, output: str, score: JudgeScore, reference: str | None = None) -> JudgedExample:
        """An example from a judge's :class:`JudgeScore` and what it graded."""
        return cls(
            input=prompt if isinstance(prompt, str) else prompt_text(prompt),
            output=output,
            score=score.score,
            reasoning=score.reasoning,
            success=score.success,
            score_normalized=score.score_normalized,
            error=score.error,
            reference=reference,
            step=score.step,
            interaction_id=score.interaction_id or None,
            raw_output=score.raw_output,
        )


def resolve_tracking_uri(tracking_uri: str | None = None, data_dir: str | Path | None = None) -> str:
    """The tracking URI to use: the argument, ``$MLFLOW_TRACKING_URI``, or SQLite under ``data_dir``."""
    if tracking_uri:
        return tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    directory = Path(data_dir if data_dir is not None else Settings.from_env().data_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'mlflow.db'}"


def _table(examples: Sequence[JudgedExample]) -> dict[str, list[Any]]:
    return {
        "input": [e.input for e in examples],
        "output": [e.output for e in examples],
        "reference": [e.reference for e in examples],
        "score": [e.score for e in examples],
        "score_normalized": [e.score_normalized for e in examples],
        "reasoning": [e.reasoning for e in examples],
        "success": [e.success for e in examples],
        "error": [e.error for e in examples],
        "step": [e.step for e in examples],
        "interaction_id": [e.interaction_id for e in examples],
        "raw_output": [e.raw_output for e in examples],
    }


def _scores(examples: Sequence[JudgedExample]) -> list[float]:
    return [e.score for e in examples if e.success and e.score is not None]


def _seed_metrics(examples: Sequence[JudgedExample]) -> dict[str, float]:
    """Seed 002's ``llm_judge_accuracy`` metrics over the scored examples (see the module docstring)."""
    scores = _scores(examples)
    if not scores:
        return {}
    mean = float(np.mean(scores))
    return {
        SEED_METRIC: mean,
        f"{SEED_METRIC}/v1/mean": mean,
        f"{SEED_METRIC}/v1/variance": float(np.var(scores)),
        f"{SEED_METRIC}/v1/p90": float(np.percentile(scores, 90)),
    }


def _summary_metrics(examples: Sequence[JudgedExample]) -> dict[str, float]:
    scores = _scores(examples)
    out = {"judge/judged": float(len(examples)), "judge/failed": float(len(examples) - len(scores))}
    if examples:
        out["judge/success_rate_all"] = len(scores) / len(examples)
    if scores:
        out["judge/score_mean_all"] = sum(scores) / len(scores)
    return out | _seed_metrics(examples)


def _judge_experiment(client: mlflow.MlflowClient, name: str) -> str:
    """The id of experiment ``name`` (created if missing), tagged with :data:`JUDGE_TAGS` where it has none."""
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, tags=JUDGE_TAGS)
    for key, value in JUDGE_TAGS.items():
        if key not in found.tags:
            client.set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


def _step_metrics(examples: Sequence[JudgedExample], timestamp_ms: int) -> list[Metric]:
    by_step: dict[int, list[JudgedExample]] = {}
    for example in examples:
        if example.step is not None:
            by_step.setdefault(example.step, []).append(example)
    metrics = []
    for step in sorted(by_step):
        group = by_step[step]
        scores = [e.score for e in group if e.success and e.score is not None]
        metrics.append(Metric("judge/success_rate", len(scores) / len(group), timestamp_ms, step))
        if scores:
            metrics.append(Metric("judge/score_mean", sum(scores) / len(scores), timestamp_ms, step))
    return metrics


def log_judgements(
    examples: Iterable[JudgedExample],
    *,
    tracking_uri: str | None = None,
    data_dir: str | Path | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """Log ``examples`` as a new MLflow run (see the module docstring); returns the MLflow run id.

    The run is tagged with :data:`JUDGE_TAGS` and ``tags`` (``tags`` win on the same key).
    """
    import time

    examples = list(examples)
    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri, data_dir))
    experiment_id = _judge_experiment(client, experiment)
    run = client.create_run(experiment_id, run_name=run_name, tags={**JUDGE_TAGS, **(tags or {})})
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        metrics = _step_metrics(examples, now)
        metrics += [Metric(k, v, now, 0) for k, v in _summary_metrics(examples).items()]
        for start in range(0, len(metrics), 1000):  # log_batch takes at most 1000 metrics
            client.log_batch(run_id, metrics=metrics[start : start + 1000])
        for key, value in (params or {}).items():
            client.log_param(run_id, key, value)
        client.log_table(run_id, data=_table(examples), artifact_file=RESULTS_TABLE)
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id


_STORE_SQL = """
SELECT s.interaction_id AS interaction_id, s.score AS score, s.score_normalized AS score_normalized,
       s.reasoning AS reasoning, s.success AS success, s.error AS error, s.raw_output AS raw_output,
       s.step AS step, s.judge_model AS judge_model, s.template_version AS template_version,
       r.prompt AS prompt, r.prompt_messages AS prompt_messages, r.completion AS completion,
       r.reference AS reference
FROM (SELECT * FROM judge_scores FINAL WHERE run_id = {run:String}) AS s
LEFT JOIN (SELECT * FROM judge_requests FINAL WHERE run_id = {run:String}) AS r
  ON s.interaction_id = r.interaction_id
ORDER BY ifNull(s.step, -1), s.ts, s.event_id
"""


def examples_from_store(store: Any, run_id: str) -> list[JudgedExample]:
    """A trainwire run's judgements from ClickHouse: each score with the request it answered."""
    import orjson

    examples = []
    for row in store.query_rows(_STORE_SQL, {"run": run_id}):
        prompt: Any = row["prompt"] or ""
        if not prompt and row.get("prompt_messages"):
            try:
                prompt = prompt_text(orjson.loads(row["prompt_messages"]))
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                prompt = row["prompt_messages"]
        score = row["score"]
        examples.append(
            JudgedExample(
                input=prompt,
                output=row["completion"] or "",
                score=None if score is None or not math.isfinite(score) else score,
                reasoning=row["reasoning"],
                success=bool(row["success"]),
                score_normalized=row["score_normalized"],
                error=row["error"],
                reference=row["reference"],
                step=row["step"],
                interaction_id=row["interaction_id"],
                raw_output=row["raw_output"] or "",
            )
        )
    return examples


@dataclass
class EvalResult:
    """What :func:`evaluate_csv` or :func:`log_run_from_store` logged as MLflow run ``run_id``."""

    run_id: str
    tracking_uri: str
    rows: int
    succeeded: int
    mean_score: float | None
    examples: list[JudgedExample] = field(default_factory=list)

    @classmethod
    def of(cls, run_id: str, tracking_uri: str, examples: list[JudgedExample]) -> EvalResult:
        """The result of logging ``examples`` as MLflow run ``run_id``."""
        scores = _scores(examples)
        mean = sum(scores) / len(scores) if scores else None
        return cls(run_id, tracking_uri, len(examples), len(scores), mean, examples)

    @property
    def failures(self) -> dict[str, int]:
        """The failed judgements by kind (:func:`~trainwire.judge.client.failure_kind` of their error)."""
        kinds: dict[str, int] = {}
        for example in self.examples:
            if not example.success:
                kind = failure_kind(example.error or "")
                kinds[kind] = kinds.get(kind, 0) + 1
        return kinds


def log_run_from_store(
    settings: Settings,
    run_id: str,
    *,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
) -> EvalResult:
    """Log trainwire run ``run_id``'s judgements (from ClickHouse) to MLflow.

    Raises :class:`ConfigError` (logging nothing) when the store has no judge scores for the run.
    """
    from trainwire.store.clickhouse import open_store

    with open_store(settings) as store:
        examples = examples_from_store(store, run_id)
    if not examples:
        raise ConfigError(
            "run_id",
            f"{run_id!r} has no judge scores in the store (trainwire judge run grades a run's interactions, "
            "trainwire worker stores the scores)",
        )
    uri = resolve_tracking_uri(tracking_uri, settings.data_dir)
    mlflow_run = log_judgements(
        examples,
        tracking_uri=uri,
        experiment=experiment,
        run_name=run_name or run_id,
        tags={"trainwire.run_id": run_id},
    )
    return EvalResult.of(mlflow_run, uri, examples)


# --------------------------------------------------------------------------- judge eval


def read_eval_csv(path: str | Path) -> list[dict[str, str | None]]:
    """Rows of a seed-002 CSV: ``inputs``, ``predictions`` and optional ``expectations``.

    Raises :class:`ConfigError` naming the file (and line) when a column or a value is missing.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in ("inputs", "predictions") if c not in columns]
            if missing:
                raise ConfigError("csv", f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(columns)})")
            rows = []
            for row in reader:
                if not (row.get("inputs") or "").strip():
                    raise ConfigError("csv", f"{path}:{reader.line_num}: empty 'inputs'")
                rows.append(
                    {
                        "inputs": row["inputs"],
                        "predictions": row.get("predictions") or "",
                        "expectations": (row.get("expectations") or "").strip() or None,
                    }
                )
    except OSError as exc:
        raise ConfigError("csv", f"{path}: {exc.strerror or exc}") from exc
    return rows


def judge_scorer(judge: BlockingJudge, name: str = "llm_judge", record: dict | None = None) -> Scorer:
    """The judge as an MLflow GenAI scorer: ``Feedback(value=score, rationale=reasoning)`` per row.

    A failed judgement is a ``Feedback`` with an error (MLflow counts it as a failed assessment),
    never a value. When ``record`` is given, each row's :class:`JudgeScore` is stored in it under
    ``(question, output, reference)``.
    """

    def llm_judge(inputs: Any, outputs: Any, expectations: Any = None) -> Feedback:
        question = inputs.get("question", inputs.get("inputs", "")) if isinstance(inputs, dict) else str(inputs)
        reference = None
        if isinstance(expectations, dict):
            reference = expectations.get("expected_response") or expectations.get("reference")
        elif isinstance(expectations, str):
            reference = expectations or None
        output = "" if outputs is None else str(outputs)
        score = judge.grade(question, output, reference)
        if record is not None:
            record[(question, output, reference)] = score
        meta = {"judge_model": score.judge_model, "template_version": score.template_version}
        if score.success:
            return Feedback(value=score.score, rationale=score.reasoning, metadata=meta)
        return Feedback(error=score.error or "judge failed", rationale=score.raw_output or None, metadata=meta)

    return scorer(llm_judge, name=name)


def evaluate_csv(
    path: str | Path,
    config: JudgeConfig | None = None,
    *,
    tracking_uri: str | None = None,
    data_dir: str | Path | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    scorer_name: str = "llm_judge",
) -> EvalResult:
    """Grade a seed-002 CSV with the judge through ``mlflow.genai.evaluate`` and log one MLflow run.

    The run is tagged with :data:`JUDGE_TAGS` and gets seed 002's :data:`SEED_METRIC` metrics next
    to trainwire's (see the module docstring).
    """
    rows = read_eval_csv(path)
    config = config or JudgeConfig.from_env()
    uri = resolve_tracking_uri(tracking_uri, data_dir)
    cache_dir = Path(data_dir) / "judge" if data_dir is not None else None
    judge = Judge(config, cache_dir=cache_dir)
    data = []
    for row in rows:
        item: dict[str, Any] = {"inputs": {"question": row["inputs"]}, "outputs": row["predictions"]}
        if row["expectations"] is not None:
            item["expectations"] = {"expected_response": row["expectations"]}
        data.append(item)
    record: dict[tuple[str, str, str | None], JudgeScore] = {}
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=_judge_experiment(mlflow.MlflowClient(tracking_uri=uri), experiment))
    with (
        BlockingJudge(judge) as blocking,
        mlflow.start_run(run_name=run_name or f"judge-eval-{Path(path).stem}", tags=JUDGE_TAGS) as run,
    ):
        mlflow.log_params(
            {
                "judge_model": config.model,
                "judge_url": config.base_url,
                "judge_api": config.api,
                "template_version": judge.template_version,
                "data": str(path),
                "rows": len(rows),
            }
        )
        mlflow.genai.evaluate(data=data, scorers=[judge_scorer(blocking, scorer_name, record)])
        examples = []
        for row in rows:
            score = record.get((row["inputs"], row["predictions"] or "", row["expectations"]))
            if score is None:  # the scorer did not run for this row (MLflow failed it); grade it here
                score = blocking.grade(row["inputs"], row["predictions"] or "", row["expectations"])
            examples.append(
                JudgedExample.from_score(row["inputs"], row["predictions"] or "", score, row["expectations"])
            )
        summary = _summary_metrics(examples)
        mlflow.log_metrics(
            {
                "judge/score_mean": summary.get("judge/score_mean_all", float("nan")),
                "judge/success_rate": summary.get("judge/success_rate_all", float("nan")),
                "judge/judged": summary["judge/judged"],
                "judge/failed": summary["judge/failed"],
                **_seed_metrics(examples),
            }
        )
        mlflow.log_table(data=_table(examples), artifact_file=RESULTS_TABLE)
    return EvalResult.of(run.info.run_id, uri, examples)
