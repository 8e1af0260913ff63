"""Small OpenAI-compatible servers on loopback: a scripted judge and a transformers-backed model.

Both speak enough of the OpenAI API for :class:`~trainwire.judge.client.Judge` (``POST
/v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``), start on a free port of
127.0.0.1 in a thread, and are context managers::

    with ScriptedJudgeServer(["Score: 4\\nReasoning: fine", Reply(status=500)]) as server:
        JudgeConfig(base_url=server.base_url, model=server.model)

    with TransformersChatServer(build_tiny_model(tmp / "tiny")) as server:   # a real (tiny) model
        ...

:class:`ScriptedJudgeServer` answers from a script: a list of replies used in order (then the
``default``), or a function of the request body. A :class:`Reply` can be a text, an HTTP error
(500, 429 with ``Retry-After``, 400), and can be slow (``delay_s``). Every request body is kept in
``requests`` (and its path in ``paths``), so a test can tell whether and how the judge called.
Chat and text completions go through the same script: a function can tell them apart by the body
(``body["messages"]`` for chat, ``body["prompt"]`` for text). For a group judge,
:func:`group_reply` reads the answers of a group request (:func:`group_answers`) and answers one
score per id, in a chosen shape: well-formed, reordered, short (an answer left out) or garbage.

:class:`TransformersChatServer` loads a causal LM with ``transformers`` and generates with it
(greedy when ``temperature`` is 0): a chat request through the tokenizer's chat template (a
tokenizer without one answers 400, as vLLM does), a text completion from the prompt text as it is.
Both honour vLLM's ``guided_choice``. The demo command uses it with the tiny random model from
:func:`trainwire.producers.tiny.build_tiny_model`, whose output is gibberish: what it proves is
the pipeline end to end over real HTTP and real generation, not the quality of a judgement.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from trainwire.errors import MissingExtraError

__all__ = [
    "GROUP_SHAPES",
    "ROUTES",
    "BadRequest",
    "OpenAICompatibleServer",
    "Reply",
    "ScriptedJudgeServer",
    "TransformersChatServer",
    "group_answers",
    "group_reply",
]

ROUTES = {"/chat/completions": "chat", "/completions": "completions"}
"""The POST routes (under ``/v1``) the servers answer, to the API name :meth:`OpenAICompatibleServer.handle` gets;
matched by suffix in this order (``/chat/completions`` also ends with ``/completions``)."""


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a completion text (status 200) or an HTTP error, after ``delay_s``."""

    text: str = ""
    status: int = 200
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class BadRequest(Exception):
    """Raised by a server's :meth:`~OpenAICompatibleServer.handle`: the client gets an HTTP 400 with this message."""


class OpenAICompatibleServer:
    """Base of the loopback servers: a threading HTTP server, ``base_url``, start/stop, context manager."""

    model: str = "judge"

    def __init__(self) -> None:
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[dict[str, Any]] = []
        """The body of every completion request, in order of arrival."""
        self.paths: list[str] = []
        """The path of each of ``requests`` (``/v1/chat/completions`` or ``/v1/completions``)."""
        self.in_flight = 0
        """Completion requests being answered now."""
        self.max_in_flight = 0
        """The most completion requests answered at the same time so far."""
        self._requests_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` (only valid once started)."""
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> OpenAICompatibleServer:
        """Bind a free loopback port and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    data = [{"id": server.model, "object": "model", "owned_by": "trainwire"}]
                    self._send(200, {"object": "list", "data": data}, {})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}}, {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = orjson.loads(self.rfile.read(length))
                except orjson.JSONDecodeError:
                    self._send(400, {"error": {"message": "body is not JSON"}}, {})
                    return
                path = self.path.rstrip("/")
                api = next((api for route, api in ROUTES.items() if path.endswith(route)), None)
                if api is None:
                    self._send(404, {"error": {"message": f"no route {self.path}"}}, {})
                    return
                with server._requests_lock:
                    server.requests.append(body)
                    server.paths.append(path)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, payload, headers = server.handle(api, body)
                except BadRequest as exc:
                    status, payload, headers = 400, {"error": {"message": str(exc), "type": "BadRequestError"}}, {}
                except Exception as exc:  # a bug in a handler is a 500 for the client, not a dead thread
                    status, payload, headers = 500, {"error": {"message": f"{type(exc).__name__}: {exc}"}}, {}
                finally:
                    with server._requests_lock:
                        server.in_flight -= 1
                self._send(status, payload, headers)

            def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
                data = orjson.dumps(payload)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    self.close_connection = True

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = self._thread = None

    def __enter__(self) -> OpenAICompatibleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle(self, api: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        """Answer one request of ``api`` (``chat`` or ``completions``, see :data:`ROUTES`):
        ``(status, JSON payload, extra headers)``; raise :class:`BadRequest` for a 400."""
        raise NotImplementedError

    def completion_payload(
        self, text: str, prompt_tokens: int = 0, completion_tokens: int = 0, *, api: str = "chat"
    ) -> dict[str, Any]:
        """An OpenAI ``chat.completion`` (``api="chat"``) or ``text_completion`` object, one choice holding ``text``."""
        if api == "chat":
            head = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion"}
            choice: dict[str, Any] = {"message": {"role": "assistant", "content": text}}
        else:
            head = {"id": f"cmpl-{uuid.uuid4().hex[:12]}", "object": "text_completion"}
            choice = {"text": text}
        return {
            **head,
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, **choice, "finish_reason": "stop", "logprobs": None}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


Script = list[Reply | str] | Callable[[dict[str, Any]], Reply | str]


class ScriptedJudgeServer(OpenAICompatibleServer):
    """Answers chat and text completions from one script (see the module docstring).

    Args:
        script: replies in order (a ``str`` is a 200 with that text), or a function of the request
            body returning one (``body["messages"]`` for chat, ``body["prompt"]`` for text completions);
            after a list runs out, ``default`` answers.
        default: the reply when the script has none left.
        latency_s: added to every reply (the benchmark's fixed judge latency).
        model: the model name the server reports.
    """

    def __init__(
        self,
        script: Script | None = None,
        *,
        default: Reply | str = "Score: 3\nReasoning: an average answer.",
        latency_s: float = 0.0,
        model: str = "scripted-judge",
    ):
        super().__init__()
        self._script = script if script is not None else []
        self._default = default
        self.latency_s = latency_s
        self.model = model
        self._lock = threading.Lock()
        self._next = 0

    def handle(self, api: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        """The script's next reply (or its reply to ``body``), in the shape of ``api``."""
        if callable(self._script):
            reply = self._script(body)
        else:
            with self._lock:
                index = self._next
                self._next += 1
            reply = self._script[index] if index < len(self._script) else self._default
        if isinstance(reply, str):
            reply = Reply(reply)
        delay = self.latency_s + reply.delay_s
        if delay > 0:
            time.sleep(delay)
        if reply.status != 200:
            error = {"message": reply.text or f"scripted HTTP {reply.status}", "type": "scripted", "code": reply.status}
            return reply.status, {"error": error}, reply.headers
        return 200, self.completion_payload(reply.text, api=api), reply.headers


_ANSWER_RE = re.compile(r'<answer id="(?P<id>[^"]*)">\n(?P<text>.*?)\n</answer>', re.DOTALL)
GROUP_SHAPES = ("good", "reordered", "short", "garbage")
"""How :func:`group_reply` answers: every id in order, every id in reverse order, the last id left out, no JSON."""


def group_answers(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``(id, answer)`` pairs of a group request rendered with the built-in ``group`` template."""
    text = body["messages"][-1]["content"] if "messages" in body else body.get("prompt", "")
    return [(m.group("id"), m.group("text")) for m in _ANSWER_RE.finditer(text)]


def group_reply(
    body: dict[str, Any], score: Callable[[str], float], shape: str = "good", delay_s: float = 0.0
) -> Reply:
    """A group judge's answer to ``body``: ``score(answer text)`` for each answer, as a JSON array shaped ``shape``."""
    if shape not in GROUP_SHAPES:
        raise ValueError(f"shape must be one of {GROUP_SHAPES}, got {shape!r}")
    items = [{"id": i, "score": score(text), "reasoning": f"answer {i} compared"} for i, text in group_answers(body)]
    if shape == "reordered":
        items.reverse()
    elif shape == "short":
        items = items[:-1]
    elif shape == "garbage":
        return Reply("All of these answers look fine to me.", delay_s=delay_s)
    return Reply(orjson.dumps(items).decode(), delay_s=delay_s)


class TransformersChatServer(OpenAICompatibleServer):
    """Serves a local causal LM through ``transformers`` (one generation at a time, on the CPU by default).

    A chat request is tokenized with the tokenizer's chat template (none: a 400, as vLLM answers),
    a text completion's ``prompt`` as it is; then both generate, or pick a ``guided_choice``, alike.

    Args:
        model_path: a directory ``AutoTokenizer``/``AutoModelForCausalLM`` can load (e.g. the tiny model).
        model: the model name the server reports (default: the directory's name).
        max_new_tokens: cap on generated tokens (a request's ``max_tokens`` may lower it).
        max_input_tokens: the prompt is cut to its last this many tokens (the tiny model's context is 512).
        seed: seed of sampling when a request asks for ``temperature > 0``.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        model: str | None = None,
        max_new_tokens: int = 48,
        max_input_tokens: int = 448,
        seed: int = 0,
    ):
        super().__init__()
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise MissingExtraError("train", "trainwire.judge.servers.TransformersChatServer") from exc
        self._torch = torch
        self.model_path = Path(model_path)
        self.model = model or self.model_path.name
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.lm = AutoModelForCausalLM.from_pretrained(self.model_path)
        self.lm.eval()
        self.max_new_tokens = max_new_tokens
        self.max_input_tokens = max_input_tokens
        self.seed = seed
        self._generate_lock = threading.Lock()

    def handle(self, api: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        """Generate (or choose a ``guided_choice``) after the request's tokens, in the shape of ``api``."""
        torch = self._torch
        ids = self._chat_ids(body) if api == "chat" else self._prompt_ids(body)
        ids = ids[:, -self.max_input_tokens :]
        choices = body.get("guided_choice")
        if isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices):
            text = self._likeliest(ids, choices)
            payload = self.completion_payload(text, int(ids.shape[1]), len(self.tokenizer(text)["input_ids"]), api=api)
            return 200, payload, {}
        max_new = min(self.max_new_tokens, int(body.get("max_tokens") or self.max_new_tokens))
        temperature = float(body.get("temperature") or 0.0)
        with self._generate_lock, torch.inference_mode():
            generator_kwargs: dict[str, Any] = {"do_sample": temperature > 0}
            if temperature > 0:
                torch.manual_seed(self.seed)
                generator_kwargs["temperature"] = temperature
            out = self.lm.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new,
                pad_token_id=self.tokenizer.pad_token_id,
                **generator_kwargs,
            )
        new = out[0, ids.shape[1] :]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return 200, self.completion_payload(text, int(ids.shape[1]), int(new.shape[0]), api=api), {}

    def _chat_ids(self, body: dict[str, Any]) -> Any:
        """A chat request's messages through the chat template, as a ``(1, n)`` tensor of token ids."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list")
        if not self.tokenizer.chat_template:
            raise BadRequest(
                f"the model {self.model!r} has no chat template, so it cannot answer chat completions; "
                "send the prompt as text to /v1/completions"
            )
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        if not isinstance(ids, self._torch.Tensor):  # newer tokenizers return a BatchEncoding
            ids = ids["input_ids"]
        return ids

    def _prompt_ids(self, body: dict[str, Any]) -> Any:
        """A text completion's ``prompt``, tokenized as it is (no chat template), as a ``(1, n)`` tensor."""
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise BadRequest("'prompt' must be a non-empty string")
        return self.tokenizer(prompt, return_tensors="pt")["input_ids"]

    def _likeliest(self, ids: Any, choices: list[str]) -> str:
        """vLLM's ``guided_choice``: the choice with the highest log-likelihood after the prompt."""
        torch = self._torch
        best, best_score = choices[0], float("-inf")
        with self._generate_lock, torch.inference_mode():
            for choice in choices:
                choice_ids = torch.tensor([self.tokenizer(" " + choice, add_special_tokens=False)["input_ids"]])
                full = torch.cat([ids, choice_ids], dim=1)
                logits = self.lm(full).logits[0, ids.shape[1] - 1 : -1]
                score = torch.log_softmax(logits, dim=-1).gather(1, choice_ids[0].unsqueeze(1)).sum().item()
                if score > best_score:
                    best, best_score = choice, score
        return best
