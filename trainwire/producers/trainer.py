"""The training-loop hook: TRL's ``GRPOTrainer`` and the Hugging Face ``Trainer``.

Two lines in a GRPO script::

    trainer = GRPOTrainer(model=..., reward_funcs=[accuracy, fmt], args=args, train_dataset=ds)
    instrument_trainer(trainer, run_id="grpo-7")  # add log_token_stats=True for per-token logprobs
    trainer.train()

and one with any ``Trainer``: ``Trainer(..., callbacks=[TrainwireCallback(run_id="sft-3")])``.

What goes on the bus:

- ``train_step``: at every logging step, every number the trainer logs (loss, grad_norm,
  learning_rate, epoch as fields; reward mean/std, per-reward-function means, kl, entropy,
  completion lengths, step_time, ... in ``metrics``), from the callback's ``on_log``; for a GRPO
  run also its sampling parameters (``sampling_args/top_p``, ...: :func:`sampling_parameters`).
- ``interaction`` (GRPO): one per sampled completion, with the prompt, the completion, every
  reward function's value (``rewards``), the weighted total (``reward``, TRL's ``reward_weights``),
  the group (``group_id = "{step}:{prompt index}"``, ``group_index`` = which of the
  ``num_generations`` samples), the advantage, token counts, the dataset's extra columns and the
  columns reward functions log with TRL's ``log_extra(column, values)`` (``metadata``). Metrics
  they log with ``log_metric(name, value)`` are in TRL's logs, so in the step's ``train_step``.
  ``step`` is the optimizer step that trains on the completion: the same number as the
  ``train_step`` event that logs its reward means (TRL's ``global_step + 1`` at scoring).

How: the reward functions are wrapped (``functools.wraps``, the name kept, async kept async) so
each one's values are recorded; reward *models* (``nn.Module`` entries of ``reward_funcs``, which
TRL runs itself) are read from the scores TRL computed, by wrapping its ``_calculate_rewards`` (no
extra forward pass), under TRL's name for them (the checkpoint's last path component).
:func:`instrument_trainer` also wraps the trainer's ``_generate_and_score_completions``: when it
returns, the batch is scored, and the hook adds the advantages and prompt lengths TRL computed
and, with ``log_token_stats``, tags each row so the per-token logprobs and entropies that the loss
computation already produces are attached to the interaction (no extra forward pass). Without a
trainer, :func:`instrument_reward_funcs` alone emits each batch as soon as every function scored
it (no advantage, no reward models).

Telemetry never hurts the run: every hook catches its own errors and logs them, rate-limited;
events go through the non-blocking :class:`~trainwire.bus.Emitter`, flushed at the end of training.
The callback hands a step's events to the emitter together, at most once a second
(``hand_over_every_s``): waking the emitter's thread is what costs the training thread time.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import logging
import math
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainwire.bus import Emitter, get_emitter
from trainwire.errors import MissingExtraError
from trainwire.events import Event, Interaction, Payload, Source, TrainStep

try:
    import torch
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtraError("train", "trainwire.producers.trainer") from exc

__all__ = [
    "RUN_ID_ENV",
    "SAMPLING_PREFIX",
    "TrainwireCallback",
    "default_run_id",
    "instrument_reward_funcs",
    "instrument_trainer",
    "sampling_parameters",
    "train_step_from_logs",
]

logger = logging.getLogger("trainwire.trainer")

RUN_ID_ENV = "TRAINWIRE_RUN_ID"
"""Environment variable naming the run when no ``run_id`` is given."""

ROW_TAG = "trainwire_row"
"""Key added to TRL's generation batch (with ``log_token_stats``) to find each row after shuffling."""

_MAX_HELD = 10_000
"""How many held events make the callback's telemetry hand them over before the step ends."""

_SCORING_ARGS = frozenset({"inputs", "prompts", "completions", "completion_ids_list"})
"""The arguments of TRL's ``_calculate_rewards`` the reward-model hook reads."""
_TRL_NOT_COLUMNS = frozenset({"prompt", "completion", "completion_ids"})
"""Keys of TRL's inputs that it does not pass to reward functions as dataset columns."""

SAMPLING_PREFIX = "sampling_args/"
"""Prefix of the ``train_step`` metrics holding a GRPO run's sampling parameters (:func:`sampling_parameters`)."""

_NAMED_LOG_KEYS = ("loss", "grad_norm", "learning_rate", "epoch")
_NOT_COLUMNS = frozenset(
    {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)


# --------------------------------------------------------------------------- plumbing


class _RateLimitedLog:
    """Log each kind of telemetry failure at most once per ``every_s`` seconds."""

    def __init__(self, every_s: float = 30.0):
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.every_s:
            self._last[key] = now
            logger.warning(msg, *args, exc_info=sys.exc_info()[0] is not None)


def default_run_id(args: Any = None) -> str:
    """The run id when none is given: ``$TRAINWIRE_RUN_ID``, else ``args.run_name``, else the output dir + time."""
    env = os.environ.get(RUN_ID_ENV)
    if env:
        return env
    run_name = getattr(args, "run_name", None)
    if run_name:
        return str(run_name)
    stem = Path(str(getattr(args, "output_dir", None) or "run")).name or "run"
    return f"{stem}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


class _Telemetry:
    """What the callback and the reward-function wrappers share: the run id, the emitter, the error log.

    With ``hold_s`` (the callback's telemetry), events wait in an outbox until :meth:`hand_over`,
    which the callback calls at the end of every optimizer step (in ``on_log`` when it logs) and
    which gives them to the emitter once ``hold_s`` seconds passed since it last did (the very
    first event goes at once). Each hand-over wakes the emitter's thread, which then takes the GIL
    from the training thread twice (to wake up, and a linger later to serialize the batch): that
    is what the hook costs a step, far more than building the events, so fewer and larger
    hand-overs keep short steps cheap.
    """

    def __init__(self, run_id: str | None, emitter: Emitter | None, library: str, *, hold_s: float | None = None):
        self._run_id = run_id
        self._emitter = emitter
        self.library = library
        self.log = _RateLimitedLog()
        self._hold_s = hold_s or 0.0
        # a deque: async reward functions record (and so emit) on TRL's event-loop thread
        self._outbox: deque[Event] | None = None if hold_s is None else deque()
        self._handed_at = -math.inf
        self._hand_over_lock = threading.Lock()
        self._exit_hook = False

    @property
    def run_id(self) -> str:
        if self._run_id is None:
            self._run_id = default_run_id()
        return self._run_id

    def resolve_run_id(self, args: Any) -> None:
        if self._run_id is None:
            self._run_id = default_run_id(args)

    @property
    def emitter(self) -> Emitter:
        if self._emitter is None:  # the process-wide one; a given emitter is kept even when closed (it spools)
            return get_emitter()
        return self._emitter

    def emit(self, payload: Payload) -> None:
        try:
            event = Event(run_id=self.run_id, payload=payload, source=Source.current(self.library))
            outbox = self._outbox
            if outbox is None:
                self.emitter.emit(event)
                return
            outbox.append(event)
            # the first event goes at once (see hand_over); later ones wait for a step end, unless
            # there is none for a long while (e.g. a long evaluation)
            if not self._exit_hook or len(outbox) >= _MAX_HELD:
                self.hand_over()
        except Exception:  # telemetry must never stop training
            self.log.warning("emit", "trainwire: could not emit a %s event", payload.EVENT_TYPE)

    def hand_over(self, *, when_due: bool = False) -> None:
        """Give the held events to the emitter in order; with ``when_due``, only once ``hold_s`` has passed."""
        outbox = self._outbox
        if not outbox:
            return
        now = time.monotonic()
        if when_due and now - self._handed_at < self._hold_s:
            return
        self._handed_at = now
        try:
            emitter = self.emitter
            with self._hand_over_lock:
                while outbox:
                    emitter.emit(outbox.popleft())
                if not self._exit_hook:
                    # registered once the emitter has started (and registered its own close), so that
                    # it runs first at exit (last registered, first run): a run that dies mid-step
                    # still delivers what it held
                    atexit.register(_hand_over_at_exit, weakref.ref(self))
                    self._exit_hook = True
        except Exception:
            self.log.warning("emit", "trainwire: could not hand events to the emitter")

    def flush(self, timeout: float) -> None:
        self.hand_over()
        try:
            self.emitter.flush(timeout)
        except Exception:
            self.log.warning("flush", "trainwire: flushing the emitter failed")


def _hand_over_at_exit(ref: weakref.ref[_Telemetry]) -> None:
    telemetry = ref()
    if telemetry is not None:
        telemetry.hand_over()


# --------------------------------------------------------------------------- train_step


def train_step_from_logs(logs: dict[str, Any], step: int) -> TrainStep:
    """A ``train_step`` payload from one ``Trainer.log`` dict: the named fields, every other number in ``metrics``."""
    named: dict[str, float | None] = dict.fromkeys(_NAMED_LOG_KEYS)
    metrics: dict[str, float] = {}
    for key, value in logs.items():
        number = _number(value)
        if number is None:
            continue
        if key in named:
            named[key] = number
        else:
            metrics[key] = number
    return TrainStep(step=int(step), metrics=metrics, **named)


def sampling_parameters(args: Any) -> dict[str, float]:
    """The sampling parameters of a GRPO run's arguments, as ``train_step`` metrics (none for other trainers).

    ``sampling_args/temperature``, ``/top_p``, ``/top_k``, ``/min_p`` (when set) and
    ``/importance_sampling_correction`` (1.0 when TRL corrects the vLLM sampler's logprobs with
    importance sampling: ``use_vllm`` and ``vllm_importance_sampling_correction``). Recorded with
    every step so that ``trainwire audit`` can tell truncated sampling combined with that correction.
    """
    if not hasattr(args, "top_p"):
        return {}
    values = {name: getattr(args, name, None) for name in ("temperature", "top_p", "top_k", "min_p")}
    correction = bool(getattr(args, "use_vllm", False) and getattr(args, "vllm_importance_sampling_correction", False))
    values["importance_sampling_correction"] = float(correction)
    numbers = {name: _number(value) for name, value in values.items()}
    return {f"{SAMPLING_PREFIX}{name}": number for name, number in numbers.items() if number is not None}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    try:  # numpy scalars and the like
        return float(value) if hasattr(value, "__float__") and not isinstance(value, str) else None
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- the callback


class TrainwireCallback(TrainerCallback):
    """A ``TrainerCallback`` that emits a ``train_step`` event per logging step and flushes at the end.

    Args:
        run_id: the run the events belong to (default: ``$TRAINWIRE_RUN_ID``, the trainer's
            ``run_name``, or the output directory's name and the start time).
        emitter: where to emit (default: the process-wide :func:`~trainwire.bus.get_emitter`).
        log_token_stats: with :func:`instrument_trainer`, put each completion's per-token
            logprobs and entropies in the interaction's metadata.
        flush_timeout_s: how long ``on_train_end`` waits for the events to be delivered or spooled.
        hand_over_every_s: events are given to the emitter at the end of a step once this long
            has passed since the last time (0: every step), and always at the end of training and
            at exit (also after a crash).
    """

    def __init__(
        self,
        run_id: str | None = None,
        emitter: Emitter | None = None,
        log_token_stats: bool = False,
        flush_timeout_s: float = 30.0,
        hand_over_every_s: float = 1.0,
    ):
        self.log_token_stats = log_token_stats
        self.flush_timeout_s = flush_timeout_s
        self._telemetry = _Telemetry(run_id, emitter, "transformers", hold_s=hand_over_every_s)
        self._collectors: list[_RolloutCollector] = []

    @property
    def run_id(self) -> str:
        """The run id events are emitted under."""
        return self._telemetry.run_id

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Fix the run id (from the training arguments when none was given)."""
        try:
            self._telemetry.resolve_run_id(args)
        except Exception:
            self._telemetry.log.warning("begin", "trainwire: on_train_begin failed")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Hand the held events to the emitter when due, unless the trainer logs now (``on_log`` does it then)."""
        if not getattr(control, "should_log", False):
            self._telemetry.hand_over(when_due=True)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Emit the logged numbers as a ``train_step`` event (on the main process only); hand over when due."""
        try:
            if logs and getattr(state, "is_world_process_zero", True):
                step = train_step_from_logs(logs, state.global_step)
                step.metrics.update(sampling_parameters(args))
                self._telemetry.emit(step)
        except Exception:
            self._telemetry.log.warning("on_log", "trainwire: could not record a train_step")
        self._telemetry.hand_over(when_due=True)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Emit interactions still waiting for token statistics, then flush the emitter."""
        for collector in self._collectors:
            collector.release_waiting(mode=None)
        self._telemetry.flush(self.flush_timeout_s)


# --------------------------------------------------------------------------- rollouts


@dataclass
class _Batch:
    """One call of the reward functions: the completions and each function's values for them."""

    prompts: list[Any]
    completions: list[Any]
    completion_ids: list[Any] | None
    columns: dict[str, list[Any]]
    global_step: int | None
    values: dict[int, list[float]] = field(default_factory=dict)


class _RolloutCollector:
    """Joins the reward functions' values per batch and turns complete batches into interactions."""

    def __init__(
        self,
        telemetry: _Telemetry,
        names: Sequence[str],
        weights: Sequence[float] | None = None,
        num_generations: int | None = None,
        max_pending: int = 8,
    ):
        self.telemetry = telemetry
        self.names = list(names)
        self.weights = [float(w) for w in weights] if weights is not None else [1.0] * len(self.names)
        self.num_generations = num_generations
        # positions whose values are recorded: the wrapped functions, and reward models once hook_reward_models ran
        self.recorded: set[int] = set()
        self.trainer: Any = None  # set by instrument_trainer: batches wait for finish_generation (the advantages)
        self.log_token_stats = False
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._pending: list[_Batch] = []
        self._waiting: dict[int, tuple[str, Interaction]] = {}  # row tag -> (mode, interaction)
        self._batch_seq = 0
        self._loss_inputs: Any = None

    # ---- reward function side

    def record(
        self, position: int, kwargs: dict[str, Any], result: Any, logged: dict[str, list[Any]] | None = None
    ) -> None:
        """Record one reward function's values for the batch ``kwargs`` describes.

        ``logged``: the columns the function logged with TRL's ``log_extra`` (one value per
        completion), which go to the interactions' metadata like the dataset's columns (a logged
        column wins over a dataset column of the same name).
        """
        completions = kwargs.get("completions")
        if completions is None:
            self.telemetry.log.warning("args", "trainwire: a reward function was called without completions=")
            return
        values = [math.nan if v is None else float(v) for v in result]
        with self._lock:
            batch = next((b for b in self._pending if b.completions is completions), None)
            if batch is None:
                state = kwargs.get("trainer_state")
                batch = _Batch(
                    prompts=list(kwargs.get("prompts") or [None] * len(completions)),
                    completions=completions,
                    completion_ids=kwargs.get("completion_ids"),
                    columns={k: v for k, v in kwargs.items() if k not in _NOT_COLUMNS and isinstance(v, list)},
                    global_step=getattr(state, "global_step", None),
                )
                self._pending.append(batch)
                if len(self._pending) > self._max_pending:
                    dropped = self._pending.pop(0)
                    self.telemetry.log.warning(
                        "incomplete",
                        "trainwire: dropped a batch of %d completions not scored by every reward function",
                        len(dropped.completions),
                    )
            batch.values[position] = values
            batch.columns.update(logged or {})
            # with a trainer, finish_generation takes the batch once TRL's scoring is over, even if a
            # recording failed; without one, the batch is over once every function recorded
            if self.trainer is not None or len(batch.values) < len(self.recorded):
                return
            self._pending.remove(batch)
        for interaction in self._interactions(batch):
            self.telemetry.emit(interaction)

    # ---- trainer side (instrument_trainer)

    def begin_generation(self, mode: str) -> None:
        """Before TRL generates a batch: emit what a failed call left and ``mode``'s rows waiting for token stats."""
        with self._lock:
            leftovers, self._pending = self._pending, []
        for batch in leftovers:
            for interaction in self._interactions(batch):
                self.telemetry.emit(interaction)
        self.release_waiting(mode)

    def finish_generation(self, output: dict[str, Any], mode: str) -> None:
        """After TRL scored a batch: add advantages and prompt lengths; emit, or tag rows for token stats."""
        with self._lock:
            batches, self._pending = self._pending, []
        trainer = self.trainer
        for batch in batches:
            n = len(batch.completions)
            advantages = _column(output.get("advantages"), n) if len(batches) == 1 else None
            prompt_tokens = _column(_row_sums(output.get("prompt_mask")), n) if len(batches) == 1 else None
            if mode == "train":
                step = trainer.state.global_step + 1
                num_generations = getattr(trainer, "num_generations", None)
            else:
                step = trainer.state.global_step
                num_generations = getattr(trainer, "num_generations_eval", None) or getattr(
                    trainer, "num_generations", None
                )
            offset = _process_index(trainer) * n
            interactions = self._interactions(
                batch,
                step=step,
                num_generations=num_generations,
                offset=offset,
                advantages=advantages,
                prompt_tokens=prompt_tokens,
                mode=mode,
                model=_model_name(trainer),
            )
            tag_tensor = output.get("advantages")
            if self.log_token_stats and len(batches) == 1 and isinstance(tag_tensor, torch.Tensor):
                self._batch_seq += 1
                base = self._batch_seq << 24
                output[ROW_TAG] = torch.arange(base, base + n, dtype=torch.long, device=tag_tensor.device)
                with self._lock:
                    for i, interaction in enumerate(interactions):
                        self._waiting[base + i] = (mode, interaction)
            else:
                for interaction in interactions:
                    self.telemetry.emit(interaction)

    def take_token_stats(self, inputs: dict[str, Any], logps: Any, entropies: Any) -> None:
        """Attach the loss computation's per-token logprobs and entropies to the tagged rows and emit them."""
        tags = inputs[ROW_TAG].tolist()
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs and inputs["tool_mask"] is not None:
            mask = mask * inputs["tool_mask"]
        mask = mask.bool().cpu()
        logps = logps.detach().float().cpu()
        entropies = entropies.detach().float().cpu() if isinstance(entropies, torch.Tensor) else None
        ready = []
        with self._lock:
            for row, tag in enumerate(tags):
                item = self._waiting.pop(tag, None)
                if item is not None:
                    ready.append((row, item[1]))
        for row, interaction in ready:
            keep = mask[row]
            interaction.metadata["token_logprobs"] = [round(x, 6) for x in logps[row][keep].tolist()]
            if entropies is not None:
                interaction.metadata["token_entropies"] = [round(x, 6) for x in entropies[row][keep].tolist()]
            self.telemetry.emit(interaction)

    def release_waiting(self, mode: str | None) -> None:
        """Emit interactions still waiting for token stats (of ``mode``, or all), without them."""
        with self._lock:
            tags = [t for t, (m, _) in self._waiting.items() if mode is None or m == mode]
            items = [self._waiting.pop(t)[1] for t in tags]
        for interaction in items:
            self.telemetry.emit(interaction)

    # ---- building the events

    def _interactions(
        self,
        batch: _Batch,
        *,
        step: int | None = None,
        num_generations: int | None = None,
        offset: int = 0,
        advantages: list[float] | None = None,
        prompt_tokens: list[int] | None = None,
        mode: str = "train",
        model: str | None = None,
    ) -> list[Interaction]:
        if step is None and batch.global_step is not None:
            step = batch.global_step + 1
        num_generations = num_generations or self.num_generations
        positions = sorted(batch.values)
        out = []
        for i, completion in enumerate(batch.completions):
            rewards: dict[str, float] = {}
            total, scored = 0.0, False
            for pos in positions:
                value = batch.values[pos][i] if i < len(batch.values[pos]) else math.nan
                if math.isnan(value):
                    continue
                rewards[self.names[pos]] = value
                total += value * self.weights[pos]
                scored = True
            group_id = group_index = None
            if num_generations and step is not None:
                index = offset + i
                prefix = "" if mode == "train" else f"{mode}:"
                group_id = f"{prefix}{step}:{index // num_generations}"
                group_index = index % num_generations
            metadata = {k: _jsonable(v[i]) for k, v in batch.columns.items() if i < len(v)}
            if mode != "train":
                metadata["mode"] = mode
            text, messages = _completion_text(completion)
            if messages is not None:
                metadata["completion_messages"] = messages
            all_ids = batch.completion_ids
            ids = all_ids[i] if all_ids is not None and i < len(all_ids) else None
            out.append(
                Interaction(
                    prompt=_prompt(batch.prompts[i]),
                    completion=text,
                    reward=total if scored else None,
                    rewards=rewards,
                    prompt_tokens=prompt_tokens[i] if prompt_tokens is not None else None,
                    completion_tokens=len(ids) if ids is not None else None,
                    model=model,
                    step=step,
                    group_id=group_id,
                    group_index=group_index,
                    advantage=advantages[i] if advantages is not None else None,
                    metadata=metadata,
                )
            )
        return out

    # ---- hooks installed on the trainer

    def hook_reward_models(self, trainer: Any, positions: list[int]) -> None:
        """Record the reward models' values from the scores TRL computed (``rewards_per_func``), no extra forward."""
        original = trainer._calculate_rewards
        signature = inspect.signature(original)
        if not _SCORING_ARGS.issubset(signature.parameters):
            self.telemetry.log.warning(
                "reward-model", "trainwire: this TRL's _calculate_rewards is unknown; reward models are not recorded"
            )
            return
        self.recorded.update(positions)

        @functools.wraps(original)
        def calculate_rewards(*args: Any, **kwargs: Any) -> Any:
            rewards_per_func = original(*args, **kwargs)
            try:
                call = signature.bind(*args, **kwargs).arguments
                self.record_models(positions, call, rewards_per_func, _process_index(trainer))
            except Exception:
                self.telemetry.log.warning("reward-model", "trainwire: recording the reward models' values failed")
            return rewards_per_func

        trainer._calculate_rewards = calculate_rewards

    def record_models(
        self, positions: list[int], call: dict[str, Any], rewards_per_func: Any, process_index: int
    ) -> None:
        """Record the columns ``positions`` of TRL's ``rewards_per_func`` for the batch of ``call``."""
        inputs, completions = call["inputs"], call["completions"]
        n = len(completions)
        start = process_index * n  # rewards_per_func is gathered over the processes, in process order
        columns = rewards_per_func[start : start + n, positions].float().T.tolist()  # one device-to-host copy
        kwargs = {key: [row[key] for row in inputs] for key in inputs[0] if key not in _TRL_NOT_COLUMNS}
        kwargs.update(prompts=call["prompts"], completions=completions, completion_ids=call["completion_ids_list"])
        for position, values in zip(positions, columns, strict=True):
            self.record(position, kwargs, values)

    def hook_generation(self, trainer: Any) -> None:
        original = trainer._generate_and_score_completions

        @functools.wraps(original)
        def generate_and_score(*args: Any, **kwargs: Any) -> Any:
            mode = "train" if getattr(trainer.model, "training", True) else "eval"
            try:
                self.begin_generation(mode)
            except Exception:
                self.telemetry.log.warning("generation", "trainwire: preparing a generation batch failed")
            output = original(*args, **kwargs)
            try:
                if isinstance(output, dict):
                    self.finish_generation(output, mode)
            except Exception:
                self.telemetry.log.warning("generation", "trainwire: recording a generation batch failed")
            return output

        trainer._generate_and_score_completions = generate_and_score

    def hook_token_stats(self, trainer: Any) -> None:
        original_loss = trainer.compute_loss
        original_logps = trainer._get_per_token_logps_and_entropies

        @functools.wraps(original_loss)
        def compute_loss(model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            tagged = isinstance(inputs, dict) and ROW_TAG in inputs
            self._loss_inputs = inputs if tagged else None
            try:
                return original_loss(model, inputs, *args, **kwargs)
            finally:
                self._loss_inputs = None

        @functools.wraps(original_logps)
        def per_token_logps_and_entropies(*args: Any, **kwargs: Any) -> Any:
            result = original_logps(*args, **kwargs)
            inputs = self._loss_inputs
            if inputs is not None:
                self._loss_inputs = None  # the first call inside compute_loss is the policy's
                try:
                    self.take_token_stats(inputs, result[0], result[1])
                except Exception:
                    self.telemetry.log.warning("tokens", "trainwire: recording token statistics failed")
            return result

        trainer.compute_loss = compute_loss
        trainer._get_per_token_logps_and_entropies = per_token_logps_and_entropies


def _column(values: Any, n: int) -> list[Any] | None:
    if isinstance(values, torch.Tensor) and values.dim() == 1 and values.shape[0] == n:
        return values.tolist()
    if isinstance(values, list) and len(values) == n:
        return values
    return None


def _row_sums(mask: Any) -> Any:
    return mask.sum(dim=1) if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None


def _process_index(trainer: Any) -> int:
    return getattr(getattr(trainer, "accelerator", None), "process_index", 0)


def _model_name(trainer: Any) -> str | None:
    config = getattr(getattr(trainer, "model", None), "config", None)
    name = getattr(config, "_name_or_path", None)
    return str(name) if name else None


def _jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` if JSON can hold it, else its (shortened) text; keeps events encodable."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value
    if depth < 4 and isinstance(value, list | tuple):
        return [_jsonable(v, depth + 1) for v in value]
    if depth < 4 and isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    number = _number(value)
    if number is not None:
        return number
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _prompt(prompt: Any) -> Any:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt):
        return [{**_jsonable(m), "content": _jsonable(m.get("content", ""))} for m in prompt]
    return "" if prompt is None else str(prompt)


def _completion_text(completion: Any) -> tuple[str, list[Any] | None]:
    """The completion's text, and its chat messages when it is a conversation."""
    if isinstance(completion, str):
        return completion, None
    if isinstance(completion, list):
        parts = []
        for message in completion:
            content = message.get("content") if isinstance(message, dict) else message
            parts.append(content if isinstance(content, str) else str(_jsonable(content)))
        return "".join(parts), _jsonable(completion)
    return str(completion), None


# --------------------------------------------------------------------------- public helpers


def _reward_func_name(func: Any) -> str:
    """The name TRL gives a reward function (partials unwrapped, class instances by class name) or model."""
    if isinstance(func, torch.nn.Module):
        return str(getattr(getattr(func, "config", None), "_name_or_path", "")).split("/")[-1]
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


def _is_async(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)


def _wrap(func: Callable[..., Any], position: int, collector: _RolloutCollector) -> Callable[..., Any]:
    name = collector.names[position]
    collector.recorded.add(position)

    def record(kwargs: dict[str, Any], result: Any, logged: dict[str, list[Any]]) -> None:
        try:
            if result is not None:
                collector.record(position, kwargs, result, logged)
        except Exception:
            collector.telemetry.log.warning("reward", "trainwire: recording reward function %s failed", name)

    if _is_async(func):

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            logged = _capture_log_extra(kwargs)
            result = await func(*args, **kwargs)
            record(kwargs, result, logged)
            return result

        wrapper = async_wrapper
    else:

        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            logged = _capture_log_extra(kwargs)
            result = func(*args, **kwargs)
            record(kwargs, result, logged)
            return result

        wrapper = sync_wrapper
    if not isinstance(func, functools.partial) and hasattr(func, "__name__"):
        wrapper = functools.wraps(func)(wrapper)
    else:
        wrapper.__wrapped__ = func  # type: ignore[attr-defined]
    wrapper.__name__ = name
    wrapper.__qualname__ = name
    wrapper._trainwire_collector = collector  # type: ignore[attr-defined]
    return wrapper


def _capture_log_extra(kwargs: dict[str, Any]) -> dict[str, list[Any]]:
    """Replace TRL's ``log_extra`` in a reward function's ``kwargs`` by one that also keeps what is logged.

    Returns the columns the call logs (filled while it runs), each a list of one value per
    completion, as TRL's ``log_extra(column, values)`` takes them; TRL still gets every call.
    """
    logged: dict[str, list[Any]] = {}
    trl_log_extra = kwargs.get("log_extra")
    if not callable(trl_log_extra):
        return logged

    def log_extra(column: str, values: list[Any]) -> None:
        trl_log_extra(column, values)
        logged.setdefault(column, []).extend(values)

    kwargs["log_extra"] = log_extra
    return logged


def _unwrap(func: Any) -> Any:
    while getattr(func, "_trainwire_collector", None) is not None:
        func = func.__wrapped__
    return func


def instrument_reward_funcs(
    funcs: Callable[..., Any] | Sequence[Callable[..., Any]],
    *,
    run_id: str | None = None,
    emitter: Emitter | None = None,
    reward_weights: Sequence[float] | None = None,
    num_generations: int | None = None,
) -> list[Callable[..., Any]]:
    """Wrap GRPO reward functions so every scored completion becomes an ``interaction`` event.

    The wrappers share one collector: once every function has scored a batch, one event per
    completion is emitted with each function's value in ``rewards`` and the weighted total in
    ``reward``. Each wrapper keeps its function's name (TRL's metric names stay the same) and
    is async when the function is. Pass the result to ``GRPOTrainer(reward_funcs=...)``; to also
    get advantages and the values of reward models, use :func:`instrument_trainer` instead (it
    wraps the trainer's functions). Reward models (``nn.Module``) are returned as they are, and
    batches here complete without them.

    Args:
        funcs: a reward function or a list of them (sync or async callables, or reward models).
        run_id: the run the events belong to (default: ``$TRAINWIRE_RUN_ID`` or a generated one).
        emitter: where to emit (default: the process-wide emitter).
        reward_weights: TRL's ``reward_weights`` (default: 1.0 each), for the total.
        num_generations: TRL's ``num_generations``, to fill ``group_id`` and ``group_index``.
    """
    func_list = [funcs] if callable(funcs) else list(funcs)
    func_list = [_unwrap(f) for f in func_list]
    names = _unique_names([_reward_func_name(f) for f in func_list])
    if reward_weights is not None and len(reward_weights) != len(func_list):
        raise ValueError(f"{len(reward_weights)} reward_weights for {len(func_list)} reward functions")
    collector = _RolloutCollector(_Telemetry(run_id, emitter, "trl"), names, reward_weights, num_generations)
    return [f if isinstance(f, torch.nn.Module) else _wrap(f, i, collector) for i, f in enumerate(func_list)]


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def instrument_trainer(
    trainer: Any,
    *,
    run_id: str | None = None,
    emitter: Emitter | None = None,
    log_token_stats: bool | None = None,
) -> TrainwireCallback:
    """Hook trainwire into a trainer (TRL ``GRPOTrainer`` or any HF ``Trainer``); return its callback.

    Adds a :class:`TrainwireCallback` (or reuses the one already in ``trainer``'s callbacks) for
    ``train_step`` events. On a GRPO trainer it also wraps the reward functions and the batch
    scoring so each completion becomes an ``interaction`` with its rewards (reward models'
    included), group, advantage and dataset columns; with ``log_token_stats`` also its per-token
    logprobs and entropies. Calling it twice on the same trainer returns the same callback.

    Args:
        trainer: the trainer, before ``train()``.
        run_id: the run the events belong to (default: see :class:`TrainwireCallback`).
        emitter: where to emit (default: the process-wide emitter).
        log_token_stats: per-token logprobs and entropies in the metadata (default: the callback's setting).
    """
    existing = getattr(trainer, "_trainwire_callback", None)
    if isinstance(existing, TrainwireCallback):
        return existing
    handler = getattr(trainer, "callback_handler", None)
    callback = next((cb for cb in getattr(handler, "callbacks", []) if isinstance(cb, TrainwireCallback)), None)
    if callback is None:
        callback = TrainwireCallback(run_id=run_id, emitter=emitter, log_token_stats=bool(log_token_stats))
        trainer.add_callback(callback)
    else:
        if run_id is not None:
            callback._telemetry._run_id = run_id
        if emitter is not None:
            callback._telemetry._emitter = emitter
    if log_token_stats is not None:
        callback.log_token_stats = log_token_stats
    telemetry = callback._telemetry
    telemetry.resolve_run_id(getattr(trainer, "args", None))

    funcs = getattr(trainer, "reward_funcs", None)
    if isinstance(funcs, list) and funcs:
        telemetry.library = "trl"
        originals = [_unwrap(f) for f in funcs]
        names = getattr(trainer, "reward_func_names", None) or _unique_names([_reward_func_name(f) for f in originals])
        weights = getattr(trainer, "reward_weights", None)
        weights = weights.tolist() if isinstance(weights, torch.Tensor) else weights
        collector = _RolloutCollector(telemetry, names, weights, getattr(trainer, "num_generations", None))
        models = [i for i, f in enumerate(originals) if isinstance(f, torch.nn.Module)]
        trainer.reward_funcs = [
            f if i in models or not callable(f) else _wrap(f, i, collector) for i, f in enumerate(originals)
        ]
        if models and hasattr(trainer, "_calculate_rewards"):
            collector.hook_reward_models(trainer, models)
        if collector.recorded and hasattr(trainer, "_generate_and_score_completions"):
            collector.trainer = trainer
            collector.hook_generation(trainer)
            if callback.log_token_stats and hasattr(trainer, "_get_per_token_logps_and_entropies"):
                collector.log_token_stats = True
                collector.hook_token_stats(trainer)
        callback._collectors.append(collector)
    trainer._trainwire_callback = callback
    return callback
