"""Record every call an OpenAI client makes as an ``interaction`` event.

::

    from openai import OpenAI
    from trainwire.producers.openai import instrument

    client = instrument(OpenAI(base_url="http://localhost:8000/v1"), tags={"job": "eval"})
    client.chat.completions.create(model="qwen", messages=[...])   # unchanged behaviour, plus an event

:func:`instrument` works on ``openai.OpenAI`` and ``openai.AsyncOpenAI`` (and their subclasses)
in place and returns the same client, so type checks and the rest of its API are untouched. It
covers ``chat.completions.create`` and ``completions.create``, streamed or not, and carries over
to clients made with ``with_options``/``copy``. (``with_raw_response`` and
``with_streaming_response`` calls are not recorded.)

Each call gives one event per returned choice (one for the usual ``n=1``; with ``n>1`` the
choices share a ``group_id``, the response id, and carry their ``group_index``), holding:

- ``prompt``: the chat messages, or the completion prompt;
- ``completion``: the text (for a stream, the deltas joined, recorded when the stream ends,
  fails, or is closed early: then ``metadata.stream_closed_early`` is true);
- ``model``, ``latency_ms`` (to the end of the stream), ``prompt_tokens``, ``completion_tokens``;
- ``success``, and ``error`` (``"BadRequestError: ..."``) with ``metadata.status_code`` when the
  call failed;
- ``metadata``: ``api``, ``params`` (temperature, max_tokens, seed, ... and ``extra_body``; never
  headers), ``tags``, ``response_id``, ``finish_reason``, ``logprobs`` when requested,
  ``tool_calls``, ``ttft_ms`` for a stream.

An error of the call reaches the caller unchanged (after it is recorded); an error of the
telemetry is logged and never reaches the caller.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from trainwire.errors import MissingExtraError

try:
    import openai
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise MissingExtraError("judge", "trainwire.producers.openai") from exc

from trainwire.bus import Emitter, get_emitter
from trainwire.events import Event, Interaction, Source
from trainwire.producers.api import coerce_prompt, current_run_id, json_safe, telemetry_warning

__all__ = ["instrument", "is_instrumented", "uninstrument"]

LIBRARY = "trainwire.openai"
_MARK = "_trainwire_instrumentation"
_NOT_PARAMS = {"messages", "prompt", "model", "stream", "extra_headers", "extra_query", "timeout"}


@dataclass(frozen=True)
class _Config:
    run_id: str | None
    tags: dict[str, Any]
    emitter: Emitter | None


def instrument(
    client: Any, *, run_id: str | None = None, tags: Mapping[str, Any] | None = None, emitter: Emitter | None = None
) -> Any:
    """Make ``client`` (``openai.OpenAI`` or ``openai.AsyncOpenAI``) record each call; returns it.

    Args:
        client: the client to instrument, in place. Instrumenting it again replaces the settings.
        run_id: the run of its events; default :func:`~trainwire.producers.api.current_run_id` at call time.
        tags: your labels for these calls (``{"job": "eval", "judge": True}``), kept in ``metadata.tags``.
        emitter: publish through this emitter instead of the process-wide one.
    """
    if not isinstance(client, openai.OpenAI | openai.AsyncOpenAI):
        raise TypeError(f"instrument() expects an openai.OpenAI or openai.AsyncOpenAI client, got {type(client)!r}")
    if is_instrumented(client):
        uninstrument(client)
    config = _Config(run_id, json_safe(dict(tags or {})), emitter)
    chat, text = client.chat.completions, client.completions
    is_async = isinstance(client, openai.AsyncOpenAI)
    chat.create = _wrap(chat.create, "chat.completions", config, is_async)
    text.create = _wrap(text.create, "completions", config, is_async)
    original_copy = client.copy

    @functools.wraps(original_copy)
    def copy(*args: Any, **kwargs: Any) -> Any:
        return instrument(original_copy(*args, **kwargs), run_id=run_id, tags=tags, emitter=emitter)

    client.copy = client.with_options = copy
    setattr(client, _MARK, config)
    return client


def is_instrumented(client: Any) -> bool:
    """Whether :func:`instrument` has been applied to ``client`` (and not undone)."""
    return isinstance(client.__dict__.get(_MARK), _Config)


def uninstrument(client: Any) -> Any:
    """Undo :func:`instrument` on ``client``; returns it."""
    config = client.__dict__.pop(_MARK, None)
    if isinstance(config, _Config):
        for resource in (client.chat.completions, client.completions):
            resource.__dict__.pop("create", None)
        client.__dict__.pop("copy", None)
        client.__dict__.pop("with_options", None)
    return client


# --------------------------------------------------------------------------- wrapping


def _wrap(create: Callable[..., Any], api: str, config: _Config, is_async: bool) -> Callable[..., Any]:
    if is_async:

        @functools.wraps(create)
        async def acreate(*args: Any, **kwargs: Any) -> Any:
            call = _Call.begin(api, config, kwargs)
            try:
                result = await create(*args, **kwargs)
            except BaseException as exc:
                if call is not None:
                    call.end(error=exc)
                raise
            return _recorded(call, result)

        return acreate

    @functools.wraps(create)
    def screate(*args: Any, **kwargs: Any) -> Any:
        call = _Call.begin(api, config, kwargs)
        try:
            result = create(*args, **kwargs)
        except BaseException as exc:
            if call is not None:
                call.end(error=exc)
            raise
        return _recorded(call, result)

    return screate


def _recorded(call: _Call | None, result: Any) -> Any:
    """What the wrapped ``create`` returns: a stream that records the call when it ends, or the
    response itself once recorded (the logic the sync and async wrappers share)."""
    if call is None:
        return result
    if isinstance(result, openai.AsyncStream):
        return _AsyncRecordedStream(result, call)
    if isinstance(result, openai.Stream):
        return _RecordedStream(result, call)
    call.end(response=result)
    return result


class _RecordedStream:
    """An ``openai.Stream`` that records the call when it ends; everything else is the stream's."""

    def __init__(self, stream: Any, call: _Call):
        self._stream = stream
        self._call = call

    def __iter__(self) -> _RecordedStream:
        return self

    def __next__(self) -> Any:
        try:
            chunk = self._stream.__next__()
        except StopIteration:
            self._call.end()
            raise
        except BaseException as exc:
            self._call.end(error=exc)
            raise
        self._call.add(chunk)
        return chunk

    def close(self) -> None:
        """Close the response; what was streamed so far is recorded."""
        try:
            self._stream.close()
        finally:
            self._call.end(closed_early=True)

    def __enter__(self) -> _RecordedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __del__(self) -> None:
        call = self.__dict__.get("_call")
        if call is not None:
            call.end(closed_early=True)


class _AsyncRecordedStream:
    """An ``openai.AsyncStream`` that records the call when it ends; everything else is the stream's."""

    def __init__(self, stream: Any, call: _Call):
        self._stream = stream
        self._call = call

    def __aiter__(self) -> _AsyncRecordedStream:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._stream.__anext__()
        except StopAsyncIteration:
            self._call.end()
            raise
        except BaseException as exc:
            self._call.end(error=exc)
            raise
        self._call.add(chunk)
        return chunk

    async def close(self) -> None:
        """Close the response; what was streamed so far is recorded."""
        try:
            await self._stream.close()
        finally:
            self._call.end(closed_early=True)

    async def __aenter__(self) -> _AsyncRecordedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __del__(self) -> None:
        call = self.__dict__.get("_call")
        if call is not None:
            call.end(closed_early=True)


# --------------------------------------------------------------------------- recording


def _safe(method: Callable[..., Any]) -> Callable[..., Any]:
    """Telemetry must not fail the caller: log what goes wrong in ``method`` and return None."""

    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            telemetry_warning(
                f"openai:{method.__name__}", "recording an OpenAI call failed: %s: %s", type(exc).__name__, exc
            )
            return None

    return guarded


def _given(value: Any) -> bool:
    return not isinstance(value, openai.NotGiven | openai.Omit)


@dataclass
class _Choice:
    """What is known of one choice: its text parts, finish reason, logprobs, tool calls."""

    parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: Any = None
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    refusal: list[str] = field(default_factory=list)


class _Call:
    """One recorded call: what was asked, then the response or the stream's chunks, then the events."""

    def __init__(self, api: str, config: _Config, kwargs: dict[str, Any]):
        self.api = api
        self.config = config
        self.started = time.perf_counter()
        self.first_chunk_ms: float | None = None
        self.model = kwargs.get("model") if isinstance(kwargs.get("model"), str) else None
        self.stream = kwargs.get("stream") is True
        prompt = kwargs.get("messages") if api == "chat.completions" else kwargs.get("prompt")
        self.prompt = prompt if _given(prompt) else None
        self.params = {k: v for k, v in kwargs.items() if k not in _NOT_PARAMS and _given(v)}
        self.choices: dict[int, _Choice] = {}
        self.response_id: str | None = None
        self.usage: Any = None
        self.fingerprint: str | None = None
        self.ended = False

    @classmethod
    @_safe
    def begin(cls, api: str, config: _Config, kwargs: dict[str, Any]) -> _Call:
        """Start recording a call; a one-shot iterable of messages is turned into a list (in ``kwargs``)."""
        messages = kwargs.get("messages")
        if messages is not None and not isinstance(messages, list | tuple) and _given(messages):
            kwargs["messages"] = list(messages)
        return cls(api, config, kwargs)

    # ---------------------------------------------------------------- collecting

    @_safe
    def add(self, chunk: Any) -> None:
        """Take in one streamed chunk."""
        if self.first_chunk_ms is None:
            self.first_chunk_ms = (time.perf_counter() - self.started) * 1000
        self._header(chunk)
        for choice in getattr(chunk, "choices", None) or []:
            state = self.choices.setdefault(choice.index, _Choice())
            if choice.finish_reason:
                state.finish_reason = choice.finish_reason
            delta = getattr(choice, "delta", None)
            if delta is not None:  # chat
                if delta.content:
                    state.parts.append(delta.content)
                if getattr(delta, "refusal", None):
                    state.refusal.append(delta.refusal)
                for call in getattr(delta, "tool_calls", None) or []:
                    slot = state.tool_calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
                    slot["id"] = call.id or slot["id"]
                    if call.function is not None:
                        slot["name"] = call.function.name or slot["name"]
                        slot["arguments"] += call.function.arguments or ""
                self._add_logprobs(state, getattr(choice, "logprobs", None))
            else:  # completions
                if getattr(choice, "text", None):
                    state.parts.append(choice.text)
                self._add_logprobs(state, getattr(choice, "logprobs", None))

    def _header(self, response: Any) -> None:
        self.response_id = getattr(response, "id", None) or self.response_id
        self.model = getattr(response, "model", None) or self.model
        self.fingerprint = getattr(response, "system_fingerprint", None) or self.fingerprint
        if getattr(response, "usage", None) is not None:
            self.usage = response.usage

    @staticmethod
    def _add_logprobs(state: _Choice, logprobs: Any) -> None:
        if logprobs is None:
            return
        content = getattr(logprobs, "content", None)
        if content is not None or hasattr(logprobs, "refusal"):  # chat: a list of token logprobs
            state.logprobs = (state.logprobs or []) + [_token_logprob(t) for t in content or []]
            return
        # completions: parallel lists
        merged = state.logprobs or {"tokens": [], "token_logprobs": [], "top_logprobs": []}
        merged["tokens"] += list(logprobs.tokens or [])
        merged["token_logprobs"] += list(logprobs.token_logprobs or [])
        merged["top_logprobs"] += list(logprobs.top_logprobs or [])
        state.logprobs = merged

    def _take_response(self, response: Any) -> None:
        self._header(response)
        for choice in getattr(response, "choices", None) or []:
            state = self.choices.setdefault(choice.index, _Choice())
            state.finish_reason = choice.finish_reason
            message = getattr(choice, "message", None)
            if message is not None:  # chat
                if message.content:
                    state.parts.append(message.content)
                if getattr(message, "refusal", None):
                    state.refusal.append(message.refusal)
                for i, call in enumerate(getattr(message, "tool_calls", None) or []):
                    function = getattr(call, "function", None)
                    state.tool_calls[i] = {
                        "id": call.id,
                        "name": getattr(function, "name", None),
                        "arguments": getattr(function, "arguments", None),
                    }
            elif getattr(choice, "text", None):
                state.parts.append(choice.text)
            self._add_logprobs(state, getattr(choice, "logprobs", None))

    # ---------------------------------------------------------------- ending

    @_safe
    def end(self, response: Any = None, error: BaseException | None = None, closed_early: bool = False) -> None:
        """Record the call (once): from ``response``, or from the chunks seen, with ``error`` if it failed."""
        if self.ended:
            return
        self.ended = True
        latency_ms = (time.perf_counter() - self.started) * 1000
        if response is not None:
            self._take_response(response)
        emitter = self.config.emitter or get_emitter()
        run_id = current_run_id(self.config.run_id)
        for payload in self._payloads(latency_ms, error, closed_early):
            emitter.emit(Event(run_id=run_id, payload=payload, source=_source()))

    def _payloads(self, latency_ms: float, error: BaseException | None, closed_early: bool) -> list[Interaction]:
        base: dict[str, Any] = {"api": self.api, "stream": self.stream}
        if self.params:
            base["params"] = json_safe(self.params)
        if self.config.tags:
            base["tags"] = self.config.tags
        if self.response_id:
            base["response_id"] = self.response_id
        if self.fingerprint:
            base["system_fingerprint"] = self.fingerprint
        if self.first_chunk_ms is not None:
            base["ttft_ms"] = round(self.first_chunk_ms, 3)
        if closed_early and error is None:
            base["stream_closed_early"] = True
        error_text = None
        if error is not None:
            error_text = f"{type(error).__name__}: {error}"
            status = getattr(error, "status_code", None)
            if isinstance(status, int):
                base["status_code"] = status
        usage = _usage(self.usage)
        indexes = sorted(self.choices) or [0]
        many = len(indexes) > 1
        if usage and many:
            base["usage"] = usage
        prompts = self._prompts()
        out = []
        for index in indexes:
            state = self.choices.get(index, _Choice())
            metadata = dict(base)
            if state.finish_reason:
                metadata["finish_reason"] = state.finish_reason
            if state.logprobs is not None:
                metadata["logprobs"] = json_safe(state.logprobs)
            if state.tool_calls:
                metadata["tool_calls"] = [state.tool_calls[i] for i in sorted(state.tool_calls)]
            if state.refusal:
                metadata["refusal"] = "".join(state.refusal)
            out.append(
                Interaction(
                    prompt=prompts(index),
                    completion="".join(state.parts),
                    success=error is None,
                    error=error_text,
                    latency_ms=latency_ms,
                    prompt_tokens=usage.get("prompt_tokens"),
                    completion_tokens=None if many else usage.get("completion_tokens"),
                    model=self.model,
                    group_id=(self.response_id or None) if many else None,
                    group_index=index if many else None,
                    metadata=metadata,
                )
            )
        return out

    def _prompts(self) -> Callable[[int], Any]:
        """The prompt of each choice index (a batch of completion prompts has ``n`` choices per prompt)."""
        prompt = self.prompt
        if self.api == "chat.completions":
            messages = json_safe(coerce_prompt(list(prompt or []), "messages"))
            return lambda index: messages
        if isinstance(prompt, str):
            return lambda index: prompt
        if isinstance(prompt, list | tuple) and prompt and all(isinstance(p, str) for p in prompt):
            n = self.params.get("n") if isinstance(self.params.get("n"), int) else 1
            prompts = list(prompt)
            return lambda index: prompts[min(index // max(n, 1), len(prompts) - 1)]
        text = "" if prompt is None else json_safe_text(prompt)
        return lambda index: text


def json_safe_text(value: Any) -> str:
    """A prompt that is not text (token ids) as JSON text."""
    return orjson.dumps(json_safe(value)).decode()


def _token_logprob(token: Any) -> dict[str, Any]:
    entry = {"token": token.token, "logprob": token.logprob}
    top = getattr(token, "top_logprobs", None)
    if top:
        entry["top_logprobs"] = [{"token": t.token, "logprob": t.logprob} for t in top]
    return entry


def _usage(usage: Any) -> dict[str, int]:
    if usage is None:
        return {}
    out = {}
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = getattr(usage, name, None)
        if isinstance(value, int):
            out[name] = value
    return out


def _source() -> Source:
    return Source.current(library=LIBRARY)
