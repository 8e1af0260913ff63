"""Judge scores as a reward: an async reward function for TRL's ``GRPOTrainer``.

::

    from trainwire.judge.reward import judge_reward_function

    reward = judge_reward_function(JudgeConfig.from_env(), cache_dir="trainwire-data/judge")
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], ...)    # logged as "judge_reward"

TRL calls it with ``prompts``, ``completions`` (text, or chat messages for a conversational
dataset), ``completion_ids``, the dataset's other columns and ``trainer_state``; it runs async
reward functions on its own event loop. The function grades all completions concurrently with
the :class:`~trainwire.judge.client.Judge` (cached, retried) and returns one reward per
completion: the normalized score (0..1), or the raw score with ``normalized=False``.

When the judge fails on a completion (no answer, an unparseable or out-of-range one), that
completion gets ``fallback`` (None means TRL's "no reward": NaN, ignored in its sums) and one
``alert`` event (rule ``judge_failed``) is emitted for the call, with the error counts and a
sample. The function itself never raises: training goes on.

With ``mode="group"`` the judge grades each GRPO group in one request, its completions relative to
each other (:meth:`~trainwire.judge.client.Judge.grade_group`). TRL passes the whole batch, each
prompt repeated ``num_generations`` times in a row, so a group is a run of consecutive
completions of the same prompt (cut every ``group_size`` completions when given). A group the
judge fails on (a failed call, an answer that does not score each completion exactly once) gets
``fallback`` for every completion, never a partial set of rewards.

A reference answer is taken from the first dataset column of ``reference_columns`` present:
by default :data:`~trainwire.judge.trigger.REFERENCE_KEYS` (``reference``, ``correct_answer``,
``answer``, ``solution``, ``ground_truth``, ``expected``), the same keys the judge trigger reads
from an interaction's metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from trainwire.bus import Emitter, get_emitter
from trainwire.errors import ConfigError
from trainwire.events import Alert, Event, JudgeScore, Source
from trainwire.judge.client import Judge, JudgeConfig
from trainwire.judge.trigger import REFERENCE_KEYS
from trainwire.producers.api import current_run_id, telemetry_warning

__all__ = ["JUDGE_FAILED_RULE", "RewardFunction", "judge_reward_function"]

JUDGE_FAILED_RULE = "judge_failed"
LIBRARY = "trainwire.judge"

RewardFunction = Callable[..., Awaitable[list[float | None]]]


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}, ...]
        parts = [
            m.get("content") for m in completion if isinstance(m, dict) and m.get("role", "assistant") == "assistant"
        ]
        return "\n".join(p if isinstance(p, str) else str(p) for p in parts if p)
    return str(completion)


def judge_reward_function(
    judge: Judge | JudgeConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    fallback: float | None = 0.0,
    normalized: bool = True,
    emitter: Emitter | None = None,
    run_id: str | None = None,
    reference_columns: Sequence[str] = REFERENCE_KEYS,
    name: str = "judge_reward",
    mode: str | None = None,
    group_size: int | None = None,
) -> RewardFunction:
    """An async TRL reward function grading completions with ``judge`` (see the module docstring).

    Args:
        judge: a :class:`Judge`, or a :class:`JudgeConfig` to build one (default: from the environment).
        cache_dir: the judge cache's directory when a judge is built here.
        fallback: the reward of a completion the judge failed on (None: no reward, NaN in TRL).
        normalized: reward the 0..1 normalized score (True) or the score on the judge's scale.
        emitter: where ``alert`` events go (default: the process-wide emitter, on first failure).
        run_id: the run the alerts belong to (default: the current run).
        reference_columns: dataset columns holding a reference answer, first present wins.
        name: the function's ``__name__`` (TRL logs rewards under it).
        mode: ``single`` (one request per completion) or ``group`` (one per GRPO group); default: the judge's.
        group_size: in group mode, the most completions in one group (TRL's ``num_generations``).
    """
    if not isinstance(judge, Judge):
        config = judge if isinstance(judge, JudgeConfig) else JudgeConfig.from_env()
        judge = Judge(config if mode is None else dataclasses.replace(config, mode=mode), cache_dir=cache_dir)
    elif mode is not None and judge.config.mode != mode:
        raise ConfigError("judge.mode", f"the judge given grades in mode {judge.config.mode!r}, not {mode!r}")
    the_judge = judge

    async def judge_reward(
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Any = None,
        trainer_state: Any = None,
        **kwargs: Any,
    ) -> list[float | None]:
        step = getattr(trainer_state, "global_step", None)
        try:
            references = _references(kwargs, reference_columns, len(completions))
            texts = [_completion_text(completion) for completion in completions]
            if the_judge.config.mode == "group":
                groups = _groups(prompts, group_size)
                graded = await asyncio.gather(
                    *(
                        the_judge.grade_group(
                            prompts[g[0]], [(str(i), texts[i]) for i in g], references[g[0]], step=step
                        )
                        for g in groups
                    )
                )
                scores: list[JudgeScore] = [score for group in graded for score in group]
            else:
                scores = await asyncio.gather(
                    *(
                        the_judge.grade(prompt, text, reference, step=step)
                        for prompt, text, reference in zip(prompts, texts, references, strict=False)
                    )
                )
        except Exception as exc:  # never stop training because of the judge
            telemetry_warning("judge_reward", "judge reward failed: %s: %s", type(exc).__name__, exc)
            _alert(emitter, run_id, step, len(completions), {type(exc).__name__: len(completions)}, str(exc), "")
            return [fallback] * len(completions)
        rewards: list[float | None] = []
        errors: dict[str, int] = {}
        sample: JudgeScore | None = None
        for score in scores:
            if score.success:
                rewards.append(score.score_normalized if normalized else score.score)
            else:
                rewards.append(fallback)
                kind = (score.error or "error").split(":", 1)[0]
                errors[kind] = errors.get(kind, 0) + 1
                sample = sample or score
        if sample is not None:
            _alert(emitter, run_id, step, len(scores), errors, sample.error or "", sample.raw_output, fallback)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            with contextlib.suppress(Exception):  # TRL's logging hook is a convenience; never fail for it
                log_metric(f"{name}/judge_failed", float(sum(errors.values())))
        return rewards

    judge_reward.__name__ = judge_reward.__qualname__ = name
    judge_reward.judge = the_judge  # type: ignore[attr-defined]
    return judge_reward


def _groups(prompts: Sequence[Any], size: int | None) -> list[list[int]]:
    """The batch's GRPO groups as lists of positions: runs of equal consecutive prompts, at most ``size`` long."""
    groups: list[list[int]] = []
    for index, prompt in enumerate(prompts):
        if groups and prompts[groups[-1][0]] == prompt and (size is None or len(groups[-1]) < size):
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def _references(kwargs: dict[str, Any], columns: Sequence[str], n: int) -> list[str | None]:
    for column in columns:
        values = kwargs.get(column)
        if isinstance(values, list | tuple) and len(values) == n:
            return [None if v is None or v == "" else str(v) for v in values]
    return [None] * n


def _alert(
    emitter: Emitter | None,
    run_id: str | None,
    step: int | None,
    total: int,
    errors: dict[str, int],
    error: str,
    raw_output: str,
    fallback: float | None = None,
) -> None:
    """Emit one ``judge_failed`` alert; never raises."""
    try:
        failed = sum(errors.values())
        where = f" at step {step}" if step is not None else ""
        alert = Alert(
            rule=JUDGE_FAILED_RULE,
            severity="warning",
            message=(
                f"the judge failed on {failed} of {total} completions{where}; they got the fallback reward {fallback}"
            ),
            step=step,
            evidence={
                "errors": errors,
                "failed": failed,
                "total": total,
                "error": error,
                "raw_output": raw_output[:2000],
            },
        )
        (emitter or get_emitter()).emit(
            Event(run_id=current_run_id(run_id), payload=alert, source=Source.current(LIBRARY))
        )
    except Exception as exc:
        telemetry_warning("judge_reward_alert", "could not emit the judge alert: %s: %s", type(exc).__name__, exc)
