"""The LLM judge: parsing, prompts, the client against real loopback servers, the trigger, the worker, the reward.

Every LLM call goes through the real ``openai`` client over HTTP to a server on 127.0.0.1: the
scripted judge (answers chosen per request: well-formed, Russian, JSON, garbage, out of range,
slow, HTTP 500/429/400) or a tiny random-weight transformers model.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from helpers import read_events
from transformers import TrainerState

from trainwire.bus import Emitter, open_consumer
from trainwire.bus.base import Message, Record
from trainwire.bus.local import LocalTransport
from trainwire.config import Settings
from trainwire.errors import ConfigError
from trainwire.events import Alert, Event, Interaction, JudgeRequest, JudgeScore, decode, encode
from trainwire.judge.client import BlockingJudge, Judge, JudgeConfig, completion_prompt
from trainwire.judge.parser import ScoreScale, parse_judgement
from trainwire.judge.prompts import BUILTIN_TEMPLATES, load_template, prompt_text
from trainwire.judge.reward import JUDGE_FAILED_RULE, judge_reward_function
from trainwire.judge.servers import Reply, ScriptedJudgeServer, TransformersChatServer
from trainwire.judge.trigger import JudgeTrigger, TriggerConfig, request_event_id, sampled
from trainwire.judge.worker import JudgeWorker, judge_command, score_event_id
from trainwire.runtime import WorkerOptions, build_pipeline
from trainwire.store.clickhouse import open_store
from trainwire.topics import DEAD_LETTER, event_topic, topic_name

FAST = {"backoff_s": (0.01, 0.05), "timeout_s": 10.0}


def config(server: ScriptedJudgeServer | TransformersChatServer, **overrides: Any) -> JudgeConfig:
    values = {"base_url": server.base_url, "model": server.model, "api_key": "sk-test-secret", **FAST}
    values.update(overrides)
    return JudgeConfig(**values)


def grade(judge: Judge, *args: Any, **kwargs: Any) -> JudgeScore:
    return asyncio.run(judge.grade(*args, **kwargs))


# --------------------------------------------------------------------------- parser

PARSE_TABLE = [
    ("Score: 4\nReasoning: accurate and complete.", 4.0, "accurate and complete."),
    ("**Score:** 5\n**Reasoning:** perfect.", 5.0, "perfect."),
    ("score = 2\nreasoning: wrong year", 2.0, "wrong year"),
    ("Reasoning: vague.\nScore: 1", 1.0, "vague."),
    ("Score: 4/5\nReasoning: fine", 4.0, "fine"),
    ("Score: 3.5", 3.5, None),
    ("Оценка: 3\nОбоснование: ответ верный, но неполный.", 3.0, "ответ верный, но неполный."),
    ("Оценка: 5 из 5\nОбоснование: отлично", 5.0, "отлично"),
    ('{"score": 2, "reasoning": "partially relevant"}', 2.0, "partially relevant"),
    ('Here you go:\n```json\n{"score": "4", "reasoning": "good"}\n```', 4.0, "good"),
    ('{"оценка": 1, "обоснование": "неверно"}', 1.0, "неверно"),
]

PARSE_FAILURES = [
    ("", "empty answer"),
    ("The answer looks fine to me.", "no score found"),
    ("Score: five\nReasoning: good", "is not a number"),
    ("Score: 7\nReasoning: very good", "outside the scale 1..5"),
    ("Score: 0", "outside the scale"),
    ("Score: 8/10", "out of 10"),
    ('{"score": "high", "reasoning": "x"}', "not a number"),
    ('{"score": 9}', "outside the scale"),
    ("Оценка: отлично", "is not a number"),
]


@pytest.mark.parametrize(("text", "score", "reasoning"), PARSE_TABLE)
def test_parse_well_formed_answers(text: str, score: float, reasoning: str | None):
    parsed = parse_judgement(text)
    assert parsed.ok, parsed.error
    assert parsed.score == score
    assert parsed.score_normalized == (score - 1) / 4
    assert parsed.reasoning == reasoning


@pytest.mark.parametrize(("text", "reason"), PARSE_FAILURES)
def test_parse_failures_carry_the_reason_and_no_score(text: str, reason: str):
    parsed = parse_judgement(text)
    assert not parsed.ok
    assert parsed.score is None and parsed.score_normalized is None
    assert reason in parsed.error


def test_parse_with_another_scale():
    scale = ScoreScale(0, 10)
    assert parse_judgement("Score: 8/10", scale).score_normalized == 0.8
    assert not parse_judgement("Score: 11", scale).ok
    with pytest.raises(ConfigError):
        ScoreScale(5, 1)


# --------------------------------------------------------------------------- prompts


def test_default_template_with_reference_and_few_shot(tmp_path: Path):
    examples = tmp_path / "shots.jsonl"
    examples.write_text(
        '{"question": "2+2?", "answer": "5", "score": 1, "reasoning": "wrong"}\n'
        '{"inputs": "Capital of France?", "predictions": "Paris", "score": 5, "reasoning": "right"}\n'
    )
    plain = load_template("default")
    shots = load_template("default", examples)
    assert plain.version.startswith("default-") and shots.version != plain.version
    messages = shots.render("What is 7+5?", "12", reference="12")
    system, user = messages[0]["content"], messages[1]["content"]
    for criterion in ("Accuracy", "Completeness", "Relevance", "Conciseness"):
        assert criterion in system
    assert "Score: <a whole number from 1 to 5>" in system and "Reasoning:" in system
    assert "Question: 2+2?" in system and "Answer to grade: Paris" in system and "Score: 5" in system
    assert user.startswith("Question: What is 7+5?")
    assert "Reference answer (treat it as correct): 12" in user and user.endswith("Answer to grade: 12")
    without = plain.render([{"role": "user", "content": "What is 7+5?"}], "12")[1]["content"]
    assert "Reference" not in without and "\n\n\n" not in without
    structured = plain.render("q", "a", structured=True)[1]["content"]
    assert '{"score":' in structured


def test_russian_template_and_errors(tmp_path: Path):
    ru = load_template("ru")
    messages = ru.render("Столица Германии?", "Берлин", reference="Берлин")
    assert "Оценка: <целое число от 1 до 5>" in messages[0]["content"]
    assert "Эталонный ответ" in messages[1]["content"] and "Ответ для оценки: Берлин" in messages[1]["content"]
    own = tmp_path / "mine.txt"
    own.write_text("[user]\nQ: $question A: $answer {literal braces}\n")
    assert load_template(own).render("x", "y") == [{"role": "user", "content": "Q: x A: y {literal braces}"}]
    (tmp_path / "bad.txt").write_text("[system]\nno user section\n")
    with pytest.raises(ConfigError, match=r"bad\.txt: no \[user\] section"):
        load_template(tmp_path / "bad.txt")
    with pytest.raises(ConfigError, match="built-in templates"):
        load_template(tmp_path / "missing.txt")
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "answer": "a", "score": 3}\n{"question": "q"}\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl:2"):
        load_template("default", tmp_path / "bad.jsonl")
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert prompt_text(conversation) == "user: hi\nassistant: hello"


# seed 002's mlflow_tracking/prompts/judge_prompt.txt, as its README shows it
SEED_JUDGE_PROMPT = """\
Вы являетесь экспертным оценщиком качества ответов. Ваша задача - оценить предоставленный ответ на вопрос по шкале от 1 до 5, где 1 - очень плохо, 5 - отлично. Обоснуйте свою оценку, ссылаясь на указанные критерии.

**Критерии оценки:**
- **Точность (Accuracy):** Ответ должен быть фактически верным.
- **Полнота (Completeness):** Ответ должен быть достаточно полным, чтобы полностью ответить на вопрос, но без излишней информации.
- **Релевантность (Relevance):** Ответ должен быть прямо относиться к заданному вопросу.
- **Лаконичность (Conciseness):** Ответ должен быть кратким и по существу, без "воды".

**Формат вывода:**
Оценка: [ЧИСЛО ОТ 1 ДО 5]
Обоснование: [ВАШЕ ОБОСНОВАНИЕ, ссылающееся на критерии]

---
Вопрос: {question}
Ответ для оценки: {answer}
---
"""  # noqa: E501


def test_seed_002_prompt_file_is_the_user_message(tmp_path: Path):
    path = tmp_path / "judge_prompt.txt"
    path.write_text(SEED_JUDGE_PROMPT, encoding="utf-8")
    prompt = load_template(path)
    assert prompt.version.startswith("judge_prompt-")
    [message] = prompt.render("Столица Германии?", "Берлин", reference="Берлин")
    assert message["role"] == "user"
    content = message["content"]
    assert content.startswith("Вы являетесь экспертным оценщиком")
    assert "Вопрос: Столица Германии?\nОтвет для оценки: Берлин\n---" in content
    assert "Оценка: [ЧИСЛО ОТ 1 ДО 5]" in content and "{" not in content
    assert content == SEED_JUDGE_PROMPT.format(question="Столица Германии?", answer="Берлин").strip()
    # through the judge, as `--template judge_prompt.txt`: one user message, the Russian answer parsed
    with ScriptedJudgeServer(default="Оценка: 4\nОбоснование: верно, но кратко.") as server:
        score = grade(Judge(config(server, template=str(path))), "Столица Германии?", "Берлин")
        assert server.requests[0]["messages"] == [{"role": "user", "content": content}]
    assert (score.score, score.reasoning, score.template_version) == (4.0, "верно, но кратко.", prompt.version)
    # the same text under a [user] header (no longer sent with literal braces), and a reference line
    headed = tmp_path / "headed.txt"
    headed.write_text("[user]\n" + SEED_JUDGE_PROMPT, encoding="utf-8")
    assert load_template(headed).render("Столица Германии?", "Берлин")[0]["content"] == content
    with_reference = tmp_path / "with_reference.txt"
    with_reference.write_text("Вопрос: {question}\nЭталон: {reference}\nОтвет: {answer}\n", encoding="utf-8")
    [message] = load_template(with_reference).render("2+2?", "4", reference="4")
    assert message == {"role": "user", "content": "Вопрос: 2+2?\nЭталон: 4\nОтвет: 4"}


def test_brace_placeholders_in_sections_and_literal_braces(tmp_path: Path):
    path = tmp_path / "braces.txt"
    path.write_text(
        "[system]\nGrade from {low} to ${high}; price $5, $$HOME, $x$ stays.\n{examples}\n"
        "[user]\nВопрос: {question}\n{reference}\nОтвет: {answer}\n"
        'Keep {{question}} and JSON {"score": {"nested": 1}} and {literal braces} and {{ "a": 1 }}.\n'
        "[reference]\nЭталон: {reference}\n"
        "[example]\nQ: {question} A: {answer} -> {score} ({reasoning})\n"
        '[json]\nReply {"score": <{low}..{high}>}\n',
        encoding="utf-8",
    )
    shots = tmp_path / "shots.jsonl"
    shots.write_text('{"question": "1+1?", "answer": "2", "score": 5, "reasoning": "right"}\n')
    system, user = load_template(path, shots).render("2+2?", "4", reference="4", high=10, structured=True)
    assert system["content"] == "Grade from 1 to 10; price $5, $HOME, $x$ stays.\n\nQ: 1+1? A: 2 -> 5 (right)"
    assert user["content"] == (
        "Вопрос: 2+2?\nЭталон: 4\nОтвет: 4\n"
        'Keep {question} and JSON {"score": {"nested": 1}} and {literal braces} and {{ "a": 1 }}.'
        '\n\nReply {"score": <1..10>}'
    )
    without_reference = load_template(path).render("2+2?", "4")[1]["content"]
    assert without_reference.startswith("Вопрос: 2+2?\n\nОтвет: 4\n") and "Эталон" not in without_reference


def test_template_placeholder_errors_name_the_file_and_line(tmp_path: Path):
    def load(text: str, examples: Path | None = None) -> None:
        path = tmp_path / "t.txt"
        path.write_text(text, encoding="utf-8")
        load_template(path, examples)

    with pytest.raises(ConfigError, match=r"t\.txt:3: unknown placeholder \{questoin\} in \[user\]") as err:
        load("Grade it.\n\nВопрос: {questoin}\nОтвет: {answer}\n")
    assert "known there: question, answer, answers, reference, low, high" in str(err.value)
    assert "{{questoin}}" in str(err.value)  # how to write literal braces
    # a sectioned template sends an unknown {name} as written (LaTeX keeps working), as before
    path = tmp_path / "sectioned.txt"
    path.write_text("# a comment\n[system]\nAbout {question}: \\frac{a}{b}\n[user]\n$question {answer}\n")
    system, user = load_template(path).render("Q?", "A!", None)
    assert (system["content"], user["content"]) == ("About {question}: \\frac{a}{b}", "Q? A!")
    for text in ("Grade this answer.\n", "[user]\nQ: {{question}}\n", "Q: $Question {reference}\n"):
        with pytest.raises(ConfigError, match=r"t\.txt: the user message has no \{question\} or \{answer\}"):
            load(text)
    shots = tmp_path / "shots.jsonl"
    shots.write_text('{"question": "q", "answer": "a", "score": 3, "reasoning": "r"}\n')
    with pytest.raises(ConfigError, match=r"shots\.jsonl: .*t\.txt cannot show few-shot examples"):
        load(SEED_JUDGE_PROMPT, shots)
    with pytest.raises(ConfigError, match=r"cannot show few-shot examples"):
        load("[system]\nGrade.\n[user]\n{question} {answer}\n[example]\n{question}\n", shots)
    load("[system]\nGrade.\n{examples}\n[user]\n{question} {answer}\n[example]\n{question}\n", shots)  # loads


def _dollar_only_version(name: str, text: bytes) -> str:
    """The version trainwire gave a template before brace placeholders: sha256 of text, NUL, examples."""
    return f"{name}-{hashlib.sha256(text + bytes(1)).hexdigest()[:10]}"


def test_template_version_is_content_and_syntax(tmp_path: Path):
    seed = tmp_path / "judge_prompt.txt"
    seed.write_text(SEED_JUDGE_PROMPT, encoding="utf-8")
    assert load_template(seed).version == load_template(seed).version
    edited = tmp_path / "edited" / "judge_prompt.txt"
    edited.parent.mkdir()
    edited.write_text(SEED_JUDGE_PROMPT.replace("от 1 до 5", "от 1 до 10"), encoding="utf-8")
    assert load_template(edited).version != load_template(seed).version
    # $-only templates, the built-in ones included, keep their version (and so their cached judgements)
    dollar = tmp_path / "dollar.txt"
    dollar.write_text("[user]\nQ: $question A: $answer {literal braces}\n")
    assert load_template(dollar).version == _dollar_only_version("dollar", dollar.read_bytes())
    for name in BUILTIN_TEMPLATES:
        text = resources.files("trainwire.judge").joinpath("templates", f"{name}.txt").read_bytes()
        assert load_template(name).version == _dollar_only_version(name, text)
    # a file whose {question} an older release sent literally never shares its version (or cache)
    braces = tmp_path / "braces.txt"
    braces.write_text("[user]\nQ: {question} A: {answer}\n")
    assert load_template(braces).version != _dollar_only_version("braces", braces.read_bytes())


# --------------------------------------------------------------------------- config


def test_config_from_env_hides_the_key():
    env = {"TRAINWIRE_JUDGE_URL": "http://judge:9000/v1", "TRAINWIRE_JUDGE_MODEL": "m", "TRAINWIRE_JUDGE_API_KEY": "k1"}
    cfg = JudgeConfig.from_env(env, concurrency=3)
    assert (cfg.base_url, cfg.model, cfg.api_key.value, cfg.concurrency) == ("http://judge:9000/v1", "m", "k1", 3)
    assert "k1" not in repr(cfg)
    assert JudgeConfig.from_env({}).base_url == "http://localhost:8000/v1"
    with pytest.raises(ConfigError, match="concurrency"):
        JudgeConfig(concurrency=0)
    with pytest.raises(ConfigError, match="unknown"):
        JudgeConfig.from_env({}, colour="red")


def test_config_api_from_env_validated_and_in_the_cache_key():
    assert JudgeConfig().api == "chat" and JudgeConfig.from_env({}).api == "chat"
    env = {"TRAINWIRE_JUDGE_API": "completions"}
    assert JudgeConfig.from_env(env).api == "completions"
    assert JudgeConfig.from_env(env, api="chat").api == "chat"  # an override (a CLI option) wins
    with pytest.raises(ConfigError, match=r"judge\.api: must be one of chat, completions, got 'text'"):
        JudgeConfig.from_env({"TRAINWIRE_JUDGE_API": "text"})
    with pytest.raises(ConfigError, match=r"judge\.api"):
        JudgeConfig(api="Chat")
    chat, text = (Judge(JudgeConfig(api=api)) for api in ("chat", "completions"))
    assert chat.cache_key("q", "a", "r") != text.cache_key("q", "a", "r")
    # a chat judge's keys are those of a judge from before the setting: existing caches keep their hits
    c = chat.config
    before = ["q", "a", "r", c.model, chat.template_version, 1.0, 5.0, 0.0, 512, False, False]
    assert chat.cache_key("q", "a", "r") == hashlib.sha256(orjson.dumps(before)).hexdigest()


# --------------------------------------------------------------------------- the client


def test_scripted_answers_become_scores_or_failed_judgements():
    answers = {
        "a": "Score: 5\nReasoning: correct.",
        "b": "Оценка: 2\nОбоснование: неполно.",
        "c": '```json\n{"score": 3, "reasoning": "ok"}\n```',
        "d": "I refuse to grade this.",
        "e": "Score: 9\nReasoning: amazing",
    }

    def respond(body: dict[str, Any]) -> str:
        return answers[body["messages"][-1]["content"].rsplit(": ", 1)[-1]]

    with ScriptedJudgeServer(respond) as server:
        judge = Judge(config(server))
        requests = [JudgeRequest(interaction_id=k, prompt="q", completion=k, step=1) for k in answers]
        scores = {s.interaction_id: s for s in asyncio.run(judge.judge_many(requests))}
    assert [scores[k].score for k in "abc"] == [5.0, 2.0, 3.0]
    assert scores["b"].reasoning == "неполно." and scores["a"].score_normalized == 1.0
    for key in "de":
        assert not scores[key].success and scores[key].score is None and scores[key].score_normalized is None
        assert scores[key].raw_output == answers[key] and scores[key].error.startswith("unparseable")
    assert all(
        s.judge_model == "scripted-judge" and s.template_version == judge.template_version for s in scores.values()
    )
    assert judge.stats.errors == {"unparseable": 2} and judge.stats.succeeded == 3


def test_retries_on_500_and_429_then_success():
    script = [
        Reply(status=500),
        Reply(status=429, headers={"Retry-After": "0"}),
        Reply(status=503),
        "Score: 4\nReasoning: ok",
    ]
    with ScriptedJudgeServer(script) as server:
        judge = Judge(config(server, max_retries=3))
        score = grade(judge, "q", "a")
        assert len(server.requests) == 4
    assert score.success and score.score == 4.0
    assert judge.stats.retries == 3 and judge.stats.calls == 4


def test_retries_run_out_and_4xx_is_not_retried():
    with ScriptedJudgeServer([Reply(status=500)] * 3) as server:
        score = grade(Judge(config(server, max_retries=2)), "q", "a")
        assert len(server.requests) == 3
    assert not score.success and score.raw_output == ""
    assert "HTTP 500" in score.error and "after 2 retries" in score.error
    with ScriptedJudgeServer([Reply("bad request", status=400)]) as server:
        score = grade(Judge(config(server, max_retries=3)), "q", "a")
        assert len(server.requests) == 1
    assert not score.success and "HTTP 400" in score.error


def test_timeout_is_a_failed_judgement():
    with ScriptedJudgeServer(default=Reply("Score: 5", delay_s=3.0)) as server:
        judge = Judge(config(server, timeout_s=0.3, max_retries=1))
        score = grade(judge, "q", "a")
        assert len(server.requests) == 2  # the first attempt and one retry
    assert not score.success and score.score is None
    assert score.error.startswith("timeout") and judge.stats.errors == {"timeout": 1}


def test_connection_refused_is_a_failed_judgement():
    with ScriptedJudgeServer() as server:
        url = server.base_url
    judge = Judge(JudgeConfig(base_url=url, max_retries=1, backoff_s=(0.01, 0.02)))
    score = grade(judge, "q", "a")
    assert not score.success and score.error.startswith(f"connection refused: nothing listens at {url}")


def test_cache_hit_on_replay_costs_no_second_call(tmp_path: Path):
    with ScriptedJudgeServer(default="Score: 2\nReasoning: meh") as server:
        first = grade(Judge(config(server), cache_dir=tmp_path), "q", "a", reference="r", interaction_id="i1")
        replay_judge = Judge(config(server), cache_dir=tmp_path)  # a new process on the same data dir
        replay = grade(replay_judge, "q", "a", reference="r", interaction_id="i1")
        assert len(server.requests) == 1
        assert replay_judge.stats.cache_hits == 1
        assert (replay.score, replay.reasoning, replay.raw_output) == (first.score, first.reasoning, first.raw_output)
        grade(replay_judge, "q", "a", reference="other")  # another reference is another question
        grade(Judge(config(server, template="ru"), cache_dir=tmp_path), "q", "a", reference="r")  # another template
        grade(Judge(config(server, model="other-judge"), cache_dir=tmp_path), "q", "a", reference="r")
        assert len(server.requests) == 4


def test_another_api_is_another_cache_entry(tmp_path: Path):
    with ScriptedJudgeServer(default="Score: 2\nReasoning: meh") as server:
        for api in ("chat", "completions", "completions", "chat"):
            assert grade(Judge(config(server, api=api), cache_dir=tmp_path), "q", "a").score == 2.0
        assert server.paths == ["/v1/chat/completions", "/v1/completions"]


def test_failed_calls_are_not_cached(tmp_path: Path):
    with ScriptedJudgeServer([Reply(status=500), "Score: 5\nReasoning: ok"]) as server:
        assert not grade(Judge(config(server, max_retries=0), cache_dir=tmp_path), "q", "a").success
        assert grade(Judge(config(server, max_retries=0), cache_dir=tmp_path), "q", "a").score == 5.0
        assert len(server.requests) == 2


def test_concurrency_limit_holds():
    with ScriptedJudgeServer(latency_s=0.1) as server:
        judge = Judge(config(server, concurrency=3))
        requests = [JudgeRequest(interaction_id=str(i), prompt="q", completion=str(i)) for i in range(12)]
        scores = asyncio.run(judge.judge_many(requests))
        assert server.max_in_flight == 3
    assert [s.interaction_id for s in scores] == [str(i) for i in range(12)]


def test_structured_output_request_and_json_answer():
    with ScriptedJudgeServer(default='{"score": 4, "reasoning": "solid"}') as server:
        score = grade(Judge(config(server, structured=True)), "q", "a")
        body = server.requests[0]
    assert score.score == 4.0 and score.reasoning == "solid"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["properties"]["score"]["maximum"] == 5.0


def test_one_judge_across_event_loops_and_threads():
    with ScriptedJudgeServer(default="Score: 3\nReasoning: ok") as server:
        judge = Judge(config(server))
        assert grade(judge, "q", "a1").success
        assert grade(judge, "q", "a2").success  # a second asyncio.run: a new loop, a new client
        with BlockingJudge(judge) as blocking:
            results: list[JudgeScore] = []
            threads = [
                threading.Thread(target=lambda i=i: results.append(blocking.grade("q", f"t{i}"))) for i in range(4)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert len(results) == 4 and all(r.score == 3.0 for r in results)


def test_tiny_transformers_model_gives_a_failed_judgement_with_its_raw_text(tmp_path: Path):
    """A random-weight model answers gibberish: the pipeline must record that as a failed judgement
    with the raw text (this proves the real HTTP + generation path, not judging quality)."""
    from trainwire.producers.tiny import build_tiny_model

    with TransformersChatServer(build_tiny_model(tmp_path / "tiny", seed=0), max_new_tokens=24) as server:
        judge = Judge(config(server, max_tokens=24))
        score = grade(judge, "What is 2 + 2?", "4", reference="4", interaction_id="i")
        assert len(server.requests) == 1
        assert server.requests[0]["messages"][0]["role"] == "system"
    assert not score.success and score.score is None
    assert score.raw_output.strip() and score.error.startswith("unparseable")
    assert score.judge_model == "tiny"


def test_guided_choice_makes_the_tiny_model_answer_in_format(tmp_path: Path):
    """With vLLM-style guided_choice the server returns the likeliest of `Score: 1..5`, so it parses."""
    from trainwire.producers.tiny import build_tiny_model

    with TransformersChatServer(build_tiny_model(tmp_path / "tiny", seed=0)) as server:
        judge = Judge(config(server, guided_choice=True))
        score = grade(judge, "What is 2 + 2?", "4", reference="4", interaction_id="i")
        assert server.requests[0]["guided_choice"] == [f"Score: {n}" for n in range(1, 6)]
    assert score.success and score.score in {1.0, 2.0, 3.0, 4.0, 5.0}
    assert score.raw_output == f"Score: {score.score:g}"
    assert score.score_normalized == (score.score - 1) / 4


def test_completions_api_sends_the_rendered_prompt_as_text():
    def respond(body: dict[str, Any]) -> str:
        prompt = body["prompt"]
        if "{" in prompt:  # the structured request
            return '{"score": 5, "reasoning": "as JSON"}'
        return "Score: 4\nReasoning: right" if prompt.endswith("Answer to grade: 4\n") else "no verdict here"

    with ScriptedJudgeServer(respond) as server:
        judge = Judge(config(server, api="completions", guided_choice=True, max_tokens=64))
        good = grade(judge, "What is 2+2?", "4", reference="4")
        bad = grade(judge, "What is 2+2?", "5")
        structured = grade(Judge(config(server, api="completions", structured=True)), "What is 2+2?", "4")
        assert server.paths == ["/v1/completions"] * 3
        body, structured_body = server.requests[0], server.requests[2]
    assert "messages" not in body
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("scripted-judge", 0.0, 64)
    assert body["guided_choice"] == [f"Score: {n}" for n in range(1, 6)]
    assert structured_body["response_format"]["type"] == "json_schema"
    system, user = load_template("default").render("What is 2+2?", "4", reference="4")
    prompt = body["prompt"]
    assert prompt == completion_prompt([system, user]) == f"{system['content']}\n\n{user['content']}\n"
    assert "Question: What is 2+2?" in prompt and "Answer to grade: 4" in prompt
    assert not any(markup in prompt for markup in ("system:", "user:", "assistant:", "<|im_start|>", "'role'"))
    assert (good.success, good.score, good.reasoning) == (True, 4.0, "right")
    assert not bad.success and bad.score is None and bad.error.startswith("unparseable")
    assert bad.raw_output == "no verdict here"
    assert (structured.score, structured.reasoning) == (5.0, "as JSON")
    assert completion_prompt([{"role": "user", "content": "only the user"}]) == "only the user\n"


def test_completions_api_retries_and_errors_like_chat():
    script = [Reply(status=500), Reply(status=429, headers={"Retry-After": "0"}), "Score: 2"]
    with ScriptedJudgeServer(script) as server:
        judge = Judge(config(server, api="completions", max_retries=3))
        score = grade(judge, "q", "a")
        assert server.paths == ["/v1/completions"] * 3
    assert score.success and score.score == 2.0
    assert (judge.stats.retries, judge.stats.calls) == (2, 3)
    with ScriptedJudgeServer([Reply("bad request", status=400)]) as server:
        score = grade(Judge(config(server, api="completions", max_retries=3)), "q", "a")
        assert len(server.requests) == 1
    assert not score.success and "HTTP 400" in score.error and "bad request" in score.error
    assert "TRAINWIRE_JUDGE_API" not in score.error  # the chat-template hint is for chat requests only


def _tiny_model_without_chat_template(path: Path) -> Path:
    """The tiny model with its chat template removed: a base model like seed 002's facebook/opt-1.3b."""
    from trainwire.producers.tiny import build_tiny_model

    model = build_tiny_model(path, seed=0)
    (model / "chat_template.jinja").unlink(missing_ok=True)  # where transformers 4.43+ saves it
    tokenizer_config = model / "tokenizer_config.json"
    values = orjson.loads(tokenizer_config.read_bytes())
    values.pop("chat_template", None)  # where older versions save it
    tokenizer_config.write_bytes(orjson.dumps(values))
    return model


def test_a_model_without_chat_template_is_judged_through_completions(tmp_path: Path):
    """Chat is refused with a 400 that says why (as vLLM refuses it); text completions work."""
    with TransformersChatServer(_tiny_model_without_chat_template(tmp_path / "base"), max_new_tokens=8) as server:
        assert server.tokenizer.chat_template is None
        chat = grade(Judge(config(server, max_retries=3)), "What is 2 + 2?", "4", reference="4")
        assert len(server.requests) == 1  # a 400 is not retried
        judge = Judge(config(server, api="completions", guided_choice=True))
        requests = [
            JudgeRequest(interaction_id=str(i), prompt=f"What is {i} + 2?", completion=str(i + 2), reference=str(i + 2))
            for i in range(3)
        ]
        scores = asyncio.run(judge.judge_many(requests))
        free = grade(Judge(config(server, api="completions", max_tokens=8)), "What is 2 + 2?", "4")
        assert server.paths[1:] == ["/v1/completions"] * 4
        assert all(body["prompt"].endswith("\n") for body in server.requests[1:])
    assert not chat.success and chat.score is None and chat.raw_output == ""
    assert chat.error.startswith("HTTP 400: BadRequestError") and "has no chat template" in chat.error
    assert "TRAINWIRE_JUDGE_API=completions" in chat.error
    for score in scores:
        assert score.success and score.score in {1.0, 2.0, 3.0, 4.0, 5.0}
        assert score.raw_output == f"Score: {score.score:g}"
    # without guided_choice the random model generates from the prompt text (gibberish): a failed judgement
    assert not free.success and free.raw_output and free.error.startswith("unparseable")


def test_missing_openai_names_the_extra():
    code = (
        "import sys; sys.modules['openai'] = None\n"
        "try:\n    import trainwire.judge.client\n"
        "except ImportError as exc:\n    print(type(exc).__name__, exc)\n"
        "import trainwire.judge  # the pure parts still import\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "MissingExtraError" in out and "trainwire[judge]" in out


# --------------------------------------------------------------------------- the trigger


def interaction_events(n: int, run_id: str = "grpo-1", **fields: Any) -> list[Event]:
    events = []
    for i in range(n):
        values = {"prompt": f"q{i}", "completion": f"answer {i}", "reward": i / max(n - 1, 1), "step": i // 4}
        values.update(fields)
        events.append(Event(run_id=run_id, payload=Interaction(**values)))
    return events


def test_trigger_sampling_is_deterministic():
    events = interaction_events(2000)
    picked = [e.payload.interaction_id for e in JudgeTrigger(TriggerConfig(sample_rate=0.25)).run(events)]
    again = [e.payload.interaction_id for e in JudgeTrigger(TriggerConfig(sample_rate=0.25)).run(reversed(events))]
    assert sorted(picked) == sorted(again)
    assert 400 < len(picked) < 600
    other_seed = JudgeTrigger(TriggerConfig(sample_rate=0.25, seed="b")).run(events)
    assert {e.payload.interaction_id for e in other_seed} != set(picked)
    assert all(sampled(e.event_id, 1.0) for e in events) and not any(sampled(e.event_id, 0.0) for e in events)
    assert set(picked) <= {e.payload.interaction_id for e in JudgeTrigger(TriggerConfig(sample_rate=0.5)).run(events)}


def test_trigger_filters_and_request_fields():
    events = (
        interaction_events(5, run_id="grpo-1", metadata={"answer": 42}, rewards={"acc": 1.0, "fmt": 0.5})
        + interaction_events(3, run_id="sft-1")
        + interaction_events(2, run_id="grpo-2", success=False, error="boom")
        + interaction_events(1, run_id="grpo-3", completion="   ", reward=0.5)
        + interaction_events(1, run_id="grpo-4", reward=None)
    )
    trigger = JudgeTrigger(TriggerConfig(runs=("grpo-*",), min_reward=0.25, max_reward=0.75))
    out = trigger.run(events)
    assert [e.payload.completion for e in out] == ["answer 1", "answer 2", "answer 3"]
    assert trigger.skipped == {"run": 3, "success": 2, "empty": 1, "reward": 3}
    request, source = out[0], events[1]
    assert isinstance(request.payload, JudgeRequest)
    assert request.payload.interaction_id == source.event_id and request.payload.reference == "42"
    assert (request.run_id, request.ts, request.payload.step) == ("grpo-1", source.ts, source.payload.step)
    assert (request.payload.reward, request.payload.rewards) == (source.payload.reward, {"acc": 1.0, "fmt": 0.5})
    assert request.event_id == request_event_id(source.event_id)
    failed_only = JudgeTrigger(TriggerConfig(success=False)).run(events)
    assert {e.run_id for e in failed_only} == {"grpo-2"}
    restored = JudgeTrigger()
    restored.restore(trigger.snapshot())
    assert (restored.seen, restored.requested, restored.skipped) == (12, 3, trigger.skipped)
    with pytest.raises(ConfigError):
        TriggerConfig(sample_rate=1.5)


def test_reference_keys_order():
    def reference(metadata: dict[str, Any]) -> str | None:
        [request] = JudgeTrigger().run(interaction_events(1, metadata=metadata))
        return request.payload.reference

    assert reference({"correct_answer": 2.5, "accuracy_score": 0.9, "batch_idx": 0}) == "2.5"
    assert reference({"answer": "extracted 3", "correct_answer": "2.5"}) == "2.5"
    assert reference({"reference": "r", "correct_answer": "2.5"}) == "r"
    assert reference({"correct_answer": "", "answer": "4"}) == "4"
    assert reference({"accuracy_score": 1.0}) is None


def test_imported_seed_000_log_is_judged_with_its_correct_answer(embedded_settings: Settings, tmp_path: Path):
    from trainwire.producers.importers import import_paths

    records = [
        {
            "timestamp": "2025-10-13T11:30:45.123456",
            "prompt": "Вопрос о электрической цепи: найдите ток",
            "completion": "Ответ модели: 2.5 А",
            "reward": 1.8,
            "metadata": {"correct_answer": "2.5", "accuracy_score": 0.9, "batch_idx": 0},
        },
        {
            "timestamp": "2025-10-13T11:30:46.000000",
            "prompt": "Сколько будет 2+2?",
            "completion": "5",
            "reward": 0.0,
            "metadata": {"correct_answer": "4", "accuracy_score": 0.0, "batch_idx": 0},
        },
    ]
    log = tmp_path / "llm_logs_20251013_113045.jsonl"
    log.write_text("".join(orjson.dumps(r).decode() + "\n" for r in records), encoding="utf-8")
    assert import_paths([log], embedded_settings).imported == 2

    def respond(body: dict[str, Any]) -> str:
        user = body["messages"][-1]["content"]
        if "Reference answer (treat it as correct): 2.5" in user:
            return "Score: 5\nReasoning: matches the reference"
        if "Reference answer (treat it as correct): 4" in user:
            return "Score: 1\nReasoning: the reference says 4"
        return "Score: 3\nReasoning: no reference"

    with ScriptedJudgeServer(respond) as server:
        worker = run_worker(embedded_settings, Judge(config(server)), "judge-seed-000", trigger=JudgeTrigger())
        assert worker.scores_out == 2 and len(server.requests) == 2
    events = read_events(embedded_settings, "check")
    requests = {e.payload.completion: e.payload for e in events if isinstance(e.payload, JudgeRequest)}
    assert {c: r.reference for c, r in requests.items()} == {"Ответ модели: 2.5 А": "2.5", "5": "4"}
    scores = {e.payload.reasoning: e.payload.score for e in events if isinstance(e.payload, JudgeScore)}
    assert scores == {"matches the reference": 5.0, "the reference says 4": 1.0}


# --------------------------------------------------------------------------- the worker, end to end


def _scripted_by_completion(body: dict[str, Any]) -> Reply | str:
    user = body["messages"][-1]["content"]
    if "garbage" in user:
        return "lorem ipsum, no verdict here"
    if "too good" in user:
        return "Score: 11\nReasoning: off the charts"
    return "Score: 4\nReasoning: mostly right" if "Reference" in user else "Оценка: 3\nОбоснование: без эталона"


def run_worker(settings: Settings, judge: Judge, group: str, idle_s: float = 1.5, **kwargs: Any) -> JudgeWorker:
    worker = JudgeWorker(settings, judge, group=group, **kwargs)
    asyncio.run(worker.run(idle_exit_s=idle_s))
    return worker


def store_everything(settings: Settings, group: str = "store") -> None:
    with open_store(settings) as store:
        store.migrate()
        asyncio.run(build_pipeline(settings, store, WorkerOptions(group=group, monitor=False)).run(idle_exit_s=1.0))


@pytest.mark.parametrize("bus", ["embedded", "kafka"])
def test_worker_end_to_end(bus: str, request: pytest.FixtureRequest, tmp_path: Path):
    settings: Settings = request.getfixturevalue(f"{bus}_settings")
    emitter = Emitter(settings)
    completions = ["Paris", "garbage", "Berlin", "too good", "Rome", "Madrid"]
    sent = []
    for i, completion in enumerate(completions):
        metadata = {"answer": completion} if i % 2 == 0 else {}
        prompt = [{"role": "user", "content": f"capital #{i}?"}]
        payload = Interaction(
            prompt=prompt, completion=completion, step=i // 2, metadata=metadata, reward=i / 10, rewards={"acc": i % 2}
        )
        event = Event(run_id="grpo-e2e", payload=payload)
        emitter.emit(event)
        sent.append(event)
    emitter.emit(Event(run_id="other-run", payload=Interaction(prompt="x", completion="y")))
    emitter.close()

    with ScriptedJudgeServer(_scripted_by_completion) as server:
        judge = Judge(config(server, concurrency=4), cache_dir=tmp_path / "judge")
        worker = run_worker(settings, judge, "judge", trigger=JudgeTrigger(TriggerConfig(runs=("grpo-*",))))
        assert (worker.requests_out, worker.scores_out, worker.failed_scores) == (6, 6, 2)
        assert len(server.requests) == 6
        store_everything(settings)

        # a replay from the start (a new group): same request and score ids, nothing paid twice
        replay_judge = Judge(config(server, concurrency=4), cache_dir=tmp_path / "judge")
        run_worker(settings, replay_judge, "judge-replay", trigger=JudgeTrigger(TriggerConfig(runs=("grpo-*",))))
        assert len(server.requests) == 6 and replay_judge.stats.cache_hits >= 6
        store_everything(settings, "store-2")

    with open_store(settings) as store:
        rows = store.query_rows(
            "SELECT i.event_id AS interaction_id, i.completion AS completion, s.success AS success, s.score AS score,"
            " s.score_normalized AS norm, s.reasoning AS reasoning, s.raw_output AS raw, s.error AS error,"
            " s.step AS step, s.reward AS reward, s.rewards AS rewards, s.template_version AS template"
            " FROM (SELECT * FROM interactions FINAL WHERE run_id = 'grpo-e2e') AS i"
            " INNER JOIN (SELECT * FROM judge_scores FINAL WHERE run_id = 'grpo-e2e') AS s"
            " ON s.interaction_id = i.event_id ORDER BY i.ts"
        )
        requests = store.query_rows(
            "SELECT interaction_id, reference FROM judge_requests FINAL WHERE run_id = 'grpo-e2e' ORDER BY ts"
        )
        other = store.query_rows("SELECT count() AS n FROM judge_scores FINAL WHERE run_id = 'other-run'")
    assert [r["interaction_id"] for r in rows] == [e.event_id for e in sent]  # one score per interaction, replay too
    by_completion = {r["completion"]: r for r in rows}
    assert by_completion["Paris"]["score"] == 4.0 and by_completion["Paris"]["reasoning"] == "mostly right"
    assert by_completion["Rome"]["norm"] == 0.75 and by_completion["Madrid"]["reasoning"] == "без эталона"
    for bad, reason in (("garbage", "no score found"), ("too good", "outside the scale")):
        row = by_completion[bad]
        assert not row["success"] and row["score"] is None and reason in row["error"] and row["raw"]
    assert [r["step"] for r in rows] == [0, 0, 1, 1, 2, 2]
    # each score carries its interaction's rewards, so judge and reward compare without a join
    assert [(r["reward"], dict(r["rewards"])) for r in rows] == [(i / 10, {"acc": i % 2}) for i in range(6)]
    assert {r["template"] for r in rows} == {judge.template_version}
    assert [r["reference"] for r in requests] == ["Paris", None, "Berlin", None, "Rome", None]
    assert other == [{"n": 0}]
    score_ids = {score_event_id(request_event_id(e.event_id), judge.provenance["config_id"]) for e in sent}
    assert len(score_ids) == 6


class FailsOnOneInteraction(JudgeTrigger):
    """A trigger that raises on the interaction whose completion is "trigger fails"."""

    def process(self, event: Event) -> list[Event]:
        if isinstance(event.payload, Interaction) and event.payload.completion == "trigger fails":
            raise ValueError("cannot take this interaction")
        return super().process(event)


class FailsOnOneRequest(Judge):
    """A judge that raises on the request whose completion is "judge fails"."""

    async def judge(self, request: JudgeRequest) -> JudgeScore:
        if request.completion == "judge fails":
            raise ValueError("cannot judge this request")
        return await super().judge(request)


def read_topic(settings: Settings, topic: str) -> list[Record]:
    """Every record on ``topic`` (as a fresh consumer group)."""

    async def main() -> list[Record]:
        consumer = open_consumer(settings, [topic], f"reader-of-{topic}")
        await consumer.start()
        try:
            return await consumer.getmany(timeout_ms=1000)
        finally:
            await consumer.stop()

    return asyncio.run(main())


def test_worker_dead_letters_a_record_it_cannot_decode_trigger_or_judge_and_goes_on(embedded_settings: Settings):
    # Stand-ins for the trigger's and the judge's failures: no real input makes either raise (the
    # judge turns every failure of a call into a failed score; the trigger copies fields that
    # decode validated), so each fails on one record here, as code with a bug would. The record
    # that does not decode is real.
    settings = embedded_settings
    completions = ["Paris", "trigger fails", "Berlin", "judge fails", "Rome"]
    events = [Event(run_id="grpo-poison", payload=Interaction(prompt="capital?", completion=c)) for c in completions]

    async def produce() -> None:
        transport = LocalTransport(settings.data_dir)
        await transport.start()
        values = [encode(e) for e in events]
        values.insert(2, b"not an event")
        topic = event_topic(settings.topic_prefix, "interaction")
        await transport.send_batch([Message(topic, b"grpo-poison", value) for value in values])
        await transport.stop()

    asyncio.run(produce())
    with ScriptedJudgeServer(default="Score: 4\nReasoning: fine") as server:
        judge = FailsOnOneRequest(config(server))
        worker = run_worker(settings, judge, "judge", trigger=FailsOnOneInteraction())
        assert (worker.requests_out, worker.scores_out, worker.dead_letters.count) == (4, 3, 3)
        # committed past the dead letters: the same group reads nothing again
        again = run_worker(settings, judge, "judge", idle_s=0.5, trigger=FailsOnOneInteraction())
        assert again.records_in == 0
    dead_letters = read_topic(settings, topic_name(settings.topic_prefix, DEAD_LETTER))
    letters = {letter.value: letter.header("reason").decode() for letter in dead_letters}
    assert letters.pop(encode(events[1])) == "not processed: trigger: ValueError: cannot take this interaction"
    assert letters.pop(b"not an event").startswith("invalid event: ")
    ((request, reason),) = letters.items()
    assert decode(request).payload.completion == "judge fails"
    assert reason == "not processed: judge: ValueError: cannot judge this request"
    scores = [decode(r.value).payload for r in read_topic(settings, event_topic(settings.topic_prefix, "judge_score"))]
    assert sorted(s.interaction_id for s in scores) == sorted(events[i].event_id for i in (0, 2, 4))


def test_judge_run_command(embedded_settings: Settings):
    settings = embedded_settings
    emitter = Emitter(settings)
    for event in interaction_events(4, run_id="cli-run"):
        emitter.emit(event)
    emitter.close()
    with ScriptedJudgeServer(default="Score: 5\nReasoning: fine") as server:
        result = CliRunner().invoke(
            judge_command,
            ["run", "--url", server.base_url, "--model", server.model, "--until-idle", "1.5", "--sample-rate", "1"],
            obj=settings,
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        assert len(server.requests) == 4
    assert "4 requests, 4 scores (0 failed)" in result.output
    scores = [e for e in read_events(settings) if isinstance(e.payload, JudgeScore)]
    assert len(scores) == 4 and all(e.payload.score == 5.0 for e in scores)


@pytest.mark.parametrize("command", ["run", "eval"])
def test_judge_commands_take_the_api_option(command: str):
    result = CliRunner().invoke(judge_command, [command, "--help"])
    assert result.exit_code == 0 and "--api [chat|completions]" in result.output
    result = CliRunner().invoke(judge_command, [command, "--api", "text"])
    assert result.exit_code == 2 and "'text' is not one of 'chat', 'completions'" in result.output


def test_judge_run_command_with_the_completions_api(embedded_settings: Settings):
    emitter = Emitter(embedded_settings)
    for event in interaction_events(2, run_id="cli-completions"):
        emitter.emit(event)
    emitter.close()
    with ScriptedJudgeServer(default="Score: 4\nReasoning: fine") as server:
        args = ["run", "--url", server.base_url, "--model", server.model, "--api", "completions", "--guided-choice"]
        result = CliRunner().invoke(
            judge_command, [*args, "--until-idle", "1.5"], obj=embedded_settings, catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        assert server.paths == ["/v1/completions"] * 2 and all("prompt" in body for body in server.requests)
        assert all(body["guided_choice"] == [f"Score: {n}" for n in range(1, 6)] for body in server.requests)
    assert "2 requests, 2 scores (0 failed)" in result.output


# --------------------------------------------------------------------------- the reward function


def test_judge_reward_with_trl_shaped_arguments(embedded_settings: Settings, tmp_path: Path):
    def respond(body: dict[str, Any]) -> str:
        user = body["messages"][-1]["content"]
        if user.endswith("broken"):
            return "not a verdict"
        return "Score: 5\nReasoning: ok" if user.endswith("Answer to grade: 4") else "Score: 1"

    emitter = Emitter(embedded_settings)
    with ScriptedJudgeServer(respond) as server:
        reward = judge_reward_function(
            config(server), cache_dir=tmp_path, emitter=emitter, run_id="grpo-reward", fallback=0.0
        )
        assert reward.__name__ == "judge_reward" and asyncio.iscoroutinefunction(reward)
        state = TrainerState(global_step=7)
        plain = asyncio.run(
            reward(
                prompts=["2+2=", "2+2=", "2+2="],
                completions=["4", "5", "broken"],
                completion_ids=[[1], [2], [3]],
                answer=["4", "4", "4"],
                trainer_state=state,
                log_metric=lambda name, value: None,
            )
        )
        assert plain == [1.0, 0.0, 0.0]
        conversational = asyncio.run(
            reward(
                prompts=[[{"role": "user", "content": "2+2?"}]] * 2,
                completions=[[{"role": "assistant", "content": "4"}], [{"role": "assistant", "content": "3"}]],
                trainer_state=state,
            )
        )
        assert conversational == [1.0, 0.0]
        assert "Reference answer (treat it as correct): 4" in server.requests[0]["messages"][-1]["content"]
        calls = len(server.requests)
        asyncio.run(reward(prompts=["2+2="], completions=["4"], answer=["4"], trainer_state=state))
        assert len(server.requests) == calls  # cached
    emitter.close()
    alerts = [e for e in read_events(embedded_settings) if isinstance(e.payload, Alert)]
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert.run_id, alert.payload.rule, alert.payload.step) == ("grpo-reward", JUDGE_FAILED_RULE, 7)
    assert alert.payload.evidence["errors"] == {"unparseable": 1} and alert.payload.evidence["raw_output"]


def test_judge_reward_reads_a_correct_answer_column():
    def respond(body: dict[str, Any]) -> str:
        user = body["messages"][-1]["content"]
        if "Reference answer (treat it as correct): 2.5" not in user:
            return "Score: 3"  # judged without the reference
        return "Score: 5" if user.endswith("Answer to grade: 2.5 A") else "Score: 1"

    with ScriptedJudgeServer(respond) as server:
        reward = judge_reward_function(config(server), emitter=_NullEmitter())
        rewards = asyncio.run(
            reward(prompts=["I = ?", "I = ?"], completions=["2.5 A", "3 A"], correct_answer=["2.5", "2.5"])
        )
        assert rewards == [1.0, 0.0]
        assert all(
            "Reference answer (treat it as correct): 2.5" in r["messages"][-1]["content"] for r in server.requests
        )


def test_judge_reward_on_trl_style_loop_thread_and_fallback_none():
    with ScriptedJudgeServer(default=Reply(status=500)) as server:
        reward = judge_reward_function(config(server, max_retries=0), fallback=None, emitter=_NullEmitter(), name="jr")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:  # how GRPOTrainer runs async reward functions: on its own loop thread
            coro = reward(prompts=["p", "q"], completions=["a", "b"], trainer_state=None)
            result = asyncio.run_coroutine_threadsafe(coro, loop).result(30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
    assert result == [None, None] and reward.__name__ == "jr"


class _NullEmitter(Emitter):
    """An emitter that keeps events in a list (the reward's alerts), without a bus."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


def test_scripted_server_reports_models():
    import urllib.request

    with ScriptedJudgeServer(model="m1") as server, urllib.request.urlopen(server.base_url + "/models") as response:
        assert orjson.loads(response.read())["data"][0]["id"] == "m1"


def test_scripted_server_answers_both_apis_in_their_shapes():
    import urllib.error
    import urllib.request

    def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            return orjson.loads(response.read())

    with ScriptedJudgeServer(lambda body: body.get("prompt", "chat")) as server:
        text = post(server.base_url + "/completions", {"model": server.model, "prompt": "Score: 1"})
        chat = post(server.base_url + "/chat/completions", {"model": server.model, "messages": []})
        with pytest.raises(urllib.error.HTTPError, match="404"):
            post(server.base_url + "/embeddings", {"input": "x"})
        assert server.paths == ["/v1/completions", "/v1/chat/completions"]
    assert text["object"] == "text_completion" and text["id"].startswith("cmpl-")
    assert text["choices"] == [{"index": 0, "text": "Score: 1", "finish_reason": "stop", "logprobs": None}]
    assert set(text["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["content"] == "chat"
