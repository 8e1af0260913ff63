"""The generic producer API: two calls any training or inference loop can make.

::

    from trainwire.producers.api import log_interaction, log_metrics, set_run

    set_run("grpo-7")                                   # optional; else $TRAINWIRE_RUN_ID, else generated
    log_interaction(prompt=question, completion=answer, reward=1.8,
                    metadata={"correct_answer": "2.5", "batch_idx": 0}, step=12)
    log_metrics(step=12, loss=0.41, grad_norm=1.3, learning_rate=2e-5, epoch=0.25, kl=0.02)

``log_interaction`` takes the record of seed 000 (``prompt``, ``completion``, ``reward``,
``metadata``); further keyword arguments that name an :class:`~trainwire.events.Interaction`
field (``step``, ``model``, ``rewards``, ``group_id``, ...) fill that field, and any other keyword
goes into ``metadata``. ``log_metrics`` fills :class:`~trainwire.events.TrainStep`: ``loss``,
``grad_norm``, ``learning_rate`` (alias ``lr``) and ``epoch`` go to their columns (a ``train/``
prefix is ignored), every other numeric value to ``metrics``; a non-numeric value is left out
and logged once per name.

Telemetry never hurts the caller: both functions return the event id, or None when the event
could not be built or queued, and log why (rate-limited) instead of raising. An event a worker
could not store is not built: an integer beyond 64 bits (``step=2**63``), metadata nested
deeper than :data:`~trainwire.events.MAX_NESTING` levels or text that is not valid Unicode is
refused, and the warning names the argument (``log_metrics.step: ... out of range``).
"""

from __future__ import annotations

import logging
import math
import operator
import os
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from trainwire.bus import Emitter, get_emitter
from trainwire.errors import EventError
from trainwire.events import Event, Interaction, Kind, TrainStep, check_event, check_int

__all__ = [
    "RUN_ID_ENV",
    "current_run_id",
    "log_interaction",
    "log_metrics",
    "make_interaction",
    "set_run",
    "telemetry_warning",
]

logger = logging.getLogger("trainwire.producers")

RUN_ID_ENV = "TRAINWIRE_RUN_ID"
"""Environment variable naming the run when neither an argument nor :func:`set_run` does."""

# --------------------------------------------------------------------------- run id

_run_lock = threading.Lock()
_explicit_run: str | None = None
_generated_run: str | None = None


def set_run(run_id: str | None) -> None:
    """Make ``run_id`` the run of every later event of this process that names none (None: forget it)."""
    global _explicit_run
    if run_id is not None and (not isinstance(run_id, str) or not run_id.strip()):
        raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")
    _explicit_run = run_id


def current_run_id(run_id: str | None = None) -> str:
    """The run an event belongs to.

    In order: ``run_id`` when given, the one set with :func:`set_run`, ``$TRAINWIRE_RUN_ID``, else
    one generated on first use (``run-YYYYMMDD-HHMMSS-xxxxxx``) that stays the same for the life of
    the process and its forked children.
    """
    global _generated_run
    if run_id:
        return run_id
    if _explicit_run:
        return _explicit_run
    from_env = os.environ.get(RUN_ID_ENV, "").strip()
    if from_env:
        return from_env
    with _run_lock:
        if _generated_run is None:
            _generated_run = f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        return _generated_run


# --------------------------------------------------------------------------- failures


_warned_at: dict[str, float] = {}
_WARN_EVERY_S = 30.0


def telemetry_warning(key: str, message: str, *args: Any) -> None:
    """Log a telemetry failure at most once per ``key`` every 30 seconds; never raises."""
    try:
        now = time.monotonic()
        if now - _warned_at.get(key, -math.inf) >= _WARN_EVERY_S:
            _warned_at[key] = now
            logger.warning("trainwire: " + message, *args)
    except Exception:  # pragma: no cover - logging itself failed; nothing more to do
        pass


# --------------------------------------------------------------------------- building payloads

_EXPLICIT = ("prompt", "completion", "reward", "metadata")
_INTERACTION_KINDS = {f.name: f.kind for f in Interaction.FIELDS}


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def coerce(kind: Kind, value: Any, path: str) -> Any:
    """``value`` as the Python type of a payload field of ``kind`` (numpy/torch scalars accepted).

    Raises :class:`EventError` naming ``path`` when it cannot be.
    """
    if kind is Kind.FLOAT:
        if isinstance(value, float):
            return value
        if isinstance(value, bool | str | bytes) or not hasattr(value, "__float__"):
            raise EventError(path, f"expected a number, got {_describe(value)}")
        try:
            return float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise EventError(path, f"{_describe(value)} is too large for a float") from None
        except (TypeError, ValueError) as exc:
            raise EventError(path, f"expected a number, got {_describe(value)}") from exc
    if kind is Kind.INT:
        if isinstance(value, bool):
            raise EventError(path, f"expected an integer, got {_describe(value)}")
        if isinstance(value, float) and value.is_integer():
            return check_int(int(value), path)
        try:
            return check_int(operator.index(value), path)
        except TypeError:
            raise EventError(path, f"expected an integer, got {_describe(value)}") from None
    if kind is Kind.STR:
        if isinstance(value, str):
            return value
        raise EventError(path, f"expected a string, got {_describe(value)}")
    if kind is Kind.BOOL:
        if isinstance(value, bool):
            return value
        if type(value).__name__ == "bool_":  # numpy.bool_
            return bool(value)
        raise EventError(path, f"expected true or false, got {_describe(value)}")
    if kind is Kind.FLOAT_MAP:
        if not isinstance(value, Mapping):
            raise EventError(path, f"expected an object of numbers, got {_describe(value)}")
        return {str(k): coerce(Kind.FLOAT, v, f"{path}.{k}") for k, v in value.items()}
    if kind is Kind.JSON:
        if isinstance(value, Mapping):
            return dict(value)
        raise EventError(path, f"expected an object, got {_describe(value)}")
    if kind is Kind.PROMPT:
        return coerce_prompt(value, path)
    raise AssertionError(kind)  # pragma: no cover - the enum is closed


def coerce_prompt(value: Any, path: str) -> str | list[dict[str, Any]]:
    """Text, or a list of chat messages (dicts or pydantic models with ``role`` and ``content``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        messages = []
        for i, message in enumerate(value):
            if hasattr(message, "model_dump"):
                message = message.model_dump(exclude_none=True)
            if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
                raise EventError(f"{path}[{i}]", "expected a chat message with a string 'role'")
            message = dict(message)
            message.setdefault("content", None)
            messages.append(message)
        return messages
    raise EventError(path, f"expected text or a list of chat messages, got {_describe(value)}")


def coerce_completion(value: Any, path: str) -> str:
    """Completion text: a string, None (empty), or chat messages (their contents joined)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list | tuple) and all(isinstance(m, Mapping) and "content" in m for m in value):
        return "".join(m["content"] if isinstance(m["content"], str) else "" for m in value)
    raise EventError(path, f"expected text, got {_describe(value)}")


def json_safe(value: Any) -> Any:
    """``value`` with everything orjson cannot write (numpy arrays, tensors, objects) made JSON-safe."""
    return orjson.loads(
        orjson.dumps(value, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    )


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return repr(value)


def make_interaction(
    prompt: Any,
    completion: Any = "",
    reward: Any = None,
    metadata: Any = None,
    fields: Mapping[str, Any] | None = None,
    *,
    path: str = "interaction",
    lenient: bool = False,
    sanitize: bool = True,
) -> Interaction:
    """Build an :class:`Interaction` from loosely typed values; errors name ``path.field``.

    ``fields`` may name any other Interaction field; names that are not fields go to
    ``metadata``. With ``lenient``, a value of the wrong type for one of those other fields is
    kept in ``metadata`` under its name instead of failing the whole record. With ``sanitize``
    (the default), metadata is made JSON-safe (numpy values, tensors, objects).
    """
    if metadata is None:
        meta: dict[str, Any] = {}
    elif isinstance(metadata, Mapping):
        meta = dict(metadata)
    else:
        raise EventError(f"{path}.metadata", f"expected an object, got {_describe(metadata)}")
    values: dict[str, Any] = {
        "prompt": coerce_prompt(prompt, f"{path}.prompt"),
        "completion": coerce_completion(completion, f"{path}.completion"),
        "reward": None if reward is None else coerce(Kind.FLOAT, reward, f"{path}.reward"),
    }
    for name, value in (fields or {}).items():
        kind = _INTERACTION_KINDS.get(name)
        if kind is None or name in _EXPLICIT:
            meta.setdefault(name, value)
            continue
        if value is None:
            continue
        try:
            values[name] = coerce(kind, value, f"{path}.{name}")
        except EventError:
            if not lenient:
                raise
            meta.setdefault(name, value)
    values["metadata"] = _sanitized(meta) if sanitize and meta else meta
    if sanitize and isinstance(values["prompt"], list):
        values["prompt"] = _sanitized(values["prompt"])
    return Interaction(**values)


def _sanitized(value: Any) -> Any:
    """:func:`json_safe` of ``value``, or ``value`` itself when orjson cannot write it even so.

    What cannot be written (nested too deep, text that is not Unicode, an integer past 64 bits) is
    then refused by :func:`~trainwire.events.check_event`, which names the field and the problem.
    """
    try:
        return json_safe(value)
    except orjson.JSONEncodeError:
        return value


# --------------------------------------------------------------------------- the calls


def _emit(payload: Any, run_id: str | None, emitter: Emitter | None, caller: str) -> str:
    """Publish ``payload`` as an event of ``run_id``, once it is known to be publishable; return its id.

    Raises :class:`EventError` naming ``caller``'s argument when the event could not be published
    or stored as it is (a value out of range, metadata nested too deep, text that is not Unicode).
    """
    event = Event(run_id=current_run_id(run_id), payload=payload)
    check_event(event, caller)
    (emitter or get_emitter()).emit(event)
    return event.event_id


def log_interaction(
    prompt: Any,
    completion: Any = "",
    reward: Any = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    run_id: str | None = None,
    emitter: Emitter | None = None,
    **fields: Any,
) -> str | None:
    """Publish one LLM interaction (a prompt, what the model answered, how it scored).

    Args:
        prompt: the input text, or a list of chat messages.
        completion: the model's answer (text; chat messages are joined).
        reward: the scalar reward, if any (numpy/torch scalars are fine).
        metadata: anything else worth keeping (JSON-safe or made so).
        run_id: the run; default :func:`current_run_id`.
        emitter: publish through this emitter instead of the process-wide one.
        **fields: other :class:`~trainwire.events.Interaction` fields (``step``, ``model``,
            ``rewards``, ``group_id``, ``group_index``, ``advantage``, ``success``, ``error``,
            ``latency_ms``, ``prompt_tokens``, ``completion_tokens``); other names go to metadata.

    Returns:
        The event id, or None when the event could not be published (the reason is logged).
    """
    try:
        payload = make_interaction(prompt, completion, reward, metadata, fields, path="log_interaction")
        return _emit(payload, run_id, emitter, "log_interaction")
    except EventError as exc:
        telemetry_warning(f"interaction:{exc.field}", "log_interaction ignored an event: %s", exc)
    except Exception as exc:
        telemetry_warning("interaction", "log_interaction failed: %s: %s", type(exc).__name__, exc)
    return None


_METRIC_FIELDS = {"loss": "loss", "grad_norm": "grad_norm", "learning_rate": "learning_rate", "lr": "learning_rate"}
_NON_NUMERIC_SEEN: set[str] = set()


def _as_float(value: Any) -> float | None:
    if isinstance(value, float):
        return value
    if isinstance(value, bool | str | bytes) or not hasattr(value, "__float__"):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):  # a tensor with more than one element, an int past floats
        return None


def log_metrics(step: int, *, run_id: str | None = None, emitter: Emitter | None = None, **metrics: Any) -> str | None:
    """Publish the numbers a trainer logged at ``step`` as a ``train_step`` event.

    ``loss``, ``grad_norm``, ``learning_rate`` (or ``lr``) and ``epoch`` fill their columns (also
    when written ``train/loss`` and so on); every other numeric value (int, float, numpy or a
    one-element tensor; booleans excluded) goes to ``metrics``. A non-numeric value is left out
    and logged once per name. A None value is left out silently.

    Returns:
        The event id, or None when the event could not be published (the reason is logged).
    """
    try:
        step_value = coerce(Kind.INT, step, "log_metrics.step")
        named: dict[str, float] = {}
        extra: dict[str, float] = {}
        for name, value in metrics.items():
            if value is None:
                continue
            number = _as_float(value)
            if number is None:
                if name not in _NON_NUMERIC_SEEN:
                    _NON_NUMERIC_SEEN.add(name)
                    logger.warning(
                        "trainwire: log_metrics left out %r: expected a number, got %s", name, _describe(value)
                    )
                continue
            short = name.removeprefix("train/")
            if short == "epoch":
                named["epoch"] = number
            elif short in _METRIC_FIELDS:
                named[_METRIC_FIELDS[short]] = number
            else:
                extra[name] = number
        return _emit(TrainStep(step=step_value, metrics=extra, **named), run_id, emitter, "log_metrics")
    except EventError as exc:
        telemetry_warning(f"metrics:{exc.field}", "log_metrics ignored an event: %s", exc)
    except Exception as exc:
        telemetry_warning("metrics", "log_metrics failed: %s: %s", type(exc).__name__, exc)
    return None
