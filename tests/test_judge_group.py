"""Group-relative judging: one request per GRPO group, against the scripted judge on loopback.

The scripted server answers group requests with :func:`~trainwire.judge.servers.group_reply`:
well-formed, reordered, short (one answer left out), garbage or slow; every request goes over
real HTTP through the ``openai`` client, and the worker runs on the embedded bus.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import read_events

from trainwire.bus import Emitter, open_consumer
from trainwire.bus.base import Record
from trainwire.cli import main
from trainwire.config import Settings
from trainwire.errors import ConfigError
from trainwire.events import Alert, Event, Interaction, JudgeRequest, JudgeScore, decode
from trainwire.judge.client import Judge, JudgeConfig
from trainwire.judge.grouping import GroupCollector
from trainwire.judge.parser import PARSER_VERSION, parse_group_judgement
from trainwire.judge.reward import judge_reward_function
from trainwire.judge.servers import Reply, ScriptedJudgeServer, group_answers, group_reply
from trainwire.judge.trigger import JudgeTrigger, TriggerConfig
from trainwire.judge.worker import JudgeWorker, judge_command
from trainwire.topics import event_topic

FAST = {"backoff_s": (0.01, 0.05), "timeout_s": 10.0}
SCORES = {"right": 5.0, "close": 3.0, "wrong": 1.0}


def by_text(text: str) -> float:
    """The scripted judge's score of one answer: by the word it starts with."""
    return SCORES[text.split()[0].rstrip(":")]


def group_config(server: ScriptedJudgeServer, **overrides: Any) -> JudgeConfig:
    values = {"base_url": server.base_url, "model": server.model, "mode": "group", "max_retries": 0, **FAST}
    return JudgeConfig(**{**values, **overrides})


# --------------------------------------------------------------------------- the parser

IDS = ["1", "2", "3"]
GOOD = [
    ('[{"id": "1", "score": 5, "reasoning": "a"}, {"id": "2", "score": 3}, {"id": "3", "score": 1}]', [5, 3, 1]),
    ('[{"id": "3", "score": 1}, {"id": "1", "score": 5}, {"id": "2", "score": 3}]', [5, 3, 1]),  # reordered
    ('Here:\n```json\n[{"id": 1, "score": "5"}, {"id": 2, "score": 3}, {"id": 3, "score": 1}]\n```', [5, 3, 1]),
    ('{"scores": [{"ID": "2", "Score": 4}, {"id": "1", "score": 2}, {"answer_id": "3", "score": 2}]}', [2, 4, 2]),
]
BAD = [
    ("", "empty answer"),
    ("They are all fine.", "no JSON array of scores found"),
    ('[{"id": "1", "score": 5}, {"id": "2", "score": 3}]', "no score for answer 3 (2 of 3 answers scored)"),
    ('[{"id": "1", "score": 5}, {"id": "2", "score": 3}, {"id": "4", "score": 1}]', "unknown answer id '4'"),
    ('[{"id": "1", "score": 5}, {"id": "1", "score": 3}, {"id": "3", "score": 1}]', "answer id '1' is scored twice"),
    ('[{"id": "1", "score": 5}, {"id": "2", "score": 9}, {"id": "3", "score": 1}]', "answer 2: score 9 is outside"),
    ('[{"id": "1", "score": "good"}, {"id": "2", "score": 3}, {"id": "3", "score": 1}]', "answer 1: score 'good'"),
    ("[5, 3, 1]", "item 1 of the array is not an object with an id"),
    ('[{"id": "1", "reasoning": "no score"}, {"id": "2", "score": 3}, {"id": "3", "score": 1}]', "answer 1: no score"),
]


@pytest.mark.parametrize(("text", "scores"), GOOD)
def test_group_answers_are_matched_by_id(text: str, scores: list[float]):
    parsed = parse_group_judgement(text, IDS)
    assert parsed.ok, parsed.error
    assert [parsed.judgements[i].score for i in IDS] == scores
    assert [parsed.judgements[i].score_normalized for i in IDS] == [(s - 1) / 4 for s in scores]


@pytest.mark.parametrize(("text", "reason"), BAD)
def test_a_malformed_or_short_group_answer_fails_the_whole_group(text: str, reason: str):
    parsed = parse_group_judgement(text, IDS)
    assert not parsed.ok and parsed.judgements == {}
    assert reason in parsed.error


# --------------------------------------------------------------------------- the client

ANSWERS = [("i1", "right: 4"), ("i2", "wrong: 5"), ("i3", "close: 4.1")]


@pytest.mark.parametrize("shape", ["good", "reordered"])
def test_one_request_per_group_scores_each_completion(shape: str):
    with ScriptedJudgeServer(lambda body: group_reply(body, by_text, shape)) as server:
        judge = Judge(group_config(server))
        scores = asyncio.run(judge.grade_group("2+2?", ANSWERS, reference="4", step=7))
        [body] = server.requests
    assert group_answers(body) == [("1", "right: 4"), ("2", "wrong: 5"), ("3", "close: 4.1")]
    assert "Reference answer (treat it as correct): 4" in body["messages"][-1]["content"]
    assert [(s.interaction_id, s.success, s.score, s.step) for s in scores] == [
        ("i1", True, 5.0, 7),
        ("i2", True, 1.0, 7),
        ("i3", True, 3.0, 7),
    ]
    assert [s.reasoning for s in scores] == ["answer 1 compared", "answer 2 compared", "answer 3 compared"]
    assert {(s.mode, s.template_name, s.parser_version) for s in scores} == {("group", "group", PARSER_VERSION)}
    assert judge.stats.calls == 1 and judge.stats.succeeded == 3
    assert asyncio.run(judge.grade_group("2+2?", [])) == [] and asyncio.run(judge.judge_group([])) == []
    assert judge.stats.calls == 1  # an empty group is not sent


@pytest.mark.parametrize(
    ("reply", "kind", "reason"),
    [
        (
            lambda body: group_reply(body, by_text, "short"),
            "unparseable",
            "no score for answer 3 (2 of 3 answers scored)",
        ),
        (lambda body: group_reply(body, by_text, "garbage"), "unparseable", "no JSON array of scores found"),
        (lambda body: group_reply(body, by_text, delay_s=3.0), "timeout", "no answer within 0.3s"),
        (lambda body: Reply(status=500), None, "HTTP 500"),  # the kind's name is the client's (HTTP 500)
    ],
    ids=["short", "garbage", "slow", "error"],
)
def test_a_failed_group_judgement_fails_every_completion_with_the_reason(reply: Any, kind: str | None, reason: str):
    with ScriptedJudgeServer(reply) as server:
        judge = Judge(group_config(server, timeout_s=0.3))
        scores = asyncio.run(judge.grade_group("2+2?", ANSWERS))
        assert len(server.requests) == 1
    assert [s.interaction_id for s in scores] == ["i1", "i2", "i3"]
    for score in scores:
        assert not score.success and score.score is None and score.score_normalized is None
        assert reason in score.error
    assert len({s.error for s in scores}) == 1  # the same failure for the whole group, never a partial one
    assert judge.stats.succeeded == 0 and sum(judge.stats.errors.values()) == 3
    assert kind is None or judge.stats.errors == {kind: 3}


def test_group_answers_are_cached_by_the_configuration(tmp_path: Path):
    with ScriptedJudgeServer(lambda body: group_reply(body, by_text)) as server:
        for _ in range(2):
            scores = asyncio.run(Judge(group_config(server), cache_dir=tmp_path).grade_group("q", ANSWERS))
        assert len(server.requests) == 1 and [s.score for s in scores] == [5.0, 1.0, 3.0]
        asyncio.run(Judge(group_config(server, temperature=0.7), cache_dir=tmp_path).grade_group("q", ANSWERS))
        asyncio.run(Judge(group_config(server), cache_dir=tmp_path).grade_group("q", ANSWERS[::-1]))  # another order
        assert len(server.requests) == 3


def test_mode_and_template_must_fit(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"judge\.mode: must be one of single, group"):
        JudgeConfig(mode="pairs")
    with pytest.raises(ConfigError, match=r"template 'ru' does not fit mode 'group'"):
        Judge(JudgeConfig(mode="group", template="ru"))
    with pytest.raises(ConfigError, match=r"template 'group' does not fit mode 'single'"):
        Judge(JudgeConfig(template="group"))
    with pytest.raises(ConfigError, match=r"judge\.guided_choice"):
        JudgeConfig(mode="group", guided_choice=True)
    assert Judge(JudgeConfig(mode="group")).prompt.name == "group"
    own = tmp_path / "mine.txt"
    own.write_text("[user]\nQ: $question\n$answers\n[answer]\n#$id: $answer\n")
    assert Judge(JudgeConfig(mode="group", template=str(own))).prompt.render_group("q", [("1", "a"), ("2", "b")]) == [
        {"role": "user", "content": "Q: q\n#1: a\n\n#2: b"}
    ]
    both = tmp_path / "both.txt"
    both.write_text("[user]\n$question $answer $answers\n")
    with pytest.raises(ConfigError, match=r"both\.txt: the user message has both \$answer"):
        Judge(JudgeConfig(template=str(both)))


def test_provenance_and_its_config_id():
    base = Judge(JudgeConfig(model="m"))
    assert base.provenance["template_name"] == "default" and base.provenance["mode"] == "single"
    assert len(base.provenance["template_hash"]) == 64 and base.template_version.endswith(
        base.provenance["template_hash"][:10]
    )
    assert base.provenance["sampling"]["temperature"] == 0.0 and base.provenance["sampling"]["max_tokens"] == 512
    assert Judge(JudgeConfig(model="m")).provenance == base.provenance
    others = [
        JudgeConfig(model="m2"),
        JudgeConfig(model="m", template="ru"),
        JudgeConfig(model="m", temperature=0.5),
        JudgeConfig(model="m", max_tokens=64),
        JudgeConfig(model="m", mode="group"),
        JudgeConfig(model="m", api="completions"),
    ]
    ids = {Judge(config).provenance["config_id"] for config in others}
    assert len(ids) == len(others) and base.provenance["config_id"] not in ids
    assert Judge(JudgeConfig(model="m", base_url="http://other:9/v1")).provenance == base.provenance


# --------------------------------------------------------------------------- when a group is complete


def request(run: str, group: str | None, n: int, step: int | None = 0) -> Event:
    metadata = {} if group is None else {"group_id": group}
    payload = JudgeRequest(
        interaction_id=f"{run}-{group}-{n}", prompt="q", completion=f"a{n}", step=step, metadata=metadata
    )
    return Event(run_id=run, payload=payload)


def record(offset: int, topic: str = "t", partition: int = 0) -> Record:
    return Record(topic, partition, offset, None, b"", 0)


def test_group_collector_completes_groups_by_size_step_wait_and_drain():
    collector = GroupCollector(group_size=3, wait_s=10.0)
    assert collector.add(record(0), request("r", "0:0", 0), now=0.0) == []
    assert collector.add(record(1), request("r", "0:1", 0), now=0.0) == []
    assert collector.add(record(2), request("r", "0:0", 1), now=1.0) == []
    assert collector.held() == {("t", 0): 0}
    [done] = collector.add(record(3), request("r", "0:0", 2), now=2.0)  # its third: complete by size
    assert [r.offset for r, _ in done] == [0, 2, 3]
    assert collector.held() == {("t", 0): 1}
    # a request at a later step of the run completes the run's earlier groups; other runs wait
    collector.add(record(4), request("other", "0:0", 0), now=3.0)
    later = request("r", "1:0", 0, step=1)
    [earlier] = collector.add(record(5), later, now=4.0)
    assert [e.payload.interaction_id for _, e in earlier] == ["r-0:1-0"]
    assert collector.held() == {("t", 0): 4} and len(collector) == 2
    # a request delivered twice counts once; without a group id a request is a group of its own
    collector.add(record(6), later, now=5.0)
    [alone] = collector.add(record(7), request("r", None, 0, step=1), now=5.0)
    assert len(alone) == 1
    assert collector.due(now=12.9) == [] and not collector.has_due(12.9)
    [waited] = collector.due(now=13.0)  # "other" waited 10 s since its last request
    assert [e.run_id for _, e in waited] == ["other"]
    [rest] = collector.drain()
    assert [r.offset for r, _ in rest] == [5] and len(collector) == 0 and collector.held() == {}
    with pytest.raises(ConfigError, match=r"judge\.group_size"):
        GroupCollector(group_size=0)


# --------------------------------------------------------------------------- the worker


def grpo_interactions(run: str, steps: int, groups: int, size: int) -> list[Event]:
    """``steps`` x ``groups`` GRPO groups of ``size`` completions, as the trainer hook emits them."""
    words = ["right", "close", "wrong"]
    events = []
    for step in range(steps):
        for group in range(groups):
            for index in range(size):
                payload = Interaction(
                    prompt=f"question {step}:{group}",
                    completion=f"{words[(group + index) % 3]} #{index}",
                    reward=float(index),
                    step=step,
                    group_id=f"{step}:{group}",
                    group_index=index,
                )
                events.append(Event(run_id=run, payload=payload))
    return events


def emit_all(settings: Settings, events: list[Event]) -> None:
    emitter = Emitter(settings)
    for event in events:
        emitter.emit(event)
    emitter.close()


def judge_scores(settings: Settings) -> list[JudgeScore]:
    return [e.payload for e in read_events(settings, "scores-reader") if isinstance(e.payload, JudgeScore)]


@pytest.mark.parametrize("group_size", [3, None], ids=["by-size", "by-step-and-drain"])
def test_group_worker_sends_one_request_per_group(embedded_settings: Settings, tmp_path: Path, group_size: int | None):
    sent = grpo_interactions("grpo-g", steps=2, groups=2, size=3)
    emit_all(embedded_settings, sent)
    with ScriptedJudgeServer(lambda body: group_reply(body, by_text, "reordered")) as server:
        judge = Judge(group_config(server), cache_dir=tmp_path / "judge")
        worker = JudgeWorker(
            embedded_settings, judge, trigger=JudgeTrigger(), groups=GroupCollector(group_size, wait_s=60.0)
        )
        asyncio.run(worker.run(idle_exit_s=1.5))
        assert len(server.requests) == 4  # 2 steps x 2 groups
        assert sorted(len(group_answers(body)) for body in server.requests) == [3, 3, 3, 3]
    assert (worker.requests_out, worker.scores_out, worker.failed_scores) == (12, 12, 0)
    scores = {s.interaction_id: s for s in judge_scores(embedded_settings)}
    assert len(scores) == 12
    for event in sent:
        score = scores[event.event_id]
        assert score.score == by_text(event.payload.completion) and score.mode == "group"
        assert (score.step, score.reward) == (event.payload.step, event.payload.reward)


async def read_records(consumer: Any, n: int) -> list[Record]:
    """The next ``n`` records of a started consumer (a Kafka fetch may return them in parts)."""
    records: list[Record] = []
    for _ in range(30):
        records += await consumer.getmany(timeout_ms=1000, max_records=n - len(records))
        if len(records) >= n:
            break
    return records


@pytest.mark.parametrize("bus", ["embedded", "kafka"])
def test_open_groups_are_held_at_the_commit_and_read_again(bus: str, request: pytest.FixtureRequest):
    """A worker stopped (or killed) with a group still open committed only up to that group's first record."""
    settings: Settings = request.getfixturevalue(f"{bus}_settings")
    sent = grpo_interactions("grpo-h", steps=1, groups=2, size=3)
    requests = [Event(run_id="grpo-h", payload=JudgeTrigger().process(e)[0].payload) for e in sent[:5]]
    emit_all(settings, requests)  # the first group whole, the second two of three
    topic = event_topic(settings.topic_prefix, "judge_request")

    async def stopped_after_the_first_group(worker: JudgeWorker) -> None:
        stop = asyncio.Event()

        async def watch() -> None:
            while worker.scores_out < 3:
                await asyncio.sleep(0.05)
            stop.set()

        watcher = asyncio.create_task(watch())
        await worker.run(stop)
        await watcher

    async def reread() -> list[Record]:
        consumer = open_consumer(settings, [topic], "judge")
        await consumer.start()
        try:
            return await read_records(consumer, 2)
        finally:
            await consumer.stop()

    with ScriptedJudgeServer(lambda body: group_reply(body, by_text)) as server:
        worker = JudgeWorker(settings, Judge(group_config(server)), group="judge", groups=GroupCollector(group_size=3))
        asyncio.run(stopped_after_the_first_group(worker))
        assert len(server.requests) == 1 and worker.scores_out == 3
    again = asyncio.run(reread())
    assert [decode(r.value).event_id for r in again] == [e.event_id for e in requests[3:]]  # the open group, whole


def test_judge_run_command_in_group_mode(embedded_settings: Settings):
    emit_all(embedded_settings, grpo_interactions("cli-group", steps=1, groups=3, size=2))
    with ScriptedJudgeServer(lambda body: group_reply(body, by_text)) as server:
        args = ["run", "--url", server.base_url, "--model", server.model, "--mode", "group", "--group-size", "2"]
        result = CliRunner().invoke(
            judge_command, [*args, "--until-idle", "1.5"], obj=embedded_settings, catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        assert len(server.requests) == 3
    assert "6 requests, 6 scores (0 failed)" in result.output
    assert {s.mode for s in judge_scores(embedded_settings)} == {"group"}


def test_judge_run_refuses_a_bad_group_size_before_anything_else(embedded_settings: Settings):
    with ScriptedJudgeServer() as server:
        url = server.base_url  # nothing listens there any more: the group size is still what is said
    args = ["judge", "run", "--url", url, "--mode", "group", "--group-size", "0", "--until-idle", "1"]
    result = CliRunner().invoke(main, ["--data-dir", str(embedded_settings.data_dir), *args])
    assert result.exit_code == 1 and "Error: judge.group_size: must be >= 1, got 0" in result.output


def test_sampling_keeps_groups_whole():
    events = grpo_interactions("r", steps=20, groups=4, size=4)
    picked = JudgeTrigger(TriggerConfig(sample_rate=0.5, whole_groups=True)).run(events)
    sizes: dict[str, int] = {}
    for event in picked:
        sizes[event.payload.metadata["group_id"]] = sizes.get(event.payload.metadata["group_id"], 0) + 1
    assert set(sizes.values()) == {4} and 20 < len(sizes) < 60


# --------------------------------------------------------------------------- the reward function


def test_group_reward_function_on_a_trl_batch(embedded_settings: Settings):
    def reply(body: dict[str, Any]) -> Reply:
        return group_reply(body, by_text, "short" if "broken" in body["messages"][-1]["content"] else "reordered")

    emitter = Emitter(embedded_settings)
    with ScriptedJudgeServer(reply) as server:
        reward = judge_reward_function(
            group_config(server), mode="group", emitter=emitter, run_id="grpo-reward", fallback=-1.0
        )
        # TRL's batch: each prompt repeated num_generations (3) times in a row
        prompts = ["2+2?"] * 3 + ["broken question"] * 3 + ["3+3?"] * 3
        completions = ["right 4", "wrong 5", "close 4.5"] * 3
        rewards = asyncio.run(reward(prompts=prompts, completions=completions, trainer_state=None))
        assert len(server.requests) == 3
    emitter.close()
    assert rewards == [1.0, 0.0, 0.5, -1.0, -1.0, -1.0, 1.0, 0.0, 0.5]  # the short answer: the whole group falls back
    [alert] = [e.payload for e in read_events(embedded_settings) if isinstance(e.payload, Alert)]
    assert alert.evidence["failed"] == 3 and alert.evidence["errors"] == {"unparseable": 3}
    assert "no score for answer 3" in alert.evidence["error"]


def test_group_reward_function_cuts_groups_at_group_size():
    with ScriptedJudgeServer(lambda body: group_reply(body, by_text)) as server:
        reward = judge_reward_function(
            group_config(server), mode="group", group_size=2, emitter=Emitter.__new__(Emitter)
        )
        rewards = asyncio.run(reward(prompts=["p"] * 4, completions=["right", "wrong", "close", "right"]))
        assert [len(group_answers(body)) for body in server.requests] == [2, 2]
    assert rewards == [1.0, 0.0, 0.5, 1.0]
    with pytest.raises(ConfigError, match=r"judge\.mode"):
        judge_reward_function(Judge(JudgeConfig()), mode="group")
