"""What a training run shows while it trains: a progress line with the step and reward, the full logs in a file.

Hugging Face's ``Trainer`` prints every log as a Python dict (``ProgressCallback`` under its tqdm
bar, ``PrinterCallback`` without one): with TRL's GRPO metrics, a line of several hundred
characters per step. :func:`show_training_progress` replaces those printers with
:class:`TrainingProgress`, which shows one :class:`~trainwire.progress.Progress` line (the step,
the mean reward, the loss; only when stderr is a terminal) and appends every log, whole, to a
JSONL file::

    progress = show_training_progress(trainer, Path("run/training_log.jsonl"))
    trainer.train()
    print(f"training logs: {progress.path}")
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, Any

from trainwire.errors import MissingExtraError
from trainwire.private_files import open_private, private_dir
from trainwire.progress import Progress

try:
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtraError("train", "trainwire.producers.training_log") from exc

__all__ = ["TrainingProgress", "show_training_progress"]


class TrainingProgress(TrainerCallback):
    """A ``TrainerCallback``: a progress line (step, reward, loss) while training, every log to ``path`` (JSONL).

    Each line of the file is one of the trainer's logs with its ``step`` (the optimizer step).
    """

    def __init__(self, path: Path):
        self.path = path
        self.logs_written = 0
        self._file: IO[str] | None = None
        self._progress: Progress | None = None
        self._latest: dict[str, float] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Open the log file (appending) and start the progress line."""
        private_dir(self.path.parent)
        self._file = open_private(self.path, "a", encoding="utf-8")
        self._progress = Progress("training", total=state.max_steps or None, status=self._status(state))
        self._progress.__enter__()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Move the progress line to the step just done."""
        if self._progress is not None:
            self._progress.update(state.global_step, self._status(state))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Append ``logs`` to the file, and show its reward and loss."""
        if not logs or not getattr(state, "is_world_process_zero", True):
            return
        self._latest.update({k: v for k, v in logs.items() if k in ("reward", "loss") and _number(v)})
        if self._file is not None:
            record = {"step": state.global_step, **{k: None if _not_finite(v) else v for k, v in logs.items()}}
            self._file.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
            self._file.flush()
            self.logs_written += 1
        if self._progress is not None:
            self._progress.update(state.global_step, self._status(state))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Close the log file and end the progress line."""
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def _status(self, state: Any) -> str:
        parts = [f"step {state.global_step}/{state.max_steps}"]
        parts += [f"{name} {self._latest[name]:.3f}" for name in ("reward", "loss") if name in self._latest]
        return " · ".join(parts)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not _not_finite(value)


def _not_finite(value: Any) -> bool:
    """True for NaN and the infinities (JSON has none: they are written as null)."""
    return isinstance(value, float) and not math.isfinite(value)


def show_training_progress(trainer: Any, path: Path) -> TrainingProgress:
    """Replace ``trainer``'s log printers by a :class:`TrainingProgress` writing to ``path``; return it."""
    for printer in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(printer)
    progress = TrainingProgress(path)
    trainer.add_callback(progress)
    return progress
