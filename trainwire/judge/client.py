"""The judge: grade completions with an LLM behind any OpenAI-compatible API (vLLM by default).

::

    judge = Judge(JudgeConfig.from_env(), cache_dir=settings.data_dir / "judge")
    score = await judge.grade("What is 2+2?", "4", reference="4")     # a JudgeScore payload
    scores = await judge.judge_many(requests)                         # JudgeRequest payloads, concurrently

What it does around each call:

- at most ``concurrency`` calls in flight (a semaphore per event loop);
- each attempt bounded by ``timeout_s``;
- retries with exponential backoff and full jitter on 429 (honouring ``Retry-After``), 5xx,
  connection errors and timeouts, up to ``max_retries``; a 4xx other than 429 is not retried, nor
  a refused connection (nothing listens at the URL: retrying only delays saying so);
- a cache keyed by (prompt, completion, reference, judge model, template version, scale,
  sampling settings, API) in SQLite under the data directory, so a replay does not pay twice. Only
  answers the judge actually gave are cached (a failed parse included: the same question gets
  the same answer); transport failures are not.

In ``mode="group"`` (:meth:`Judge.grade_group`) one request carries every completion of a GRPO
group under the ids ``1``..``n`` and the judge scores each relative to the others; an answer that
does not score each exactly once fails the whole group. Every score carries the judge's
provenance (:attr:`Judge.provenance`: template name and hash, mode, parser version, sampling,
``config_id``).

The judge speaks one of two OpenAI APIs (``JudgeConfig.api``): ``chat`` (``POST
/chat/completions`` with the rendered messages, the default) or ``completions`` (``POST
/completions`` with the messages as one text, see :func:`completion_prompt`), for a base model
that has no chat template, which vLLM refuses to serve through the chat API.

Nothing raises: a call that fails after its retries, or an answer that cannot be parsed, is a
``JudgeScore`` with ``success=False``, the ``error`` and whatever raw text came back. The error
starts with the kind of failure (``connection refused``, ``connection failed``, ``HTTP 500``,
``timeout``, ``unparseable``, ...) and a colon; :func:`failure_kind` reads it back and
:func:`describe_failures` says the counts in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import orjson

from trainwire.config import Secret
from trainwire.errors import ConfigError, MissingExtraError
from trainwire.private_files import open_private

try:
    import openai
    from openai.types import Completion
    from openai.types.chat import ChatCompletion
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtraError("judge", "trainwire.judge.client") from exc

from trainwire.events import JudgeRequest, JudgeScore, Prompt
from trainwire.judge.parser import PARSER_VERSION, Judgement, ScoreScale, parse_group_judgement, parse_judgement
from trainwire.judge.prompts import JudgePrompt, load_template

__all__ = [
    "APIS",
    "BlockingJudge",
    "Judge",
    "JudgeCache",
    "JudgeConfig",
    "JudgeStats",
    "completion_prompt",
    "describe_failures",
    "failure_kind",
]

T = TypeVar("T")

DEFAULT_URL = "http://localhost:8000/v1"
DEFAULT_MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
APIS = ("chat", "completions")
"""The OpenAI APIs the judge can call: chat completions, or text completions (a model without a chat template)."""
MODES = ("single", "group")
"""How the judge grades: one request per completion, or one request per GRPO group (all its completions)."""
_ENV = {
    "base_url": "TRAINWIRE_JUDGE_URL",
    "model": "TRAINWIRE_JUDGE_MODEL",
    "api_key": "TRAINWIRE_JUDGE_API_KEY",
    "template": "TRAINWIRE_JUDGE_TEMPLATE",
    "examples": "TRAINWIRE_JUDGE_EXAMPLES",
    "api": "TRAINWIRE_JUDGE_API",
}


@dataclass(frozen=True)
class JudgeConfig:
    """Which judge to ask and how; build with :meth:`from_env`. The API key never shows in ``repr``.

    ==================  ===========================  ===============================================
    field               environment variable         meaning
    ==================  ===========================  ===============================================
    ``base_url``        ``TRAINWIRE_JUDGE_URL``      OpenAI-compatible API (default vLLM on :8000)
    ``model``           ``TRAINWIRE_JUDGE_MODEL``    the served model name
    ``api_key``         ``TRAINWIRE_JUDGE_API_KEY``  kept as :class:`~trainwire.config.Secret`
    ``template``        ``TRAINWIRE_JUDGE_TEMPLATE`` ``default``, ``ru`` or a template file
    ``examples``        ``TRAINWIRE_JUDGE_EXAMPLES`` few-shot examples, a JSONL file
    ``api``             ``TRAINWIRE_JUDGE_API``      ``chat`` (default) or ``completions`` (a base
                                                     model without a chat template)
    ==================  ===========================  ===============================================
    """

    base_url: str = DEFAULT_URL
    model: str = DEFAULT_MODEL
    api_key: Secret = field(default=Secret("EMPTY"))
    template: str = "default"
    examples: str | None = None
    scale_low: float = 1.0
    scale_high: float = 5.0
    temperature: float = 0.0
    max_tokens: int = 512
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: tuple[float, float] = (0.5, 8.0)
    concurrency: int = 8
    structured: bool = False
    """Ask for a JSON answer through ``response_format`` (a JSON schema; vLLM enforces it)."""
    guided_choice: bool = False
    """Constrain the answer to one of ``Score: N`` for each whole N on the scale (vLLM's
    ``guided_choice``): the server picks the choice its model finds likeliest; no reasoning."""
    cache: bool = True
    mode: str = "single"
    """``single``: one request per completion; ``group``: one request per GRPO group with all its
    completions, each scored relative to the others (the built-in ``group`` template unless
    ``template`` names another group template, i.e. one with ``$answers``)."""
    api: str = "chat"
    """``chat``: ``POST /chat/completions`` with the rendered messages; ``completions``: ``POST
    /completions`` with them as one text (:func:`completion_prompt`), for a model without a chat
    template (a base model such as ``facebook/opt-1.3b``). The other options are sent the same way."""

    def __post_init__(self) -> None:
        if isinstance(self.api_key, str):  # accept a plain string, keep it hidden
            object.__setattr__(self, "api_key", Secret(self.api_key))
        ScoreScale(self.scale_low, self.scale_high)
        if self.concurrency < 1:
            raise ConfigError("judge.concurrency", f"must be >= 1, got {self.concurrency}")
        if self.max_retries < 0:
            raise ConfigError("judge.max_retries", f"must be >= 0, got {self.max_retries}")
        if not self.timeout_s > 0:
            raise ConfigError("judge.timeout_s", f"must be > 0, got {self.timeout_s}")
        if not 0 <= self.backoff_s[0] <= self.backoff_s[1]:
            raise ConfigError("judge.backoff_s", f"needs 0 <= first <= largest, got {self.backoff_s}")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError("judge.base_url", f"{self.base_url!r} is not an http(s) URL")
        if self.api not in APIS:
            raise ConfigError("judge.api", f"must be one of {', '.join(APIS)}, got {self.api!r}")
        if self.mode not in MODES:
            raise ConfigError("judge.mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == "group" and self.guided_choice:
            raise ConfigError("judge.guided_choice", "picks one 'Score: N' for one answer; it cannot grade a group")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> JudgeConfig:
        """A config from ``TRAINWIRE_JUDGE_*`` variables, with ``overrides`` (not None) taking precedence."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, var in _ENV.items():
            raw = env.get(var)
            if raw not in (None, ""):
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(", ".join(sorted(unknown)), "unknown judge setting")
        return cls(**values)

    @property
    def scale(self) -> ScoreScale:
        """The score range as a :class:`ScoreScale`."""
        return ScoreScale(self.scale_low, self.scale_high)


@dataclass
class JudgeStats:
    """What a :class:`Judge` has done so far."""

    judged: int = 0
    """Judgements returned (cached ones included)."""
    succeeded: int = 0
    """Of those, with a score."""
    calls: int = 0
    """HTTP attempts made (retries included)."""
    retries: int = 0
    cache_hits: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    """Failed judgements by kind (``connection refused``, ``HTTP 500``, ``timeout``, ``unparseable``, ...)."""


class JudgeCache:
    """Judge answers by key in an SQLite file; safe to share between threads and processes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        open_private(self.path, "ab").close()  # 0600 before SQLite opens it: its -wal and -shm files take its mode
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, raw_output TEXT NOT NULL, "
            "latency_ms REAL, created_at REAL NOT NULL)"
        )

    def get(self, key: str) -> tuple[str, float | None] | None:
        """The cached ``(raw_output, latency_ms)`` for ``key``, or None."""
        with self._lock:
            row = self._db.execute("SELECT raw_output, latency_ms FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else (row[0], row[1])

    def put(self, key: str, raw_output: str, latency_ms: float | None) -> None:
        """Remember the judge's answer for ``key``."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)", (key, raw_output, latency_ms, time.time())
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count() FROM answers").fetchone()[0]

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()


@dataclass
class _LoopState:
    client: openai.AsyncOpenAI
    semaphore: asyncio.Semaphore


class _CallFailed(Exception):
    """A judgement's call failed; the message is ``"{kind}: {detail}"`` (see :func:`failure_kind`)."""

    def __init__(self, kind: str, detail: str, *, retriable: bool = True):
        self.kind = kind
        self.detail = detail
        self.retriable = retriable
        super().__init__(f"{kind}: {detail}")


def failure_kind(error: str) -> str:
    """The kind of a failed judgement from its ``error`` (the text before the first colon)."""
    return error.partition(":")[0].strip() or "unknown"


def describe_failures(kinds: Mapping[str, int]) -> str:
    """Failed judgements by kind in one line, most frequent first: ``connection refused: 5, HTTP 500: 1``."""
    return ", ".join(f"{kind}: {count}" for kind, count in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))


class Judge:
    """Grades completions with an LLM; see the module docstring.

    Args:
        config: the judge (default :meth:`JudgeConfig.from_env`).
        cache_dir: where the cache lives (``{cache_dir}/cache.sqlite``); None with ``config.cache``
            off or no directory means no cache.
        prompt: a ready template instead of ``config.template`` / ``config.examples``.

    The OpenAI client and the semaphore are made per event loop, so one judge may be used from
    ``asyncio.run`` calls in turn, from TRL's reward loop thread and from a :class:`BlockingJudge`.
    """

    def __init__(
        self,
        config: JudgeConfig | None = None,
        *,
        cache_dir: str | Path | None = None,
        prompt: JudgePrompt | None = None,
    ):
        self.config = config or JudgeConfig.from_env()
        group = self.config.mode == "group"
        template = "group" if group and self.config.template == "default" else self.config.template
        self.prompt = prompt or load_template(template, self.config.examples)
        if self.prompt.group != group:
            needs = "a group template (with $answers), such as 'group'" if group else "$answer, not $answers"
            raise ConfigError(
                "judge.template",
                f"template {self.prompt.name!r} does not fit mode {self.config.mode!r}: it needs {needs}",
            )
        self.scale = self.config.scale
        self.provenance = _provenance(self.config, self.prompt)
        """What makes this judge's verdicts, recorded with each score (see :class:`~trainwire.events.JudgeScore`)."""
        self.cache = JudgeCache(Path(cache_dir) / "cache.sqlite") if (cache_dir and self.config.cache) else None
        self.stats = JudgeStats()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()
        self._loops_lock = threading.Lock()

    @property
    def template_version(self) -> str:
        """The version of the prompt template (recorded with every score)."""
        return self.prompt.version

    def __repr__(self) -> str:
        return (
            f"Judge(model={self.config.model!r}, base_url={self.config.base_url!r}, template={self.template_version!r})"
        )

    # ------------------------------------------------------------------ public

    async def judge(self, request: JudgeRequest) -> JudgeScore:
        """Grade one ``judge_request`` payload; the score carries the request's step and rewards."""
        score = await self.grade(
            request.prompt,
            request.completion,
            request.reference,
            interaction_id=request.interaction_id,
            step=request.step,
        )
        score.reward, score.rewards = request.reward, dict(request.rewards)
        return score

    async def judge_many(self, requests: Iterable[JudgeRequest]) -> list[JudgeScore]:
        """Grade ``requests`` concurrently (at most ``concurrency`` calls at a time), in order."""
        return list(await asyncio.gather(*(self.judge(r) for r in requests)))

    async def grade(
        self,
        prompt: Prompt,
        completion: str,
        reference: str | None = None,
        *,
        interaction_id: str = "",
        step: int | None = None,
    ) -> JudgeScore:
        """Grade ``completion`` as an answer to ``prompt``; never raises (a failure is ``success=False``)."""
        try:
            return await self._grade(prompt, completion, reference, interaction_id, step)
        except Exception as exc:  # the judge must never crash its caller
            return self._result(
                interaction_id, step, "", None, error=(type(exc).__name__, f"{type(exc).__name__}: {exc}")
            )

    async def judge_group(self, requests: Sequence[JudgeRequest]) -> list[JudgeScore]:
        """Grade the requests of one GRPO group in one call (:meth:`grade_group`); scores carry each request's
        step and rewards. The question and reference are the first request's."""
        if not requests:
            return []
        first = requests[0]
        scores = await self.grade_group(
            first.prompt, [(r.interaction_id, r.completion) for r in requests], first.reference, step=first.step
        )
        for score, request in zip(scores, requests, strict=True):
            score.step, score.reward, score.rewards = request.step, request.reward, dict(request.rewards)
        return scores

    async def grade_group(
        self,
        prompt: Prompt,
        completions: Sequence[tuple[str, str]],
        reference: str | None = None,
        *,
        step: int | None = None,
    ) -> list[JudgeScore]:
        """Grade every ``(interaction_id, completion)`` of one group in one request; one score each, in order.

        The judge sees the completions under the ids ``1``..``n`` and answers one score per id
        (:func:`~trainwire.judge.parser.parse_group_judgement`, matched by id, not position). A failed
        call, or an answer that does not score every completion exactly once within the scale, fails
        every completion of the group with the same error: never a partial group. Never raises.
        """
        if not completions:
            return []
        ids = [str(number) for number in range(1, len(completions) + 1)]
        try:
            texts = [completion for _, completion in completions]
            key = self.group_cache_key(prompt, texts, reference) if self.cache is not None else None
            messages = self.prompt.render_group(
                prompt,
                list(zip(ids, texts, strict=True)),
                reference,
                low=self.scale.low,
                high=self.scale.high,
                structured=self.config.structured,
            )
            raw, latency, error = await self._answer(key, messages)
        except Exception as exc:  # the judge must never crash its caller
            raw, latency, error = "", None, (type(exc).__name__, f"{type(exc).__name__}: {exc}")
        if error is None:
            parsed = parse_group_judgement(raw, ids, self.scale)
            if parsed.ok:
                return [
                    self._result(interaction_id, step, raw, latency, judgement=parsed.judgements[number])
                    for number, (interaction_id, _) in zip(ids, completions, strict=True)
                ]
            error = ("unparseable", f"unparseable: group of {len(ids)}: {parsed.error}")
        return [self._result(interaction_id, step, raw, latency, error=error) for interaction_id, _ in completions]

    def group_cache_key(self, prompt: Prompt, completions: Sequence[str], reference: str | None) -> str:
        """The cache key of one group judgement: the question, the completions in order, the reference, the judge."""
        return hashlib.sha256(
            orjson.dumps(["group", prompt, list(completions), reference, *self._judge_material()])
        ).hexdigest()

    async def check_listening(self) -> None:
        """Raise :class:`ConfigError` naming the URL when no server can be reached at ``base_url``.

        One ``GET /models``: any answer (an HTTP error included) or a timeout means something is
        there; a refused or failed connection is said at once, before any judgement is tried.
        """
        url = self.config.base_url
        try:
            await self._state().client.get("/models", cast_to=object)
        except openai.APITimeoutError:
            return
        except openai.APIConnectionError as exc:
            what = "connection refused: nothing listens at" if _refused(exc) else f"connection failed ({exc}):"
            raise ConfigError(
                "judge URL", f"{what} {url} (start the judge server, or pass --url / TRAINWIRE_JUDGE_URL)"
            ) from exc
        except openai.APIError:
            return

    def cache_key(self, prompt: Prompt, completion: str, reference: str | None) -> str:
        """The cache key of one judgement: the inputs and everything about the judge that shapes its answer."""
        return hashlib.sha256(orjson.dumps([prompt, completion, reference, *self._judge_material()])).hexdigest()

    def _judge_material(self) -> list[Any]:
        """Everything about the judge that shapes its answer, as cache keys hash it."""
        c = self.config
        material = [
            c.model,
            self.template_version,
            c.scale_low,
            c.scale_high,
            c.temperature,
            c.max_tokens,
            c.structured,
            c.guided_choice,
        ]
        if c.api != "chat":  # chat keys stay as they were before the API was a setting: old caches still hit
            material.append(c.api)
        return material

    async def aclose(self) -> None:
        """Close this loop's HTTP client (other loops' clients close with their loops) and the cache."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.client.close()
        self.close_cache()

    def close_cache(self) -> None:
        """Close the cache file (the judge keeps working, without a cache)."""
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    async def __aenter__(self) -> Judge:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ internals

    async def _grade(
        self, prompt: Prompt, completion: str, reference: str | None, interaction_id: str, step: int | None
    ) -> JudgeScore:
        key = self.cache_key(prompt, completion, reference) if self.cache is not None else None
        messages = self.prompt.render(
            prompt,
            completion,
            reference,
            low=self.scale.low,
            high=self.scale.high,
            structured=self.config.structured,
        )
        raw, latency, error = await self._answer(key, messages)
        return self._result(interaction_id, step, raw, latency, error=error)

    async def _answer(
        self, key: str | None, messages: list[dict[str, str]]
    ) -> tuple[str, float | None, tuple[str, str] | None]:
        """``(raw answer, latency_ms, failure)`` for ``messages``: cached under ``key``, else one call
        (cached when the judge answered); the failure is ``(kind, message)`` when the call failed."""
        if key is not None and self.cache is not None:
            hit = await asyncio.to_thread(self.cache.get, key)
            if hit is not None:
                self.stats.cache_hits += 1
                return hit[0], hit[1], None
        started = time.perf_counter()
        try:
            raw = await self._call(messages)
        except _CallFailed as exc:
            return "", (time.perf_counter() - started) * 1000, (exc.kind, str(exc))
        latency = (time.perf_counter() - started) * 1000
        if key is not None and self.cache is not None:
            with contextlib.suppress(sqlite3.Error):
                await asyncio.to_thread(self.cache.put, key, raw, latency)
        return raw, latency, None

    def _result(
        self,
        interaction_id: str,
        step: int | None,
        raw: str,
        latency_ms: float | None,
        error: tuple[str, str] | None = None,
        judgement: Judgement | None = None,
    ) -> JudgeScore:
        """The score of one judgement: ``judgement`` (already parsed), else ``raw`` parsed, else the ``error``."""
        self.stats.judged += 1
        base = {
            "interaction_id": interaction_id,
            "judge_model": self.config.model,
            "template_version": self.template_version,
            "raw_output": raw,
            "latency_ms": latency_ms,
            "step": step,
            **self.provenance,
            "sampling": dict(self.provenance["sampling"]),
        }
        if error is None:
            parsed = judgement or parse_judgement(raw, self.scale)
            if parsed.ok:
                self.stats.succeeded += 1
                return JudgeScore(
                    **base,
                    success=True,
                    score=parsed.score,
                    score_normalized=parsed.score_normalized,
                    reasoning=parsed.reasoning,
                )
            error = ("unparseable", f"unparseable: {parsed.error}")
            reasoning = parsed.reasoning
        else:
            reasoning = None
        kind, message = error
        self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1
        return JudgeScore(**base, success=False, reasoning=reasoning, error=message)

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._loops_lock:
            state = self._loops.get(loop)
            if state is None:
                c = self.config
                client = openai.AsyncOpenAI(
                    base_url=c.base_url, api_key=c.api_key.value, max_retries=0, timeout=c.timeout_s
                )
                state = self._loops[loop] = _LoopState(client, asyncio.Semaphore(c.concurrency))
        return state

    def _request_options(self) -> dict[str, Any]:
        c = self.config
        options: dict[str, Any] = {"model": c.model, "temperature": c.temperature, "max_tokens": c.max_tokens}
        if c.structured:
            verdict: dict[str, Any] = {
                "type": "object",
                "properties": {
                    "score": {"type": "integer", "minimum": c.scale_low, "maximum": c.scale_high},
                    "reasoning": {"type": "string"},
                },
                "required": ["score", "reasoning"],
            }
            if c.mode == "group":  # {"scores": [{"id", "score", "reasoning"}, ...]}
                verdict["properties"]["id"] = {"type": "string"}
                verdict["required"] = ["id", "score", "reasoning"]
                verdict = {"type": "object", "properties": {"scores": {"type": "array", "items": verdict}}}
                verdict["required"] = ["scores"]
            options["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "judgement", "schema": verdict},
            }
        if c.guided_choice:
            options["guided_choice"] = [f"Score: {n}" for n in range(int(c.scale_low), int(c.scale_high) + 1)]
        return options

    def _request(
        self, messages: list[dict[str, str]]
    ) -> tuple[str, dict[str, Any], type[ChatCompletion] | type[Completion]]:
        """The path, body and response type of one judgement's request in the configured API."""
        options = self._request_options()
        if self.config.api == "completions":
            return "/completions", {"prompt": completion_prompt(messages), **options}, Completion
        return "/chat/completions", {"messages": messages, **options}, ChatCompletion

    async def _call(self, messages: list[dict[str, str]]) -> str:
        """One judgement's HTTP exchange with retries; the answer text, or :class:`_CallFailed`."""
        c = self.config
        state = self._state()
        path, body, cast_to = self._request(messages)
        attempt = 0
        while True:
            retry_after: float | None = None
            async with state.semaphore:
                self.stats.calls += 1
                try:
                    async with asyncio.timeout(c.timeout_s):
                        # the client's low-level post: the same auth, errors and parsing as
                        # chat.completions.create without its per-call TypedDict transform of the
                        # messages (~2 ms of CPU per call, a quarter of the budget at 32 in flight)
                        response = await state.client.post(path, body=body, cast_to=cast_to)
                    if not response.choices:
                        raise _CallFailed("no choices", "the judge returned no choices")
                    return _answer_text(response)
                except (TimeoutError, openai.APITimeoutError):
                    failure = _CallFailed("timeout", f"no answer within {c.timeout_s:g}s")
                except openai.APIStatusError as exc:
                    failure = _CallFailed(
                        f"HTTP {exc.status_code}",
                        f"{type(exc).__name__}: {_brief(exc)}{self._hint(exc)}",
                        retriable=exc.status_code == 429 or exc.status_code >= 500,
                    )
                    if exc.status_code == 429:
                        retry_after = _retry_after(exc.response.headers)
                except openai.APIConnectionError as exc:
                    if _refused(exc):
                        failure = _CallFailed("connection refused", f"nothing listens at {c.base_url}", retriable=False)
                    else:
                        failure = _CallFailed("connection failed", f"{c.base_url}: {exc}")
            if not failure.retriable:
                raise failure
            if attempt >= c.max_retries:
                if attempt:
                    raise _CallFailed(failure.kind, f"{failure.detail} (after {attempt} retries)")
                raise failure
            attempt += 1
            self.stats.retries += 1
            ceiling = min(c.backoff_s[1], c.backoff_s[0] * 2 ** (attempt - 1))
            delay = random.uniform(0, ceiling)
            if retry_after is not None:
                delay = max(delay, min(retry_after, c.backoff_s[1]))
            await asyncio.sleep(delay)

    def _hint(self, exc: openai.APIStatusError) -> str:
        """What to do about a chat request refused because the model has no chat template, else nothing."""
        if self.config.api == "chat" and exc.status_code == 400 and "chat template" in str(exc.message).lower():
            return " (for a model without a chat template use --api completions / TRAINWIRE_JUDGE_API=completions)"
        return ""


def _provenance(config: JudgeConfig, prompt: JudgePrompt) -> dict[str, Any]:
    """The provenance fields of a judge's scores (:class:`~trainwire.events.JudgeScore`); ``config_id`` digests them."""
    sampling = {
        "temperature": config.temperature,
        "max_tokens": config.max_tokens,
        "api": config.api,
        "structured": config.structured,
        "guided_choice": config.guided_choice,
        "scale_low": config.scale_low,
        "scale_high": config.scale_high,
    }
    fields_ = {
        "template_name": prompt.name,
        "template_hash": prompt.text_hash,
        "mode": config.mode,
        "parser_version": PARSER_VERSION,
        "sampling": sampling,
    }
    digest = hashlib.sha256(orjson.dumps([config.model, fields_], option=orjson.OPT_SORT_KEYS)).hexdigest()
    return {**fields_, "config_id": digest[:16]}


def completion_prompt(messages: list[dict[str, str]]) -> str:
    """The ``prompt`` text of a judgement in the ``completions`` API: the rendered chat messages as one text.

    The messages' contents in order (the system message, if any, then the user message), each pair
    separated by a blank line, and a final newline, with no roles or chat markup: what a base model
    without a chat template reads and continues. ``[system: S, user: U]`` becomes ``"S\\n\\nU\\n"``.
    """
    return "\n\n".join(m["content"] for m in messages) + "\n"


def _answer_text(response: ChatCompletion | Completion) -> str:
    """The text of the first choice of a chat or a text completion."""
    if isinstance(response, Completion):
        return response.choices[0].text
    return response.choices[0].message.content or ""


def _refused(exc: BaseException) -> bool:
    """Whether a connection error was a refused connection (nothing listening), anywhere in its chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _brief(exc: openai.APIStatusError) -> str:
    text = exc.message if isinstance(exc.message, str) else str(exc)
    return text[:200]


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class BlockingJudge:
    """A :class:`Judge` for synchronous callers (an MLflow scorer): one event loop in a daemon thread.

    ``grade`` may be called from several threads at once; calls run concurrently on the loop,
    within the judge's concurrency limit. ``close`` stops the loop (idempotent).
    """

    def __init__(self, judge: Judge):
        self.judge = judge
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="trainwire-judge", daemon=True)
        self._thread.start()
        self._closed = False

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the judge's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def grade(self, prompt: Prompt, completion: str, reference: str | None = None, **kwargs: Any) -> JudgeScore:
        """:meth:`Judge.grade`, waiting for the answer."""
        return self.run(self.judge.grade(prompt, completion, reference, **kwargs))

    def close(self) -> None:
        """Close the judge's client on its loop, then stop the loop."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self.run(self.judge.aclose(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> BlockingJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
