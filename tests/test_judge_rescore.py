"""`trainwire judge rescore`: stored interactions judged again with another configuration.

Against the scripted judge on loopback (its request count is what a rescore paid), on the
embedded bus and chdb, and with the interactions replayed from the real Kafka broker.
"""

from __future__ import annotations

import asyncio
from typing import Any

from click.testing import CliRunner
from helpers import read_events

from trainwire.bus import Emitter
from trainwire.config import Settings
from trainwire.events import Event, Interaction, JudgeScore
from trainwire.judge.rescore import interactions_from_store
from trainwire.judge.servers import ScriptedJudgeServer, group_answers, group_reply
from trainwire.judge.worker import judge_command
from trainwire.runtime import WorkerOptions, build_pipeline
from trainwire.store.clickhouse import open_store


def answer(body: dict[str, Any]) -> Any:
    """A group request gets a score per answer (by its length), a single one 'Score: 4' (default) or 2 (ru)."""
    if group_answers(body):
        return group_reply(body, lambda text: float(1 + len(text) % 5))
    return "Оценка: 2" if "Оценка" in body["messages"][0]["content"] else "Score: 4"


def emit_run(settings: Settings, run: str, steps: int = 2, groups: int = 2, size: int = 2) -> list[Event]:
    events = [
        Event(
            run_id=run,
            payload=Interaction(
                prompt=f"question {step}:{group}",
                completion=f"answer {'x' * index}",
                reward=float(index),
                step=step,
                group_id=f"{step}:{group}",
                group_index=index,
            ),
        )
        for step in range(steps)
        for group in range(groups)
        for index in range(size)
    ]
    emitter = Emitter(settings)
    for event in events:
        emitter.emit(event)
    emitter.close()
    return events


def judge(settings: Settings, server: ScriptedJudgeServer, *args: str) -> str:
    common = ["--url", server.base_url, "--model", server.model, "--retries", "0"]
    result = CliRunner().invoke(judge_command, [*args, *common], obj=settings, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def store_everything(settings: Settings, group: str) -> None:
    with open_store(settings) as store:
        store.migrate()
        asyncio.run(build_pipeline(settings, store, WorkerOptions(group=group, monitor=False)).run(idle_exit_s=1.0))


def stored_scores(settings: Settings, run: str) -> list[dict[str, Any]]:
    with open_store(settings) as store:
        return store.query_rows(
            "SELECT interaction_id, score, template_name, mode, config_id FROM judge_scores FINAL"
            " WHERE run_id = {run:String} ORDER BY template_name, mode, interaction_id",
            {"run": run},
        )


def test_rescore_from_the_store_keeps_the_old_scores_and_is_idempotent(embedded_settings: Settings):
    settings = embedded_settings
    sent = emit_run(settings, "grpo-r")
    emit_run(settings, "other-run", steps=1, groups=1)
    with ScriptedJudgeServer(answer) as server:
        judge(settings, server, "run", "--runs", "grpo-*", "--until-idle", "1.5")
        assert len(server.requests) == 8
        store_everything(settings, "store-1")

        out = judge(settings, server, "rescore", "--runs", "grpo-*", "--template", "ru")
        assert len(server.requests) == 16
        assert "rescored 8 interactions of grpo-* from the store" in out and "8 requests, 8 scores (0 failed)" in out
        out = judge(settings, server, "rescore", "--runs", "grpo-r", "--template", "ru")  # the same again
        assert len(server.requests) == 16 and "0 calls, 8 from cache" in out
        grouped = judge(settings, server, "rescore", "--runs", "grpo-r", "--mode", "group")
        assert len(server.requests) == 16 + 4  # one request per group: 2 steps x 2 groups
        assert "8 requests, 8 scores (0 failed)" in grouped
        store_everything(settings, "store-2")
    rows = stored_scores(settings, "grpo-r")  # the first scores stay, each rescore's beside them
    by_config: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        by_config.setdefault((row["template_name"], row["mode"]), []).append(row)
    assert sorted(by_config) == [("default", "single"), ("group", "group"), ("ru", "single")]
    ids = sorted(e.event_id for e in sent)
    for (template, _), scores in by_config.items():
        assert sorted(s["interaction_id"] for s in scores) == ids  # one score per interaction and configuration
        assert len({s["config_id"] for s in scores}) == 1
        if template != "group":
            assert {s["score"] for s in scores} == {4.0 if template == "default" else 2.0}
    assert len({scores[0]["config_id"] for scores in by_config.values()}) == 3
    assert {s["score"] for s in by_config[("group", "group")]} == {
        float(1 + len(f"answer {'x' * i}") % 5) for i in (0, 1)
    }
    assert stored_scores(settings, "other-run") == []


def test_rescore_replays_the_interactions_topic_on_kafka(kafka_settings: Settings):
    settings = kafka_settings
    sent = emit_run(settings, "grpo-k", steps=1)
    emit_run(settings, "other-run", steps=1, groups=1)
    with ScriptedJudgeServer(answer) as server:
        args = ["rescore", "--runs", "grpo-k", "--source", "bus", "--idle", "1"]
        out = judge(settings, server, *args)
        assert len(server.requests) == 4 and "rescored 6 interactions of grpo-k from the bus" in out
        again = judge(settings, server, *args)  # a fresh consumer group reads the topic from the start again
        assert len(server.requests) == 4 and "rescored 6 interactions" in again and "4 from cache" in again
    scores = [e for e in read_events(settings, "scores", expected=None) if isinstance(e.payload, JudgeScore)]
    assert {e.payload.interaction_id for e in scores} == {e.event_id for e in sent}
    assert len({e.event_id for e in scores}) == 4  # the same score ids both times: stored once


def test_interactions_are_read_back_from_the_store_whole_page_by_page(embedded_settings: Settings):
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]
    events = [
        Event(
            run_id="paged" if i != 3 else "paged-2",
            payload=Interaction(
                prompt=chat if i % 2 else f"question {i}",
                completion=f"answer {i}",
                reward=i / 2,
                rewards={"acc": float(i % 2)},
                success=i != 5,
                step=None if i == 6 else i // 3,
                group_id=None if i == 6 else f"{i // 3}:0",
                metadata={"answer": str(i), "nested": {"k": [i]}},
            ),
        )
        for i in range(8)
    ]
    with open_store(embedded_settings) as store:
        store.migrate()
        store.insert_events(events + events[:2])  # a redelivery is read once
        pages = list(interactions_from_store(store, ["paged*"], page=3))
    assert [len(page) for page in pages] == [3, 3, 1, 1]  # run 'paged' in pages of 3, then 'paged-2'
    read = [event for page in pages for event in page]
    order = [6, 0, 1, 2, 4, 5, 7, 3]  # by run, then step (no step first), time
    assert [e.event_id for e in read] == [events[i].event_id for i in order]
    assert [(e.run_id, e.ts, e.payload) for e in read] == [
        (events[i].run_id, events[i].ts, events[i].payload) for i in order
    ]
