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
flushes and fsyncs. It keeps the ids of the interactions it wrote, and where their lines end, in
``{FILE}.ids`` (written after the data is on disk), so that a replay after a crash writes each
example exactly once: lines no id names (half a line, lines whose ids were lost) are cut off when
the sink opens the files again.

``trainwire export`` (:data:`export_command`) runs the same filter
(:class:`~trainwire.processors.dataset.DatasetFilter`) and the same writers over the
interactions stored in ClickHouse, joined with their latest successful judge score. Without
``--output`` it writes ``training_data/{format}_YYYYMMDD_HHMMSS.jsonl`` (:func:`default_output`).
Its filter options are ``trainwire worker``'s too (:func:`dataset_filter_options`,
:func:`dataset_config`): one set of names for the stream and for the store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import click
import orjson

from trainwire.config import Settings
from trainwire.errors import ConfigError, TrainwireError
from trainwire.events import Interaction, Prompt
from trainwire.private_files import open_private, private_dir, replace_private
from trainwire.processors.dataset import (
    DEDUP_FIELDS,
    DROP_REASONS,
    INTERACTION_DEDUP_FIELDS,
    METADATA_PREFIX,
    SPLIT_NAMES,
    DatasetConfig,
    DatasetFilter,
    TrainingExample,
    content_text,
    parse_split_ratio,
    split_sizes,
)

__all__ = [
    "FORMATS",
    "DatasetSink",
    "ExportSummary",
    "dataset_config",
    "dataset_filter_options",
    "default_output",
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


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


@dataclass(frozen=True, slots=True)
class _Written:
    """One line of the ``.ids`` file: an example's interaction id, its split and its file's size after its line.

    ``source_id`` is '' for an example without one, and for how much of the file was there before
    the sink wrote to it; ``end`` None is a line of an older ``.ids`` file (the id alone).
    """

    source_id: str
    split: str | None
    end: int | None

    def line(self) -> bytes:
        if self.end is None:
            return f"{self.source_id}\n".encode()
        return f"{self.source_id}\t{self.split or ''}\t{self.end}\n".encode()

    @classmethod
    def parse(cls, line: str) -> _Written:
        if "\t" not in line:
            return cls(line, None, None)
        source_id, split, end = line.split("\t")
        return cls(source_id, split or None, int(end))


class DatasetSink:
    """Appends training examples, in one format, to one file per split; ``flush`` makes them durable.

    ``append=False`` starts the files afresh (a batch export); ``track_ids=False`` skips the
    ``.ids`` file (then a replay may write an example again).

    The ``.ids`` file says which interactions the files hold, and where each line ends. The
    order that keeps the two in agreement after a crash is :meth:`flush`'s: the data files are
    flushed and fsynced first, and only then are the ids of their new lines written (and
    fsynced). So an id never names a line that is not on disk; when the sink opens the files
    again, whatever follows the last line an id names (lines whose ids were lost, half a line)
    is cut off, and a replay writes those examples again, once.
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
        self._unflushed: list[_Written] = []  # ids of the lines written since the last flush
        self._files: dict[str | None, IO[bytes]] = {}
        self._ends: dict[str | None, int] = {}  # each file's size, with what is buffered
        self._ids: IO[bytes] | None = None
        self._write_failed: TrainwireError | None = None  # raised by every flush after a failed write
        try:
            private_dir(self.output.parent)
            named: set[str | None] = set()
            if self._ids_path is not None and append:
                named = self._agree_with_ids(self._ids_path)
            mode = "ab" if append else "wb"
            for split, path in self.paths.items():
                if append and self._ids_path is None and path.exists():
                    _cut_torn_line(path)
                self._files[split] = open_private(path, mode)  # held until close
                self._ends[split] = self._files[split].tell()
            if self._ids_path is not None:
                self._ids = open_private(self._ids_path, mode)  # held until close
                # Where each file no id names a line of starts: what is written after that is the sink's.
                self._unflushed = [_Written("", split, self._ends[split]) for split in self.paths if split not in named]
                self._write_ids()
        except OSError as exc:
            self.close()
            raise TrainwireError(f"cannot open the dataset files at {self.output}: {exc}") from exc

    def _agree_with_ids(self, ids_path: Path) -> set[str | None]:
        """Cut the data files back to the last line the ``.ids`` file names (and drop ids of lines not on disk).

        Returns the splits whose files the ids name a line end of.
        """
        if not ids_path.exists():
            return set()
        _cut_torn_line(ids_path)
        entries = []
        for number, line in enumerate(ids_path.read_text().splitlines(), 1):
            try:
                entries.append(_Written.parse(line))
            except ValueError:
                raise TrainwireError(
                    f"{ids_path}, line {number}: {line!r} is not 'id<TAB>split<TAB>end' (move the file aside to "
                    "start the ids afresh; a replay may then write examples twice)"
                ) from None
        sizes = {split: _size(path) for split, path in self.paths.items()}
        kept = [w for w in entries if w.end is None or w.split not in sizes or w.end <= sizes[w.split]]
        if len(kept) != len(entries):  # a data file was cut by something else than this sink
            replace_private(ids_path, b"".join(w.line() for w in kept))
        last_end: dict[str | None, int] = {}
        for w in kept:
            if w.end is not None and w.split in sizes:
                last_end[w.split] = w.end
        for split, end in last_end.items():
            if sizes[split] > end:
                with open(self.paths[split], "r+b") as handle:
                    handle.truncate(end)
        self._written = {w.source_id for w in kept if w.source_id}
        return set(last_end)

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
        line = orjson.dumps(self._write_record(example.prompt, example.completion)) + b"\n"
        try:
            self._files[example.split].write(line)
        except OSError as exc:
            # The example is not in the file: no later flush may succeed, or the checkpoint after it
            # would commit the record past it. The worker stops, and the restart writes it again.
            self._write_failed = TrainwireError(f"cannot write to {self.paths[example.split]}: {exc}")
            raise self._write_failed from exc
        self._ends[example.split] += len(line)
        if example.source_id:
            self._written.add(example.source_id)
        if self._ids is not None:
            self._unflushed.append(_Written(example.source_id, example.split, self._ends[example.split]))
        self.counts[example.split] += 1
        return True

    def flush(self) -> None:
        """Flush and fsync every data file, then write and fsync the ids of their new lines.

        Raises :class:`TrainwireError` if a file cannot be written, and after any write that failed
        (an example missing from the files must not be committed past).
        """
        if self._write_failed is not None:
            raise self._write_failed
        for handle in self._files.values():
            _sync(handle)
        self._write_ids()

    def _write_ids(self) -> None:
        if self._ids is None:
            return
        try:
            self._ids.write(b"".join(w.line() for w in self._unflushed))
        except OSError as exc:
            raise TrainwireError(f"cannot write to {self._ids.name}: {exc}") from exc
        _sync(self._ids)
        self._unflushed = []

    def close(self) -> None:
        """Flush and close the files (safe to call twice)."""
        handles = [*self._files.values(), *([self._ids] if self._ids is not None else [])]
        try:
            if handles and not any(h.closed for h in handles):
                self.flush()
        finally:
            for handle in handles:
                with contextlib.suppress(OSError):  # a failed flush said why already
                    handle.close()

    def __enter__(self) -> DatasetSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sync(handle: IO[bytes]) -> None:
    try:
        handle.flush()
        os.fsync(handle.fileno())
    except OSError as exc:
        raise TrainwireError(f"cannot flush {handle.name}: {exc}") from exc


# --------------------------------------------------------------------------- batch export


_EXPORT_SQL = """
SELECT i.event_id AS event_id, i.run_id AS run_id, i.prompt AS prompt, i.prompt_messages AS prompt_messages,
       i.completion AS completion, i.reward AS reward, i.success AS success, j.score AS judge_score{outer}
FROM (
    SELECT event_id, run_id, ts, prompt, prompt_messages, completion, reward, success{inner}
    FROM interactions FINAL
    WHERE {{run:String}} = '' OR run_id = {{run:String}}
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
_BASE_COLUMNS = ("prompt", "completion", "reward", "success")
"""The interaction columns every export reads (see :func:`_extra_column` for the dedup field's)."""


@dataclass(slots=True)
class ExportSummary:
    """What an export read, kept and dropped (by reason), and wrote where (per split).

    ``no_dedup_value`` counts kept examples that could not be deduplicated because they had no
    value for ``dedup_field``.
    """

    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    splits: dict[str | None, int] = field(default_factory=dict)
    paths: dict[str | None, Path] = field(default_factory=dict)
    dedup_field: str = "prompt"
    no_dedup_value: int = 0
    split_ratio: tuple[float, ...] | None = None

    def warnings(self) -> list[str]:
        """A line for each split with a share that came out empty, or more than 10 points off its share
        (too few examples to share them by the ratio)."""
        out = []
        ratio = self.split_ratio or ()
        for name, share in zip(SPLIT_NAMES, ratio, strict=False):
            count = self.splits.get(name, 0)
            if share <= 0 or not self.kept:
                continue
            ratio_text = "--split-ratio " + ",".join(f"{r:g}" for r in ratio)
            if count == 0:
                out.append(f"warning: the {name} split is empty: {self.kept} examples are too few for {ratio_text}")
            elif abs(count / self.kept - share) > 0.1:
                out.append(
                    f"warning: the {name} split got {count} of {self.kept} examples ({count / self.kept:.0%}), "
                    f"far from its share {share:g}: too few examples for {ratio_text}"
                )
        return out

    def lines(self) -> list[str]:
        """The summary as printable lines."""
        out = [f"read {self.read} interactions: kept {self.kept}, dropped {sum(self.dropped.values())}"]
        for reason in DROP_REASONS:
            if self.dropped.get(reason):
                out.append(f"  dropped {reason}: {self.dropped[reason]}")
        if self.no_dedup_value:
            out.append(f"  kept without dedup (no {self.dedup_field}): {self.no_dedup_value}")
        for split, path in self.paths.items():
            out.append(f"  {split or 'all'}: {self.splits.get(split, 0)} -> {path}")
        return out


def default_output(fmt: str, now: datetime | None = None) -> Path:
    """Where ``trainwire export`` writes without ``--output``: ``training_data/{fmt}_YYYYMMDD_HHMMSS.jsonl``.

    The folder is seed 001's, the time stamp (local time, ``now`` by default) the seed logs' own.
    """
    return Path("training_data") / f"{fmt}_{(now or datetime.now()):%Y%m%d_%H%M%S}.jsonl"


def _extra_column(dedup_field: str) -> str | None:
    """The column beyond the base ones that the dedup field needs, if any."""
    if dedup_field.startswith(METADATA_PREFIX):
        return "metadata"
    if dedup_field in INTERACTION_DEDUP_FIELDS and dedup_field not in _BASE_COLUMNS:
        return dedup_field
    return None


def _interaction(row: dict[str, Any], extra: str | None) -> Interaction:
    prompt: Prompt = orjson.loads(row["prompt_messages"]) if row["prompt_messages"] else row["prompt"]
    interaction = Interaction(prompt=prompt, completion=row["completion"], reward=row["reward"], success=row["success"])
    if extra == "metadata":
        interaction.metadata = orjson.loads(row["metadata"]) if row["metadata"] else {}
    elif extra is not None:
        setattr(interaction, extra, row[extra])
    return interaction


def _unknown_dedup_field(config: DatasetConfig, rows: list[dict[str, Any]], run: str | None) -> ConfigError:
    """The error for deduplicating by a field no row has a value for (naming the metadata keys there are)."""
    where = f" of run {run}" if run else ""
    problem = f"no interaction{where} in the store has a value for {config.dedup_field}"
    if config.dedup_field.startswith(METADATA_PREFIX):
        keys = sorted({key for row in rows for key in (orjson.loads(row["metadata"]) if row["metadata"] else {})})
        shown = ", ".join(keys[:20]) + (", ..." if len(keys) > 20 else "")
        problem += f" (metadata keys found: {shown})" if keys else " (they have no metadata)"
    return ConfigError("dedup_field", problem)


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
    reproducible subset; without it, the oldest are taken. With no interaction to read, nothing
    is written (``read`` is 0, ``paths`` empty). Deduplicating by a field that no interaction
    has a value for raises :class:`ConfigError` (``dedup_field``) before anything is written.
    """
    _writer(fmt)
    extra = _extra_column(config.dedup_field)
    sql = _EXPORT_SQL.format(outer=f", i.{extra} AS {extra}" if extra else "", inner=f", {extra}" if extra else "")
    rows = store.query_rows(sql, {"run": run or ""})
    if not rows:
        return ExportSummary(dedup_field=config.dedup_field)
    flt = DatasetFilter(dataclasses.replace(config, limit=None))
    # Deduplicating by a field that no interaction has is a mistaken name: said before anything is written.
    field_seen = not config.deduplicate or config.dedup_field in DEDUP_FIELDS
    examples = []
    for row in rows:
        interaction = _interaction(row, extra)
        field_seen = field_seen or flt.dedup_text(interaction) is not None
        out = flt.check(interaction, row["judge_score"], source_id=row["event_id"], run_id=row["run_id"])
        if isinstance(out, TrainingExample):
            examples.append(out)
    if not field_seen:
        raise _unknown_dedup_field(config, rows, run)
    if shuffle:
        random.Random(config.seed).shuffle(examples)
    if config.limit is not None and len(examples) > config.limit:
        flt.drop("limit", len(examples) - config.limit)
        examples = examples[: config.limit]
    if config.split_ratio:
        examples = _split_exactly(flt, examples)
    with DatasetSink(output, fmt, config.splits, append=False, track_ids=False) as sink:
        for example in examples:
            sink.add(example)
    return ExportSummary(
        read=len(rows),
        kept=len(examples),
        dropped={k: v for k, v in flt.dropped.items() if v},
        splits=dict(sink.counts),
        paths=dict(sink.paths),
        dedup_field=config.dedup_field,
        no_dedup_value=sum(1 for e in examples if not e.key) if config.deduplicate else 0,
        split_ratio=config.split_ratio,
    )


def _split_exactly(flt: DatasetFilter, examples: list[TrainingExample]) -> list[TrainingExample]:
    """``examples`` (in their order) with the splits cut exactly: by :func:`split_sizes`, in the order
    of their split hash; a cut that would part copies of one split key moves past them."""
    ratio = flt.config.split_ratio or ()
    ordered = sorted((flt.split_point(flt.split_key(e.key, e.prompt)), e.source_id, i) for i, e in enumerate(examples))
    cuts, end, boundary = [], 0, 0
    for size in split_sizes(len(examples), ratio):
        boundary += size
        end = max(end, boundary)
        while 0 < end < len(ordered) and ordered[end][0] == ordered[end - 1][0]:
            end += 1
        cuts.append(end)
    split_of = {}
    start = 0
    for name, cut in zip(SPLIT_NAMES, cuts, strict=False):
        for _, _, i in ordered[start:cut]:
            split_of[i] = name
        start = cut
    return [dataclasses.replace(e, split=split_of[i]) for i, e in enumerate(examples)]


# --------------------------------------------------------------------------- options shared with the worker


_F = TypeVar("_F", bound=Callable[..., Any])


def dataset_filter_options(*, prefix: str = "", seed_help: str) -> Callable[[_F], _F]:
    """The filter options of ``trainwire export`` and ``trainwire worker``: one set of names and meanings.

    Adds ``--min-reward``, ``--min-judge-score``, ``--min-length``, ``--max-length``,
    ``--deduplicate/--no-deduplicate``, ``--dedup-field``, ``--split-ratio`` and ``--seed``
    (with ``seed_help``); ``prefix`` starts each help text. Turn their values into a
    :class:`DatasetConfig` with :func:`dataset_config`.
    """

    def helped(text: str) -> str:
        return f"{prefix}{text[0].lower()}{text[1:]}" if prefix else text

    options = (
        click.option(
            "--min-reward", type=float, default=None, help=helped("Drop interactions with a lower (or no) reward.")
        ),
        click.option(
            "--min-judge-score",
            type=float,
            default=None,
            help=helped("Drop interactions with a lower (or no) judge score (0..1)."),
        ),
        click.option(
            "--min-length", type=click.IntRange(min=0), default=None, help=helped("Minimum completion characters.")
        ),
        click.option(
            "--max-length", type=click.IntRange(min=0), default=None, help=helped("Maximum completion characters.")
        ),
        click.option(
            "--deduplicate/--no-deduplicate",
            default=True,
            show_default=True,
            help=helped("Drop an example whose --dedup-field value an earlier kept one had."),
        ),
        click.option(
            "--dedup-field",
            default="prompt",
            show_default=True,
            metavar="FIELD",
            help=helped(
                "What makes two examples duplicates: prompt, completion, prompt+completion, an interaction field "
                "(model, step, group_id, ...) or metadata.KEY (metadata.A.B for a nested key)."
            ),
        ),
        click.option(
            "--split-ratio",
            default=None,
            help=helped("Shares of train,val[,test], e.g. 0.8,0.1,0.1 (one file per split)."),
        ),
        click.option("--seed", type=int, default=42, show_default=True, help=helped(seed_help)),
    )

    def decorate(func: _F) -> _F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def dataset_config(
    *,
    min_reward: float | None,
    min_judge_score: float | None,
    min_length: int | None,
    max_length: int | None,
    deduplicate: bool,
    dedup_field: str,
    split_ratio: str | None,
    seed: int,
    limit: int | None = None,
) -> DatasetConfig:
    """The :class:`DatasetConfig` of :func:`dataset_filter_options`' values (``split_ratio`` as typed).

    Raises :class:`click.BadParameter` naming the option whose value is wrong.
    """
    try:
        return DatasetConfig(
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
        raise _bad_parameter(exc) from None


def _bad_parameter(exc: ConfigError) -> click.BadParameter:
    return click.BadParameter(exc.problem, param_hint=f"--{exc.setting.replace('_', '-')}")


# --------------------------------------------------------------------------- trainwire export


@click.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS)),
    default="alpaca",
    show_default=True,
    help="JSONL record format: alpaca (instruction/input/output), sharegpt (conversations), openai (messages).",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="JSONL file to write (with --split-ratio: FILE_train.jsonl, ... beside it). "
    "Default: training_data/FORMAT_YYYYMMDD_HHMMSS.jsonl.",
)
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Keep at most N examples.")
@click.option("--shuffle/--no-shuffle", default=True, show_default=True, help="Shuffle (with --seed) before --limit.")
@click.option("--run", default=None, help="Only this run's interactions.")
@dataset_filter_options(seed_help="Seed of the shuffle and the split hash.")
@click.pass_obj
def export_command(
    settings: Settings,
    fmt: str,
    output: Path | None,
    limit: int | None,
    shuffle: bool,
    run: str | None,
    **filters: Any,
) -> None:
    """Write fine-tuning data (alpaca, sharegpt, openai JSONL) from the interactions in the store.

    Keeps successful interactions with a prompt and a completion (and the optional reward,
    judge-score and length limits), drops duplicates, splits by a stable hash, and prints where
    it wrote, how many were kept and why the others were dropped. Exits with status 1, writing
    nothing, when the store has no interactions (a worker stores what is on the bus).
    """
    from trainwire.store.clickhouse import NOT_STORED_HINT, open_store

    config = dataset_config(limit=limit, **filters)
    given = output is not None
    output = output if output is not None else default_output(fmt)
    with open_store(settings) as store:
        store.migrate()  # a store no worker has written to yet has no tables
        try:
            summary = export_dataset(store, config, fmt, output, shuffle=shuffle, run=run)
        except ConfigError as exc:
            raise _bad_parameter(exc) from None
    if not summary.read:
        which = f"run {run}" if run else "any run"
        message = f"No interactions for {which} in the store: nothing to export. {NOT_STORED_HINT}, then export again."
        if run:
            message += ' The runs stored: trainwire sql "SELECT DISTINCT run_id FROM interactions"'
        raise click.ClickException(message)
    if not given:
        click.echo(f"output (no --output given): {output}")
    for line in summary.lines():
        click.echo(line)
    for line in summary.warnings():
        click.echo(line, err=True)
