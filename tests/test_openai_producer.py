"""The OpenAI wrapper, against a real OpenAI-compatible HTTP server on loopback (JSON and SSE)."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest

from trainwire.bus import Emitter, open_consumer
from trainwire.config import Settings
from trainwire.events import Event, Interaction, decode
from trainwire.producers.openai import instrument, is_instrumented, uninstrument
from trainwire.topics import event_topics

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- the server


def _answer(body: dict[str, Any], index: int) -> str:
    if "messages" in body:
        last = body["messages"][-1]["content"]
    else:
        prompt = body["prompt"]
        last = prompt if isinstance(prompt, str) else prompt[index // body.get("n", 1)]
    suffix = f" #{index}" if body.get("n", 1) > 1 or isinstance(body.get("prompt"), list) else ""
    return f"echo: {last}{suffix}"


def _logprobs_chat(text: str) -> dict[str, Any]:
    return {
        "content": [
            {"token": w, "logprob": -0.5, "bytes": None, "top_logprobs": [{"token": w, "logprob": -0.5, "bytes": None}]}
            for w in text.split(" ")
        ]
    }


def _logprobs_text(text: str) -> dict[str, Any]:
    words = text.split(" ")
    return {"tokens": words, "token_logprobs": [-0.25] * len(words), "top_logprobs": None, "text_offset": None}


class ScriptedOpenAI(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions and /v1/completions like an OpenAI server, scripted by the model name.

    ``missing-model`` answers 404; ``explode`` streams two chunks, then an error event. Every
    other model echoes the last message (or the prompt). Requests are kept in ``server.requests``.
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "body": body})
        chat = self.path.endswith("/chat/completions")
        if body["model"] == "missing-model":
            error = {"message": "The model `missing-model` does not exist", "type": "invalid_request_error"}
            return self._json(404, {"error": {**error, "param": None, "code": "model_not_found"}})
        n = body.get("n", 1)
        count = n * (len(body["prompt"]) if not chat and isinstance(body["prompt"], list) else 1)
        texts = [_answer(body, i) for i in range(count)]
        usage = {"prompt_tokens": 11, "completion_tokens": 3 * count, "total_tokens": 11 + 3 * count}
        if body.get("stream"):
            return self._stream(body, chat, texts, usage)
        choices = []
        for i, text in enumerate(texts):
            if chat:
                choice = {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                choice["logprobs"] = _logprobs_chat(text) if body.get("logprobs") else None
            else:
                choice = {"index": i, "text": text, "finish_reason": "length", "logprobs": None}
                choice["logprobs"] = _logprobs_text(text) if body.get("logprobs") else None
            choices.append(choice)
        self._json(
            200,
            {
                "id": "resp-1",
                "object": "chat.completion" if chat else "text_completion",
                "created": 1760000000,
                "model": body["model"] + "-served",
                "choices": choices,
                "usage": usage,
            },
        )

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, body: dict[str, Any], chat: bool, texts: list[str], usage: dict[str, int]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        base = {"id": "stream-1", "created": 1760000000, "model": body["model"] + "-served"}
        base["object"] = "chat.completion.chunk" if chat else "text_completion"

        def send(payload: dict[str, Any] | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            self.wfile.write(f"data: {data}\n\n".encode())
            self.wfile.flush()

        for i, text in enumerate(texts):
            words = text.split(" ")
            for j, word in enumerate(words):
                piece = word if j == 0 else " " + word
                if chat:
                    delta = {"role": "assistant", "content": piece} if j == 0 else {"content": piece}
                    choice = {"index": i, "delta": delta, "finish_reason": None}
                    choice["logprobs"] = _logprobs_chat(word) if body.get("logprobs") else None
                else:
                    choice = {"index": i, "text": piece, "finish_reason": None, "logprobs": None}
                send({**base, "choices": [choice]})
                if body["model"] == "explode" and j == 1:
                    send({"error": {"message": "the GPU caught fire", "type": "server_error"}})
                    return
            last = {"index": i, "finish_reason": "stop"}
            last.update({"delta": {}} if chat else {"text": ""})
            send({**base, "choices": [last]})
        if (body.get("stream_options") or {}).get("include_usage"):
            send({**base, "choices": [], "usage": usage})
        send("[DONE]")


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedOpenAI)
    httpd.daemon_threads = True
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def base_url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def read_events(settings: Settings) -> list[Event]:
    """Every event on the embedded bus (a fresh consumer group each time)."""

    async def main() -> list[Event]:
        consumer = open_consumer(settings, event_topics(settings.topic_prefix), f"check-{next(_groups)}")
        await consumer.start()
        out: list[Event] = []
        try:
            while records := await consumer.getmany(timeout_ms=300):
                out.extend(decode(r.value) for r in records)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(main())


_groups = itertools.count()


@pytest.fixture
def emitter(embedded_settings: Settings) -> Iterator[Emitter]:
    emitter = Emitter(embedded_settings)
    yield emitter
    emitter.close()


def emitted(emitter: Emitter) -> list[Interaction]:
    """Close the emitter and return the interaction payloads it published."""
    emitter.close()
    return [e.payload for e in read_events(emitter.settings)]


def client(server: ThreadingHTTPServer, emitter: Emitter, **options: Any) -> openai.OpenAI:
    raw = openai.OpenAI(api_key="test-key", base_url=base_url(server), max_retries=0)
    return instrument(raw, run_id="run-openai", emitter=emitter, **options)


# --------------------------------------------------------------------------- tests


def test_chat_completion_is_recorded(server: ThreadingHTTPServer, emitter: Emitter):
    llm = client(server, emitter, tags={"job": "eval", "round": 2})
    assert isinstance(llm, openai.OpenAI) and is_instrumented(llm)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Что такое GRPO?"}]

    response = llm.chat.completions.create(
        model="qwen", messages=messages, temperature=0.7, max_tokens=64, seed=42, extra_body={"top_k": 20}
    )

    assert response.choices[0].message.content == "echo: Что такое GRPO?"
    sent = server.requests[-1]["body"]
    assert sent["temperature"] == 0.7 and sent["top_k"] == 20  # the request is what the caller asked for
    (event,) = read_events_after_close(emitter)
    assert event.run_id == "run-openai"
    assert event.source.library == "trainwire.openai"
    payload = event.payload
    assert payload.prompt == messages
    assert payload.completion == "echo: Что такое GRPO?"
    assert payload.model == "qwen-served"
    assert payload.success is True and payload.error is None
    assert payload.prompt_tokens == 11 and payload.completion_tokens == 3
    assert payload.latency_ms is not None and payload.latency_ms > 0
    meta = payload.metadata
    assert meta["api"] == "chat.completions"
    assert meta["stream"] is False
    assert meta["params"] == {"temperature": 0.7, "max_tokens": 64, "seed": 42, "extra_body": {"top_k": 20}}
    assert meta["tags"] == {"job": "eval", "round": 2}
    assert meta["response_id"] == "resp-1"
    assert meta["finish_reason"] == "stop"
    assert "logprobs" not in meta


def read_events_after_close(emitter: Emitter) -> list[Event]:
    emitter.close()
    return read_events(emitter.settings)


def test_chat_stream_is_recorded_when_it_ends(server: ThreadingHTTPServer, emitter: Emitter):
    llm = client(server, emitter)

    stream = llm.chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": "stream me a few words"}],
        stream=True,
        stream_options={"include_usage": True},
        logprobs=True,
    )
    pieces = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if len(pieces) == 2:
            stats = emitter.stats()
            assert stats.sent + stats.queued + stats.spooled == 0  # nothing recorded mid-stream

    assert "".join(pieces) == "echo: stream me a few words"
    (payload,) = emitted(emitter)
    assert payload.completion == "echo: stream me a few words"
    assert payload.prompt_tokens == 11 and payload.completion_tokens == 3
    assert payload.metadata["stream"] is True
    assert payload.metadata["finish_reason"] == "stop"
    assert payload.metadata["ttft_ms"] <= payload.latency_ms
    assert [t["token"] for t in payload.metadata["logprobs"]] == ["echo:", "stream", "me", "a", "few", "words"]
    assert payload.metadata["logprobs"][0]["top_logprobs"] == [{"token": "echo:", "logprob": -0.5}]


def test_stream_closed_early_and_context_manager(server: ThreadingHTTPServer, emitter: Emitter):
    llm = client(server, emitter)
    with llm.chat.completions.create(
        model="qwen", messages=[{"role": "user", "content": "one two three four"}], stream=True
    ) as stream:
        first = next(iter(stream))
        assert first.choices[0].delta.content == "echo:"
        assert stream.response.status_code == 200  # the stream's own attributes are still there

    (payload,) = emitted(emitter)
    assert payload.completion == "echo:"
    assert payload.metadata["stream_closed_early"] is True
    assert payload.success is True


def test_http_error_is_recorded_and_reraised_unchanged(server: ThreadingHTTPServer, emitter: Emitter):
    llm = client(server, emitter)

    with pytest.raises(openai.NotFoundError) as info:
        llm.chat.completions.create(model="missing-model", messages=[{"role": "user", "content": "hi"}])

    assert info.value.status_code == 404
    assert "does not exist" in info.value.message
    (payload,) = emitted(emitter)
    assert payload.success is False
    assert payload.error.startswith("NotFoundError: ")
    assert "does not exist" in payload.error
    assert payload.metadata["status_code"] == 404
    assert payload.completion == ""
    assert payload.model == "missing-model"
    assert payload.prompt == [{"role": "user", "content": "hi"}]


def test_error_in_the_middle_of_a_stream(server: ThreadingHTTPServer, emitter: Emitter):
    llm = client(server, emitter)
    seen = []
    with pytest.raises(openai.APIError, match="the GPU caught fire"):
        for chunk in llm.chat.completions.create(
            model="explode", messages=[{"role": "user", "content": "a b c d e"}], stream=True
        ):
            seen.append(chunk.choices[0].delta.content)

    assert seen == ["echo:", " a"]
    (payload,) = emitted(emitter)
    assert payload.success is False
    assert payload.completion == "echo: a"
    assert "the GPU caught fire" in payload.error


def test_text_completions_with_logprobs_and_n(server: ThreadingHTTPServer, emitter: Emitter):
    llm = client(server, emitter)

    response = llm.completions.create(model="base", prompt="2+2=", n=2, logprobs=1, max_tokens=5)

    assert [c.text for c in response.choices] == ["echo: 2+2= #0", "echo: 2+2= #1"]
    payloads = sorted(emitted(emitter), key=lambda p: p.group_index)
    assert [p.completion for p in payloads] == ["echo: 2+2= #0", "echo: 2+2= #1"]
    for i, payload in enumerate(payloads):
        assert payload.prompt == "2+2="
        assert payload.group_id == "resp-1" and payload.group_index == i
        assert payload.prompt_tokens == 11 and payload.completion_tokens is None
        assert payload.metadata["usage"] == {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}
        assert payload.metadata["api"] == "completions"
        assert payload.metadata["finish_reason"] == "length"
        assert payload.metadata["logprobs"]["tokens"] == ["echo:", "2+2=", f"#{i}"]
        assert payload.metadata["params"] == {"n": 2, "logprobs": 1, "max_tokens": 5}


def test_text_completion_stream_and_batch_prompts(server: ThreadingHTTPServer, emitter: Emitter):
    llm = client(server, emitter)
    text = "".join(c.choices[0].text for c in llm.completions.create(model="base", prompt="once upon", stream=True))
    batch = llm.completions.create(model="base", prompt=["first", "second"])

    assert text == "echo: once upon"
    assert [c.text for c in batch.choices] == ["echo: first #0", "echo: second #1"]
    payloads = emitted(emitter)
    streamed = [p for p in payloads if p.metadata["stream"]]
    assert [p.completion for p in streamed] == ["echo: once upon"]
    batched = {p.completion: p.prompt for p in payloads if not p.metadata["stream"]}
    assert batched == {"echo: first #0": "first", "echo: second #1": "second"}


def test_async_client(server: ThreadingHTTPServer, emitter: Emitter):
    async def main() -> tuple[str, str]:
        raw = openai.AsyncOpenAI(api_key="k", base_url=base_url(server), max_retries=0)
        llm = instrument(raw, run_id="run-async", emitter=emitter)
        assert isinstance(llm, openai.AsyncOpenAI)
        response = await llm.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "async"}])
        stream = await llm.chat.completions.create(
            model="qwen", messages=[{"role": "user", "content": "async stream"}], stream=True
        )
        parts = [chunk.choices[0].delta.content or "" async for chunk in stream]
        with pytest.raises(openai.NotFoundError):
            await llm.completions.create(model="missing-model", prompt="x")
        await llm.close()
        return response.choices[0].message.content, "".join(parts)

    plain, streamed = asyncio.run(main())

    assert (plain, streamed) == ("echo: async", "echo: async stream")
    events = read_events_after_close(emitter)
    assert {e.run_id for e in events} == {"run-async"}
    by_text = {e.payload.completion: e.payload for e in events}
    assert by_text["echo: async"].success is True
    assert by_text["echo: async stream"].metadata["stream"] is True
    assert by_text[""].success is False and by_text[""].metadata["status_code"] == 404


def test_with_options_copies_stay_instrumented_and_uninstrument(server: ThreadingHTTPServer, emitter: Emitter):
    llm = client(server, emitter, tags={"who": "copy"})
    copy = llm.with_options(timeout=30)
    assert is_instrumented(copy)
    # a one-shot iterable of messages still reaches the server intact
    copy.chat.completions.create(model="qwen", messages=(m for m in [{"role": "user", "content": "from a generator"}]))
    assert server.requests[-1]["body"]["messages"] == [{"role": "user", "content": "from a generator"}]

    uninstrument(llm)
    assert not is_instrumented(llm)
    llm.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "not recorded"}])

    payloads = emitted(emitter)
    assert [p.completion for p in payloads] == ["echo: from a generator"]
    assert payloads[0].metadata["tags"] == {"who": "copy"}


class BrokenEmitter(Emitter):
    """An emitter whose bus is on fire: every emit raises."""

    def emit(self, event: Event) -> None:
        raise RuntimeError("bus on fire")


def test_telemetry_failure_never_reaches_the_caller(server: ThreadingHTTPServer, embedded_settings: Settings, caplog):
    broken = BrokenEmitter(embedded_settings)
    try:
        llm = instrument(
            openai.OpenAI(api_key="k", base_url=base_url(server), max_retries=0), emitter=broken, run_id="r"
        )
        response = llm.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "still works"}])
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in llm.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "s"}], stream=True)
        )
        with pytest.raises(openai.NotFoundError):  # the call's own error still comes through
            llm.chat.completions.create(model="missing-model", messages=[{"role": "user", "content": "x"}])
    finally:
        broken.close()
    assert response.choices[0].message.content == "echo: still works"
    assert streamed == "echo: s"
    assert "bus on fire" in caplog.text


def test_instrument_refuses_other_objects():
    with pytest.raises(TypeError, match=r"openai\.OpenAI"):
        instrument(object())


def test_missing_openai_package_names_the_extra():
    code = "import sys; sys.modules['openai'] = None; import trainwire.producers.openai"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        "trainwire.errors.MissingExtraError: trainwire.producers.openai needs the 'judge' extra: "
        "pip install 'trainwire[judge]'"
    )
