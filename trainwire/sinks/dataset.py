"""Fine-tuning data files: the three formats, the streaming sink, and ``trainwire export``.

Formats (one JSON object per line, UTF-8, whatever the file's suffix):

- ``alpaca``: ``{"instruction", "input", "output"}``. A text prompt is the instruction and
  ``input`` is ''. For a chat prompt the instruction is the *last user message*; ``input`` holds
  the rest of the prompt (the system message and earlier turns) as ``role: content`` lines, ''
  when the prompt is that one user message. ``output`` is the completion.
- ``sharegpt``: ``{"conversations": [{"from", "value"}, ...]}`` with ``from`` ``system``,
  ``human`` (user), ``gpt`` (assistant) or ``observation`` (tool/function); the completion is
  the last ``gpt`` turn. A text prompt is one ``human`` turn.
- ``openai``: ``{"messages": [...]}``, the prompt's chat messages as they were logged (a text
  prompt becomes one ``user`` message) followed by ``{"role": "assistant", "content": completion}``.

:class:`DatasetSink` writes examples as they come, one file per split (``FILE`` without splits;
``{stem}_train{suffix}``, ``_val``, ``_test`` next to it with splits), appending. ``flush``
flushes and fsyncs. It keeps the ids of the interactions it wrote in ``{FILE}.ids`` (fsynced
after the data), so a replay after a crash does not write an example twice; a line torn by a
crash is cut off when the sink opens the file again.

``trainwire export`` (:data:`export_command`) runs the same filter
(:class:`~trainwire.processors.dataset.DatasetFilter`) and the same writers over the
interactions stored in ClickHouse, joined with their latest successful judge score.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click
import orjson

from trainwire.config import Settings
from trainwire.errors import ConfigError, TrainwireError
from trainwire.events import Interaction, Prompt
from trainwire.processors.dataset import (
    DEDUP_FIELDS,
    DROP_REASONS,
    DatasetConfig,
    DatasetFilter,
    TrainingExample,
    content_text,
    parse_split_ratio,
)

__all__ = [
    "FORMATS",
    "DatasetSink",
    "ExportSummary",
    "export_command",
    "export_dataset",
    "split_paths",
    "to_alpaca",
    "to_openai",
    "to_sharegpt",
]


# --------------------------------------------------------------------------- formats


def _messages(prompt: Prompt) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def to_alpaca(prompt: Prompt, completion: str) -> dict[str, str]:
    """An alpaca record: instruction = the (last user) prompt, input = the rest of a chat prompt."""
    if isinstance(prompt, str):
        return {"instruction": prompt, "input": "", "output": completion}
    last_user = max((i for i, m in enumerate(prompt) if m.get("role") == "user"), default=len(prompt) - 1)
    context = [f"{m.get('role')}: {content_text(m.get('content'))}" for i, m in enumerate(prompt) if i != last_user]
    instruction = content_text(prompt[last_user].get("content")) if prompt else ""
    return {"instruction": instruction, "input": "\n".join(context), "output": completion}


_SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation"}
_SHAREGPT_ROLES["function"] = "observation"


def to_sharegpt(prompt: Prompt, completion: str) -> dict[str, list[dict[str, str]]]:
    """A ShareGPT record: the prompt's turns then the completion as a ``gpt`` turn."""
    turns = [
        {"from": _SHAREGPT_ROLES.get(str(m.get("role")), str(m.get("role"))), "value": content_text(m.get("content"))}
        for m in _messages(prompt)
    ]
    turns.append({"from": "gpt", "value": completion})
    return {"conversations": turns}


def to_openai(prompt: Prompt, completion: str) -> dict[str, list[dict[str, Any]]]:
    """An OpenAI chat fine-tuning record: the prompt's messages then the assistant's completion."""
    return {"messages": [*(dict(m) for m in _messages(prompt)), {"role": "assistant", "content": completion}]}


FORMATS: dict[str, Callable[[Prompt, str], dict[str, Any]]] = {
    "alpaca": to_alpaca,
    "sharegpt": to_sharegpt,
    "openai": to_openai,
}
"""Writer of each format: ``(prompt, completion) -> record``."""


def _writer(fmt: str) -> Callable[[Prompt, str], dict[str, Any]]:
    try:
        return FORMATS[fmt]
    except KeyError:
        raise ConfigError("format", f"{fmt!r} is not one of {', '.join(FORMATS)}") from None


def split_paths(output: Path, splits: Iterable[str]) -> dict[str | None, Path]:
    """Where each split goes: ``{None: output}`` without splits, else ``{stem}_{split}{suffix}`` beside it."""
    output = Path(output)
    splits = tuple(splits)
    if not splits:
        return {None: output}
    return {name: output.with_name(f"{output.stem}_{name}{output.suffix}") for name in splits}


# --------------------------------------------------------------------------- the sink


def _cut_torn_line(path: Path) -> None:
    """Truncate ``path`` after its last newline (a crash may have left half a line)."""
    with open(path, "r+b") as handle:
        end = handle.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            start = max(0, pos - 65536)
            handle.seek(start)
            chunk = handle.read(pos - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                cut = start + newline + 1
                if cut != end:
                    handle.truncate(cut)
                return
            pos = start
        handle.truncate(0)


class DatasetSink:
    """Appends training examples, in one format, to one file per split; ``flush`` makes them durable.

    ``append=False`` starts the files afresh (a batch export); ``track_ids=False`` skips the
    ``.ids`` file (then a replay may write an example again).
    """

    def __init__(
        self,
        output: Path | str,
        fmt: str = "alpaca",
        splits: Iterable[str] = (),
        *,
        append: bool = True,
        track_ids: bool = True,
    ):
        self.output = Path(output)
        self.format = fmt
        self._write_record = _writer(fmt)
        self.paths = split_paths(self.output, splits)
        self.counts: dict[str | None, int] = dict.fromkeys(self.paths, 0)
        self.skipped = 0
        self._ids_path = self.output.with_name(self.output.name + ".ids") if track_ids else None
        self._written: set[str] = set()
        self._files: dict[str | None, IO[bytes]] = {}
        self._ids: IO[bytes] | None = None
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            mode = "ab" if append else "wb"
            for split, path in self.paths.items():
                if append and path.exists():
                    _cut_torn_line(path)
                self._files[split] = open(path, mode)  # noqa: SIM115 - held until close
            if self._ids_path is not None:
                if append and self._ids_path.exists():
                    _cut_torn_line(self._ids_path)
                    self._written = set(self._ids_path.read_text().split())
                self._ids = open(self._ids_path, mode)  # noqa: SIM115 - held until close
        except OSError as exc:
            self.close()
            raise TrainwireError(f"cannot open the dataset files at {self.output}: {exc}") from exc

    def add(self, example: TrainingExample) -> bool:
        """Write one example to its split's file; False if its interaction was written before."""
        if example.split not in self._files:
            known = ", ".join(map(str, self.paths))
            raise ConfigError(
                "split", f"example {example.source_id!r} has split {example.split!r}; this sink writes {known}"
            )
        if example.source_id and example.source_id in self._written:
            self.skipped += 1
            return False
        record = self._write_record(example.prompt, example.completion)
        try:
            self._files[example.split].write(orjson.dumps(record) + b"\n")
            if self._ids is not None and example.source_id:
                self._ids.write(example.source_id.encode() + b"\n")
        except OSError as exc:
            raise TrainwireError(f"cannot write to {self.paths[example.split]}: {exc}") from exc
        if example.source_id:
            self._written.add(example.source_id)
        self.counts[example.split] += 1
        return True

    def flush(self) -> None:
        """Flush and fsync every data file, then the ids file."""
        handles = [*self._files.values(), *([self._ids] if self._ids is not None else [])]
        for handle in handles:
            try:
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as exc:
                raise TrainwireError(f"cannot flush {handle.name}: {exc}") from exc

    def close(self) -> None:
        """Flush and close the files (safe to call twice)."""
        handles = [*self._files.values(), *([self._ids] if self._ids is not None else [])]
        if handles and not any(h.closed for h in handles):
            self.flush()
        for handle in handles:
            handle.close()

    def __enter__(self) -> DatasetSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- batch export


_EXPORT_SQL = """
SELECT i.event_id AS event_id, i.run_id AS run_id, i.prompt AS prompt, i.prompt_messages AS prompt_messages,
       i.completion AS completion, i.reward AS reward, i.success AS success, j.score AS judge_score
FROM (
    SELECT event_id, run_id, ts, prompt, prompt_messages, completion, reward, success
    FROM interactions FINAL
    WHERE {run:String} = '' OR run_id = {run:String}
) AS i
LEFT JOIN (
    SELECT interaction_id, argMax(score_normalized, ts) AS score
    FROM judge_scores FINAL
    WHERE success AND score_normalized IS NOT NULL
    GROUP BY interaction_id
) AS j ON i.event_id = j.interaction_id
ORDER BY i.ts, i.event_id
SETTINGS join_use_nulls = 1
"""


@dataclass(slots=True)
class ExportSummary:
    """What an export read, kept and dropped (by reason), and wrote where (per split)."""

    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    splits: dict[str | None, int] = field(default_factory=dict)
    paths: dict[str | None, Path] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The summary as printable lines."""
        out = [f"read {self.read} interactions: kept {self.kept}, dropped {sum(self.dropped.values())}"]
        for reason in DROP_REASONS:
            if self.dropped.get(reason):
                out.append(f"  dropped {reason}: {self.dropped[reason]}")
        for split, path in self.paths.items():
            out.append(f"  {split or 'all'}: {self.splits.get(split, 0)} -> {path}")
        return out


def _interaction(row: dict[str, Any]) -> Interaction:
    prompt: Prompt = orjson.loads(row["prompt_messages"]) if row["prompt_messages"] else row["prompt"]
    return Interaction(prompt=prompt, completion=row["completion"], reward=row["reward"], success=row["success"])


def export_dataset(
    store: Any,
    config: DatasetConfig,
    fmt: str,
    output: Path,
    *,
    shuffle: bool = True,
    run: str | None = None,
) -> ExportSummary:
    """Filter the stored interactions (oldest first) and write the kept ones in ``fmt`` to ``output``.

    Dedup keeps the oldest copy. With ``shuffle`` the kept examples are shuffled with
    ``config.seed`` before ``config.limit`` takes the first ones, so a limit draws a random,
    reproducible subset; without it, the oldest are taken.
    """
    _writer(fmt)
    rows = store.query_rows(_EXPORT_SQL, {"run": run or ""})
    flt = DatasetFilter(dataclasses.replace(config, limit=None))
    examples = []
    for row in rows:
        out = flt.check(_interaction(row), row["judge_score"], source_id=row["event_id"], run_id=row["run_id"])
        if isinstance(out, TrainingExample):
            examples.append(out)
    if shuffle:
        random.Random(config.seed).shuffle(examples)
    if config.limit is not None and len(examples) > config.limit:
        flt.drop("limit", len(examples) - config.limit)
        examples = examples[: config.limit]
    with DatasetSink(output, fmt, config.splits, append=False, track_ids=False) as sink:
        for example in examples:
            sink.add(example)
    return ExportSummary(
        read=len(rows),
        kept=len(examples),
        dropped={k: v for k, v in flt.dropped.items() if v},
        splits=dict(sink.counts),
        paths=dict(sink.paths),
    )


@click.command("export")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="alpaca", show_default=True)
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), required=True, help="JSONL file to write.")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Keep at most N examples.")
@click.option("--deduplicate/--no-deduplicate", default=True, show_default=True, help="Drop repeated content.")
@click.option("--dedup-field", type=click.Choice(list(DEDUP_FIELDS)), default="prompt", show_default=True)
@click.option("--min-length", type=click.IntRange(min=0), default=None, help="Minimum completion characters.")
@click.option("--max-length", type=click.IntRange(min=0), default=None, help="Maximum completion characters.")
@click.option("--split-ratio", default=None, help="train,val[,test] shares, e.g. 0.8,0.1,0.1 (one file per split).")
@click.option("--shuffle/--no-shuffle", default=True, show_default=True, help="Shuffle (with --seed) before --limit.")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the shuffle and the split hash.")
@click.option("--run", default=None, help="Only this run's interactions.")
@click.option("--min-reward", type=float, default=None, help="Drop interactions with a lower (or no) reward.")
@click.option("--min-judge-score", type=float, default=None, help="Drop those with a lower (or no) judge score.")
@click.pass_obj
def export_command(
    settings: Settings,
    fmt: str,
    output: Path,
    limit: int | None,
    deduplicate: bool,
    dedup_field: str,
    min_length: int | None,
    max_length: int | None,
    split_ratio: str | None,
    shuffle: bool,
    seed: int,
    run: str | None,
    min_reward: float | None,
    min_judge_score: float | None,
) -> None:
    """Write fine-tuning data (alpaca, sharegpt, openai JSONL) from the interactions in the store.

    Keeps successful interactions with a prompt and a completion (and the optional reward,
    judge-score and length limits), drops duplicates, splits by a stable hash, and prints how
    many were kept and why the others were dropped.
    """
    from trainwire.store.clickhouse import open_store

    try:
        config = DatasetConfig(
            min_reward=min_reward,
            min_judge_score=min_judge_score,
            min_length=min_length,
            max_length=max_length,
            deduplicate=deduplicate,
            dedup_field=dedup_field,
            split_ratio=parse_split_ratio(split_ratio) if split_ratio else None,
            limit=limit,
            seed=seed,
        )
    except ConfigError as exc:
        raise click.BadParameter(exc.problem, param_hint=f"--{exc.setting.replace('_', '-')}") from None
    with open_store(settings) as store:
        summary = export_dataset(store, config, fmt, output, shuffle=shuffle, run=run)
    for line in summary.lines():
        click.echo(line)
