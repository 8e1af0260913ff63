"""LLM-as-a-judge: grade interactions with a model behind an OpenAI-compatible API (vLLM by default).

- :mod:`~trainwire.judge.trigger`: which interactions to grade (a processor: interactions in,
  ``judge_request`` events out; deterministic sampling, filters by run, reward and success);
- :mod:`~trainwire.judge.prompts`: templates as files (``default``, ``ru``), few-shot examples;
- :mod:`~trainwire.judge.parser`: ``Score: N`` / ``Оценка: N`` / JSON answers to scores, and a
  group judge's JSON array of scores per answer id;
- :mod:`~trainwire.judge.client`: the async judge (chat or text completions API, concurrency,
  timeouts, retries, cache; one completion or a whole GRPO group per request; provenance);
- :mod:`~trainwire.judge.grouping`: when a GRPO group is complete, for the group judge worker;
- :mod:`~trainwire.judge.worker`: the worker and the ``trainwire judge`` command;
- :mod:`~trainwire.judge.rescore`: stored interactions judged again with another configuration;
- :mod:`~trainwire.judge.mlflow_log`: results in MLflow, ``trainwire judge eval``;
- :mod:`~trainwire.judge.reward`: judge scores as a TRL reward;
- :mod:`~trainwire.judge.servers`: OpenAI-compatible loopback servers (scripted, transformers).

The judge needs the ``judge`` extra (openai, mlflow); the names that need it are imported on
first use, so the trigger, prompts and parser work without it.
"""

from __future__ import annotations

from typing import Any

from trainwire.judge.parser import Judgement, ScoreScale, parse_judgement
from trainwire.judge.prompts import JudgePrompt, load_template
from trainwire.judge.trigger import JudgeTrigger, TriggerConfig

__all__ = [
    "Judge",
    "JudgeConfig",
    "JudgePrompt",
    "JudgeTrigger",
    "Judgement",
    "ScoreScale",
    "TriggerConfig",
    "judge_reward_function",
    "load_template",
    "parse_judgement",
]

_LAZY = {"Judge": "client", "JudgeConfig": "client", "judge_reward_function": "reward"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"trainwire.judge.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'trainwire.judge' has no attribute {name!r}")
