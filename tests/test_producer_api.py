"""The generic producer API: log_interaction, log_metrics and the run id."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainwire.bus import Emitter, open_consumer
from trainwire.config import Settings
from trainwire.events import Event, decode
from trainwire.producers import api
from trainwire.producers.api import current_run_id, log_interaction, log_metrics, set_run
from trainwire.topics import event_topics

ROOT = Path(__file__).resolve().parent.parent


def read_events(settings: Settings) -> list[Event]:
    async def main() -> list[Event]:
        consumer = open_consumer(settings, event_topics(settings.topic_prefix), "check")
        await consumer.start()
        out: list[Event] = []
        try:
            while records := await consumer.getmany(timeout_ms=300):
                out.extend(decode(r.value) for r in records)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(main())


@pytest.fixture
def emitter(embedded_settings: Settings):
    emitter = Emitter(embedded_settings)
    yield emitter
    emitter.close()


@pytest.fixture(autouse=True)
def no_explicit_run():
    set_run(None)
    yield
    set_run(None)


class Scalar:
    """A numpy/torch-like scalar: converts with float() and int()."""

    def __init__(self, value: float):
        self.value = value

    def __float__(self) -> float:
        return float(self.value)

    def __index__(self) -> int:
        return int(self.value)


def test_log_interaction_seed000_record(emitter: Emitter, embedded_settings: Settings):
    event_id = log_interaction(
        prompt="Вопрос о электрической цепи...",
        completion="Ответ модели...",
        reward=Scalar(1.8),
        metadata={"correct_answer": "2.5", "accuracy_score": 0.9, "batch_idx": 0, "odd": {1, 2}},
        run_id="grpo-7",
        emitter=emitter,
        step=Scalar(12),
        group_id="g1",
        group_index=3,
        rewards={"accuracy": 0.9, "format": 1},
        correct_answer_source="dataset",  # not a field: kept in metadata
    )
    emitter.close()

    (event,) = read_events(embedded_settings)
    assert event.event_id == event_id
    assert event.run_id == "grpo-7"
    payload = event.payload
    assert payload.prompt == "Вопрос о электрической цепи..."
    assert payload.completion == "Ответ модели..."
    assert payload.reward == 1.8
    assert payload.step == 12
    assert (payload.group_id, payload.group_index) == ("g1", 3)
    assert payload.rewards == {"accuracy": 0.9, "format": 1.0}
    assert payload.metadata == {
        "correct_answer": "2.5",
        "accuracy_score": 0.9,
        "batch_idx": 0,
        "odd": [1, 2],
        "correct_answer_source": "dataset",
    }


def test_log_interaction_chat_messages_and_conversational_completion(emitter: Emitter, embedded_settings: Settings):
    log_interaction(
        [{"role": "user", "content": "2+2?"}],
        [{"role": "assistant", "content": "4"}],
        emitter=emitter,
        run_id="r",
    )
    emitter.close()
    (event,) = read_events(embedded_settings)
    assert event.payload.prompt == [{"role": "user", "content": "2+2?"}]
    assert event.payload.completion == "4"


def test_bad_values_are_logged_not_raised(emitter: Emitter, embedded_settings: Settings, caplog):
    assert log_interaction(prompt=42, completion="x", emitter=emitter) is None
    assert log_interaction(prompt="p", reward="high", emitter=emitter) is None
    assert log_metrics(step="three", loss=1.0, emitter=emitter) is None
    emitter.close()
    assert read_events(embedded_settings) == []
    assert "log_interaction.prompt: expected text or a list of chat messages" in caplog.text
    assert "log_interaction.reward: expected a number, got str 'high'" in caplog.text
    assert "log_metrics.step: expected an integer" in caplog.text


def test_values_a_worker_could_not_store_are_refused_naming_the_argument(
    emitter: Emitter, embedded_settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "_warned_at", {})
    deep: dict = {}
    for _ in range(300):
        deep = {"a": deep}
    refused = {
        "log_metrics.step: 9223372036854775808 is out of range": lambda: log_metrics(step=2**63, emitter=emitter),
        "log_metrics.step: -9223372036854775809 is out of range": lambda: log_metrics(
            step=-(2**63) - 1, emitter=emitter
        ),
        "log_interaction.step: 9223372036854775808 is out of range": lambda: log_interaction(
            "p", "c", step=2**63, emitter=emitter
        ),
        "log_interaction.completion_tokens: 18446744073709551616 is out of range": lambda: log_interaction(
            "p", "c", completion_tokens=Scalar(2**64), emitter=emitter
        ),
        "log_interaction.reward: int 1000": lambda: log_interaction("p", "c", reward=10**400, emitter=emitter),
        "log_interaction.metadata: nested more than 252 levels deep": lambda: log_interaction(
            "p", "c", metadata=deep, emitter=emitter
        ),
        "log_interaction.prompt: cannot be serialized: str is not valid UTF-8": lambda: log_interaction(
            "p\ud800", "c", emitter=emitter
        ),
    }
    for message, call in refused.items():
        api._warned_at.clear()  # one warning a field per 30 s: each of these must be logged
        assert call() is None, message
        assert message in caplog.text
    assert log_metrics(step=2**63 - 1, emitter=emitter) is not None  # the largest Int64 is fine
    emitter.close()
    assert [e.payload.step for e in read_events(embedded_settings)] == [2**63 - 1]
    assert emitter.stats().failed == 0


def test_log_metrics_maps_known_names(emitter: Emitter, embedded_settings: Settings, caplog):
    log_metrics(
        step=100,
        loss=0.41,
        grad_norm=Scalar(1.5),
        lr=2e-5,
        epoch=0.25,
        kl=0.02,
        **{"train/reward_std": 0.3, "nan_metric": math.nan},
        note="warmup done",
        skipped=None,
        run_id="hf-run",
        emitter=emitter,
    )
    emitter.close()
    (event,) = read_events(embedded_settings)
    step = event.payload
    assert event.event_type == "train_step" and event.run_id == "hf-run"
    assert step.step == 100
    assert (step.loss, step.grad_norm, step.learning_rate, step.epoch) == (0.41, 1.5, 2e-5, 0.25)
    assert step.metrics["kl"] == 0.02 and step.metrics["train/reward_std"] == 0.3
    assert math.isnan(step.metrics["nan_metric"])
    assert set(step.metrics) == {"kl", "train/reward_std", "nan_metric"}
    assert "left out 'note': expected a number" in caplog.text


def test_train_prefix_names(emitter: Emitter, embedded_settings: Settings):
    log_metrics(step=1, emitter=emitter, run_id="r", **{"train/loss": 2.0, "train/learning_rate": 1e-4})
    emitter.close()
    (event,) = read_events(embedded_settings)
    assert (event.payload.loss, event.payload.learning_rate, event.payload.metrics) == (2.0, 1e-4, {})


def test_run_id_precedence(monkeypatch):
    monkeypatch.delenv(api.RUN_ID_ENV, raising=False)
    generated = current_run_id()
    assert generated.startswith("run-") and current_run_id() == generated
    monkeypatch.setenv(api.RUN_ID_ENV, "from-env")
    assert current_run_id() == "from-env"
    set_run("explicit")
    assert current_run_id() == "explicit"
    assert current_run_id("argument") == "argument"
    set_run(None)
    assert current_run_id() == "from-env"
    with pytest.raises(ValueError, match="non-empty"):
        set_run("  ")


def test_default_emitter_and_env_run_id(tmp_path: Path):
    """In a fresh process: no emitter given, the run from $TRAINWIRE_RUN_ID, flushed at exit."""
    code = (
        "from trainwire.producers.api import log_interaction, log_metrics\n"
        "log_interaction('p', 'c', 1.0)\n"
        "log_metrics(step=1, loss=0.5)\n"
    )
    env = {**os.environ, "TRAINWIRE_DATA_DIR": str(tmp_path / "data"), "TRAINWIRE_RUN_ID": "env-run"}
    env.pop("TRAINWIRE_KAFKA", None)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, timeout=120)
    events = read_events(Settings(data_dir=tmp_path / "data"))
    assert sorted(e.event_type for e in events) == ["interaction", "train_step"]
    assert {e.run_id for e in events} == {"env-run"}
