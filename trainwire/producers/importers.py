"""Import LLM logs people already have: ``trainwire import PATH...``.

Two families of files are understood, recognised per record:

- **GRPO interaction logs** (seed 000): ``llm_logs_YYYYMMDD_HHMMSS.jsonl`` (one record per line)
  and ``llm_logs_complete_YYYYMMDD_HHMMSS.json`` (a JSON array of the same records). A record is
  ``{"timestamp", "prompt", "completion", "reward", "metadata"}``.
- **LLM call logs** (seed 001): ``.jsonl`` files anywhere under a directory, a line per call with
  ``success``, ``prompt`` (may be missing or empty: ``current_batch_content`` stands in) and
  ``response`` (an object whose ``answer`` is the output; may be missing).

Every record becomes one ``interaction`` event. Fields of the record that name an Interaction
field (``step``, ``model``, ``error``, ``rewards``, ...) fill it; everything else is kept in
``metadata``. The training step is the first of :data:`STEP_KEYS` found, at the top of the record
or in its ``metadata`` (seed 000 writes ``metadata.step``), so imported GRPO logs have per-step
plots; it must be a whole number. The record's ``timestamp`` (ISO-8601, or Unix
seconds/milliseconds; a time without a zone is read in ``--timezone``, default the local zone, as
``datetime.now()`` wrote it) becomes the event time; a record without one gets the file's
modification time, and one whose timestamp is not readable as a time is an error of that record
(file and line), as any bad field is.

A file whose first non-blank character is ``[`` is read as a JSON array, anything else as JSON
lines, whatever its name. A directory is searched recursively for ``*.jsonl``, ``*.ndjson`` and
``llm_logs_complete_*.json`` (other ``.json`` files are imported only when named).

The import streams (memory stays flat on a file of many GB) and is idempotent twice over:

- each event's id is derived from the run id and the record's content (a UUIDv7 whose time is
  the record's and whose other bits are a SHA-256 of the record), so an event imported twice is
  the same row and collapses in ClickHouse (``FINAL``); the ``.jsonl`` and ``_complete_.json``
  files of one seed-000 run hold the same records and give the same events;
- a ledger, ``{data_dir}/imports/ledger.jsonl``, records each imported file's path, size and
  SHA-256; importing it again skips what was imported (reported as "already imported"), and a
  ``.jsonl`` that has grown since (a training run still writing it) is imported from where the
  last import stopped. ``--force`` ignores the ledger.

A corrupt line is reported with its file and line number and the import goes on; so is any
record that cannot become an event a worker can store (a value out of range, a time outside
1900..2299, text that is not UTF-8, nesting too deep), whatever it raises, and such a record is
not counted as imported. A directory that cannot be read is reported like a file. A JSON array
cannot be resynchronised after a corrupt element, so its records up to the fault are imported
and the rest of that file is reported.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import fnmatch
import hashlib
import json
import math
import os
import re
import shlex
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import click
import orjson
from click.core import ParameterSource

from trainwire.bus import Emitter
from trainwire.config import Settings
from trainwire.errors import EventError
from trainwire.events import Event, Interaction, Source, check_event, check_ts, ts_out_of_range
from trainwire.private_files import open_private
from trainwire.producers.api import make_interaction
from trainwire.progress import Progress

__all__ = [
    "ImportSummary",
    "Importer",
    "SkipRecord",
    "default_run_id",
    "import_command",
    "import_paths",
    "next_step_hint",
    "parse_timestamp",
    "record_event_id",
    "record_to_interaction",
]

CHUNK = 1 << 20
"""Bytes read at a time from a JSON array file (and when hashing)."""

BACKPRESSURE_QUEUE = 20_000
"""When this many events wait in the emitter's queue, the import waits for it to drain."""

MAX_ERRORS_KEPT = 100
"""Error messages kept for the summary (all are counted)."""

LIBRARY = "trainwire.import"
TIMESTAMP_KEYS = ("timestamp", "ts", "time", "created_at", "datetime")
STEP_KEYS = ("step", "global_step", "training_step")
"""The names of the training step in a log record, first found first: in the record, then in its metadata."""
DIRECTORY_PATTERNS = ("*.jsonl", "*.ndjson", "llm_logs_complete_*.json")

ALREADY_IMPORTED = "already imported"
EXIT_SPOOLED = 3
"""``trainwire import``'s exit status when events were spooled, not published (the bus was unreachable)."""
NO_PROMPT = "no prompt (neither prompt nor current_batch_content)"


class SkipRecord(Exception):
    """A well-formed record that is not imported, with the reason (counted in the summary)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


# --------------------------------------------------------------------------- one record


def parse_timestamp(value: Any, tz: tzinfo | None = None, path: str = "timestamp") -> datetime | None:
    """A record's timestamp as an aware UTC datetime, or None when it cannot be read as a time.

    ISO-8601 text (a time without an offset is in ``tz``, default the local zone), or a number of
    Unix seconds (milliseconds when above 10^11). A time the event's ``ts`` cannot hold (year 1,
    year 9999, 10^300 seconds) raises :class:`EventError` naming ``path``.
    """
    if isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        if ts.tzinfo is None:
            try:
                ts = ts.replace(tzinfo=tz) if tz is not None else ts.astimezone()
            except (OverflowError, OSError, ValueError):  # the local zone of a time at the calendar's ends
                raise ts_out_of_range(path, repr(value)) from None
        return check_ts(ts, path)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        try:
            ts = datetime.fromtimestamp(value / 1000 if abs(value) > 1e11 else value, UTC)
        except (OverflowError, OSError, ValueError):
            digits = str(value)
            raise ts_out_of_range(
                path, f"{digits[:24]}{'...' if len(digits) > 24 else ''} seconds since 1970"
            ) from None
        return check_ts(ts, path)
    return None


def _answer_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return orjson.dumps(value, default=str).decode()


def record_to_interaction(obj: Any, path: str = "record") -> tuple[Interaction, str]:
    """Turn one log record into an :class:`Interaction`; also say which family it is.

    Returns ``(interaction, kind)`` with ``kind`` ``"grpo"`` (seed 000) or ``"llm_call"`` (seed
    001). Raises :class:`SkipRecord` for a record with no prompt at all and :class:`EventError`
    (naming the field) for one that is malformed. The timestamp is not read here.
    """
    if not isinstance(obj, dict):
        raise EventError(path, f"expected a JSON object, got {type(obj).__name__}")
    llm_call = "completion" not in obj and ("response" in obj or "current_batch_content" in obj or "success" in obj)
    consumed = {"prompt", "completion", "reward", "metadata", "response", "success"}
    extra_meta: dict[str, Any] = {}
    prompt = obj.get("prompt")
    if prompt is None or prompt == "" or prompt == []:
        prompt = obj.get("current_batch_content")
        if prompt is None or prompt == "" or prompt == []:
            raise SkipRecord(NO_PROMPT)
        consumed.add("current_batch_content")
        extra_meta["prompt_source"] = "current_batch_content"
    if "completion" in obj:
        completion = obj["completion"]
    elif "response" in obj:
        response = obj["response"]
        if isinstance(response, dict):
            completion = _answer_text(response.get("answer"))
            rest = {k: v for k, v in response.items() if k != "answer"}
            if rest:
                extra_meta["response"] = rest
        else:
            completion = _answer_text(response)
    else:
        completion = ""
    fields: dict[str, Any] = {k: v for k, v in obj.items() if k not in consumed}
    if "success" in obj:
        success = obj["success"]
        if not isinstance(success, bool):
            raise EventError(f"{path}.success", f"expected true or false, got {success!r}"[:120])
        fields["success"] = success
    metadata = obj.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        metadata = {"metadata": metadata}
    if extra_meta:
        metadata = {**metadata, **extra_meta}
    step = _step(obj, metadata, path)
    if step is not None:
        fields["step"] = step
    interaction = make_interaction(
        prompt, completion, obj.get("reward"), metadata, fields, path=path, lenient=True, sanitize=False
    )
    return interaction, "llm_call" if llm_call else "grpo"


def _step(obj: dict[str, Any], metadata: dict[str, Any], path: str) -> int | None:
    """The record's training step: the first of :data:`STEP_KEYS` in the record, then in its metadata."""
    for where, fields in ((path, obj), (f"{path}.metadata", metadata)):
        for name in STEP_KEYS:
            value = fields.get(name)
            if value is None:
                continue
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if not isinstance(value, int) or isinstance(value, bool):
                raise EventError(f"{where}.{name}", f"expected a whole number of steps, got {value!r}"[:120])
            return value
    return None


def _canonical(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # e.g. an integer beyond 64 bits, or a lone surrogate
        return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode(errors="surrogatepass")


def record_event_id(run_id: str, record: Any, ts: datetime) -> str:
    """The deterministic event id of ``record`` in ``run_id``: a UUIDv7 with the record's time.

    Its 48 time bits are ``ts`` in Unix milliseconds (so ids still sort by time); its other 74
    bits come from SHA-256 over the run id and the record's canonical JSON (keys sorted), so the
    same record gives the same id whichever file, line or format it was read from.
    """
    raw = bytearray(hashlib.sha256(run_id.encode() + b"\0" + _canonical(record)).digest()[:16])
    raw[0:6] = (int(ts.timestamp() * 1000) & 0xFFFF_FFFF_FFFF).to_bytes(6, "big")
    raw[6] = 0x70 | (raw[6] & 0x0F)  # version 7
    raw[8] = 0x80 | (raw[8] & 0x3F)  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_RUN_SAFE = re.compile(r"[^A-Za-z0-9_.:-]+")


def default_run_id(path: Path) -> str:
    """The run a file's records belong to when ``--run`` is not given: the file name without suffix.

    ``llm_logs_complete_20251013_113045.json`` gives ``llm_logs_20251013_113045``, the same run as
    the streaming ``llm_logs_20251013_113045.jsonl`` it completes.
    """
    stem = path.name
    for suffix in (".jsonl", ".ndjson", ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    if stem.startswith("llm_logs_complete_"):
        stem = "llm_logs_" + stem[len("llm_logs_complete_") :]
    return _RUN_SAFE.sub("_", stem).strip("_") or "import"


# --------------------------------------------------------------------------- readers


def _sniff_array(path: Path) -> bool:
    """Whether the file's first non-blank character is ``[`` (a JSON array)."""
    with open(path, "rb") as handle:
        while True:
            data = handle.read(4096)
            if not data:
                return False
            stripped = data.lstrip(b" \t\r\n\xef\xbb\xbf")
            if stripped:
                return stripped[:1] == b"["


class _ArrayError(Exception):
    def __init__(self, line: int, index: int, problem: str):
        self.line = line
        self.index = index
        self.problem = problem


_WS = re.compile(r"[ \t\r\n]*")


def iter_json_array(handle: IO[bytes], hasher: Any = None, chunk: int = CHUNK) -> Iterator[tuple[int, int, Any]]:
    """Stream the elements of a top-level JSON array: ``(index, line, value)``, in constant memory.

    Reads ``chunk`` bytes at a time (feeding each to ``hasher`` when given) and decodes elements
    with :meth:`json.JSONDecoder.raw_decode`. Raises :class:`_ArrayError` (with the line) on
    malformed or truncated input; the elements before it have been yielded.
    """
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buf, pos, line, eof = "", 0, 1, False
    want = chunk

    def fill() -> None:
        nonlocal buf, pos, eof, want
        data = handle.read(want)
        if hasher is not None and data:
            hasher.update(data)
        text = utf8.decode(data, final=not data)
        if not data:
            eof = True
        buf = buf[pos:] + text
        pos = 0

    def skip_ws() -> None:
        nonlocal pos, line
        while True:
            end = _WS.match(buf, pos).end()
            line += buf.count("\n", pos, end)
            pos = end
            if pos < len(buf) or eof:
                return
            fill()

    fill()
    if buf.startswith("\ufeff"):
        pos = 1
    skip_ws()
    if buf[pos : pos + 1] != "[":
        raise _ArrayError(line, 0, "expected a JSON array")
    pos += 1
    index = 0
    skip_ws()
    if buf[pos : pos + 1] == "]":
        return
    while True:
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
            except RecursionError:
                raise _ArrayError(line, index, "nested too deeply to read") from None
            except json.JSONDecodeError as exc:
                if eof:
                    problem = "the file ends inside it" if exc.pos >= len(buf) else exc.msg
                    raise _ArrayError(line, index, f"not valid JSON: {problem}") from None
                want = min(want * 2, 64 << 20)
                fill()
                continue
            if end >= len(buf) and not eof:  # a number may go on in the next chunk
                want = min(want * 2, 64 << 20)
                fill()
                continue
            break
        want = chunk
        start_line = line
        line += buf.count("\n", pos, end)
        pos = end
        yield index, start_line, value
        index += 1
        skip_ws()
        sep = buf[pos : pos + 1]
        if sep == ",":
            pos += 1
            skip_ws()
            continue
        if sep == "]":
            pos += 1
            skip_ws()
            if pos < len(buf):
                raise _ArrayError(line, index, "unexpected text after the end of the array")
            return
        if not sep:
            raise _ArrayError(line, index, "the file ends inside the array (truncated?)")
        raise _ArrayError(line, index, f"expected ',' or ']' after record {index}, found {sep!r}")


def _loads(line: bytes) -> Any:
    """One JSON line; :class:`ValueError` saying why it cannot be read."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        # Python's json writes NaN and Infinity, which orjson refuses; accept them here. Decoded
        # first: json.loads(bytes) would let bytes that are not UTF-8 (surrogates) through.
        try:
            return json.loads(line.decode())
        except RecursionError:
            raise ValueError("nested too deeply to read") from None


# --------------------------------------------------------------------------- the ledger


class Ledger:
    """What was imported: an append-only JSON-lines file of (path, size, sha256, counts) entries."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / "imports" / "ledger.jsonl"
        self._entries: list[dict[str, Any]] = []
        if self.path.exists():
            with open(self.path, "rb") as handle:
                for raw in handle:
                    try:
                        entry = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        continue  # a torn last line of an interrupted write
                    if isinstance(entry, dict) and {"path", "size", "sha256"} <= entry.keys():
                        self._entries.append(entry)

    def latest_for(self, path: str) -> dict[str, Any] | None:
        """The most recent entry for ``path`` (an absolute path)."""
        for entry in reversed(self._entries):
            if entry["path"] == path:
                return entry
        return None

    def with_content(self, size: int, sha256: str) -> dict[str, Any] | None:
        """An entry for a complete file of this size and hash, under any path (a moved or copied file)."""
        for entry in reversed(self._entries):
            if entry["size"] == size and entry["sha256"] == sha256 and entry.get("complete"):
                return entry
        return None

    def sizes(self) -> set[int]:
        """Sizes of the complete files recorded."""
        return {e["size"] for e in self._entries if e.get("complete")}

    def add(self, entry: dict[str, Any]) -> None:
        """Append ``entry`` (locked, so concurrent imports do not interleave lines)."""
        with open_private(self.path, "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.write(orjson.dumps(entry) + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        self._entries.append(entry)


def _hash_prefix(path: Path, size: int) -> Any:
    """A SHA-256 object fed the first ``size`` bytes of ``path``."""
    hasher = hashlib.sha256()
    remaining = size
    with open(path, "rb") as handle:
        while remaining > 0:
            data = handle.read(min(CHUNK, remaining))
            if not data:
                break
            hasher.update(data)
            remaining -= len(data)
    return hasher


# --------------------------------------------------------------------------- the import


@dataclass
class ImportSummary:
    """What an import did: counts by outcome, by run and by record family, and the errors."""

    files: int = 0
    imported: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    runs: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    files_skipped: int = 0
    spooled: int = 0
    """Events in the spool at the end, not on the bus (it was unreachable): published when it is back."""
    spool_path: str = ""
    replayed: int = 0
    """Events an earlier import (or other process) had spooled, published by this one."""
    failed: int = 0
    """Events the emitter could not publish nor spool (refused by the bus: kept in ``rejected/``)."""

    def error(self, message: str) -> None:
        """Count an error; keep its message while fewer than :data:`MAX_ERRORS_KEPT` are kept."""
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(message)

    def lines(self) -> list[str]:
        """The summary as text lines for the console."""
        kinds = {"grpo": "GRPO interaction log", "llm_call": "LLM call log"}
        out = [f"imported {self.imported} record{'s' if self.imported != 1 else ''} from {self.files} file(s)"]
        for kind, count in sorted(self.kinds.items()):
            out.append(f"  {kinds.get(kind, kind)}: {count}")
        if self.runs:
            out.append("runs: " + ", ".join(f"{run} ({count})" for run, count in sorted(self.runs.items())))
        total_skipped = sum(self.skipped.values())
        if total_skipped or self.files_skipped:
            out.append(f"skipped {total_skipped} record{'s' if total_skipped != 1 else ''}:")
            for reason, count in self.skipped.most_common():
                out.append(f"  {reason}: {count}")
            if self.files_skipped:
                out.append(f"  ({self.files_skipped} file(s) already imported in full)")
        for note, count in self.notes.most_common():
            out.append(f"note: {note}: {count}")
        if self.replayed:
            out.append(f"published {self.replayed} events an earlier import had spooled")
        if self.spooled:
            out.append(
                f"spooled: {self.spooled} events are not on the bus (it was unreachable) but in {self.spool_path}, "
                "until the bus is back"
            )
        if self.failed:
            out.append(f"failed: {self.failed} events could not be published (see the log above and rejected/)")
        if self.error_count:
            out.append(f"errors: {self.error_count} record(s) could not be imported:")
            out.extend(f"  {message}" for message in self.errors)
            if self.error_count > len(self.errors):
                out.append(f"  ... and {self.error_count - len(self.errors)} more")
        return out


class Importer:
    """Imports log files into the bus through one emitter, keeping the ledger and a summary.

    Args:
        settings: where the ledger lives (``data_dir``) and, without ``emitter``, where events go.
        emitter: publish through this emitter (not closed here); default a new one, closed at the end.
        run_id: the run of every record; default :func:`default_run_id` of each file.
        timezone: the zone of timestamps written without one; default the local zone.
        force: ignore the ledger (import everything again; ids still collapse in ClickHouse).
        progress: show a progress bar on a terminal.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        emitter: Emitter | None = None,
        run_id: str | None = None,
        timezone: tzinfo | None = None,
        force: bool = False,
        progress: bool = True,
    ):
        self.settings = settings
        self._own_emitter = emitter is None
        self.emitter = emitter or Emitter(settings)
        self.run_id = run_id
        self.tz = timezone
        self.force = force
        self.progress = progress
        self.ledger = Ledger(settings.data_dir)
        self.summary = ImportSummary()
        self._source = Source.current(library=LIBRARY)
        self._progress: Progress | None = None
        self._bytes_total = self._bytes_done = 0
        self._file_name = ""
        self._since_check = 0

    # ---------------------------------------------------------------- files

    def find_files(self, paths: list[Path]) -> list[Path]:
        """The files to import: each file named, and the log files under each directory (sorted).

        A directory that cannot be read is counted as an error (with the reason), like a file.
        """
        found: list[Path] = []
        seen: set[Path] = set()
        for path in paths:
            matches = sorted(self._log_files_under(path)) if path.is_dir() else [path]
            for match in matches:
                resolved = match.resolve()
                if resolved not in seen:
                    seen.add(resolved)
                    found.append(match)
        return found

    def _log_files_under(self, directory: Path) -> Iterator[Path]:
        """The files under ``directory`` named as :data:`DIRECTORY_PATTERNS` says (not following links)."""

        def unreadable(exc: OSError) -> None:
            self.summary.error(f"{exc.filename}: cannot read: {exc.strerror or exc}")

        for root, _dirs, names in os.walk(directory, onerror=unreadable):
            for name in names:
                if any(fnmatch.fnmatchcase(name, pattern) for pattern in DIRECTORY_PATTERNS):
                    file = Path(root, name)
                    if file.is_file():
                        yield file

    def run(self, paths: list[Path]) -> ImportSummary:
        """Import every file under ``paths``; returns the summary (also on Ctrl+C, then re-raised)."""
        files = self.find_files(paths)
        for path in paths:
            if path.is_dir() and not any(f.is_relative_to(path) for f in files):
                self.summary.notes[f"no log files under {path}"] += 1
        total = 0
        for f in files:
            with contextlib.suppress(OSError):
                total += f.stat().st_size
        self._progress = Progress("import", total=total) if self.progress else None
        self._bytes_total, self._bytes_done = total, 0
        before = self.emitter.stats()
        self.emitter.start()  # replays what an earlier import left in the spool, even with nothing new
        try:
            with self._progress or contextlib.nullcontext():
                for path in files:
                    self._file_name = path.name
                    self.import_file(path)
        finally:
            if self._own_emitter:
                self.emitter.close()
            else:
                self.emitter.flush()
            after = self.emitter.stats()
            self.summary.spooled = after.spool_pending
            self.summary.spool_path = str(self.emitter.spool_path)
            self.summary.replayed = after.replayed - before.replayed
            self.summary.failed = after.failed - before.failed
        return self.summary

    def import_file(self, path: Path) -> None:
        """Import one file (JSON lines or a JSON array), resuming or skipping per the ledger."""
        try:
            stat = path.stat()
            is_array = _sniff_array(path)
        except OSError as exc:
            self.summary.error(f"{path}: cannot read: {exc.strerror or exc}")
            return
        self.summary.files += 1
        key = str(path.resolve())
        size = stat.st_size
        prior = None if self.force else self.ledger.latest_for(key)
        start, lines_before, hasher = 0, 0, hashlib.sha256()
        fallback_ts = datetime.fromtimestamp(stat.st_mtime, UTC)
        if prior is not None and prior["size"] <= size:
            prefix = _hash_prefix(path, prior["size"])
            if prefix.hexdigest() == prior["sha256"]:
                fallback_ts = _parse_iso(prior.get("ts_fallback")) or fallback_ts
                if prior["size"] == size:
                    self._skip_whole(prior, size)
                    return
                if not is_array:  # the .jsonl grew: import what was appended
                    start, lines_before, hasher = prior["size"], prior.get("lines", 0), prefix
                    self.summary.skipped[ALREADY_IMPORTED] += prior.get("imported", 0)
                    self._advance(start)
        elif not self.force and size in self.ledger.sizes():
            whole = _hash_prefix(path, size)
            moved = self.ledger.with_content(size, whole.hexdigest())
            if moved is not None:
                self._skip_whole(moved, size)
                return
        run_id = self.run_id
        if run_id is None and start and prior is not None:
            run_id = prior.get("run_id")
        run_id = run_id or default_run_id(path)
        state = _FileState(offset=start, lines=lines_before, hasher=hasher)
        if start and prior is not None:
            state.imported = prior.get("imported", 0)
        try:
            with open(path, "rb") as handle:
                if is_array:
                    self._read_array(handle, path, run_id, fallback_ts, state)
                else:
                    handle.seek(start)
                    self._read_lines(handle, path, run_id, fallback_ts, state)
        except OSError as exc:
            self.summary.error(f"{path}: cannot read: {exc.strerror or exc}")
            return
        except KeyboardInterrupt:
            if not is_array:  # keep what was read, so the next import resumes here
                self.emitter.flush()
                self._record_file(key, state, is_array, run_id, fallback_ts)
            raise
        self.emitter.flush()
        self._record_file(key, state, is_array, run_id, fallback_ts)

    def _record_file(self, key: str, state: _FileState, is_array: bool, run_id: str, fallback_ts: datetime) -> None:
        self.ledger.add(
            {
                "path": key,
                "size": state.offset,
                "sha256": state.hasher.hexdigest(),
                "lines": state.lines,
                "imported": state.imported,
                "complete": state.complete,
                "format": "json-array" if is_array else "jsonl",
                "run_id": run_id,
                "ts_fallback": fallback_ts.isoformat(),
                "imported_at": datetime.now(UTC).isoformat(),
            }
        )

    def _skip_whole(self, entry: dict[str, Any], size: int) -> None:
        self.summary.skipped[ALREADY_IMPORTED] += entry.get("imported", 0)
        self.summary.files_skipped += 1
        self._advance(size)

    def _advance(self, nbytes: int) -> None:
        self._bytes_done += nbytes
        if self._progress is not None and nbytes:
            done, total = self._bytes_done / 1e6, self._bytes_total / 1e6
            self._progress.update(self._bytes_done, f"{self._file_name} · {done:,.1f} of {total:,.1f} MB")

    # ---------------------------------------------------------------- records

    def _record(self, obj: Any, location: str, run_id: str, fallback_ts: datetime, state: _FileState) -> None:
        """Publish one record, or count it as skipped or as an error at ``location``: whatever it raises."""
        summary = self.summary
        try:
            event, kind = self._event(obj, run_id, fallback_ts)
        except SkipRecord as skip:
            summary.skipped[skip.reason] += 1
            return
        except EventError as exc:
            summary.error(str(exc.at(location)))
            return
        except Exception as exc:  # a shape no check foresaw: still this record's error, not the import's
            summary.error(f"{location}: record: {type(exc).__name__}: {exc}")
            return
        self.emitter.emit(event)
        summary.imported += 1
        summary.kinds[kind] += 1
        summary.runs[run_id] += 1
        state.imported += 1
        self._since_check += 1
        if self._since_check >= 1024:
            self._since_check = 0
            if self.emitter.stats().queued > BACKPRESSURE_QUEUE:
                self.emitter.flush()

    def _event(self, obj: Any, run_id: str, fallback_ts: datetime) -> tuple[Event, str]:
        """The event of one record and its family; :class:`SkipRecord` or :class:`EventError` if there is none.

        The event is checked as a worker will read it (:func:`~trainwire.events.check_event`), so a
        record that could never be stored is this import's error, not a dead letter later.
        """
        interaction, kind = record_to_interaction(obj)
        ts = None
        for name in TIMESTAMP_KEYS:
            if name in obj:
                ts = parse_timestamp(obj[name], self.tz, f"record.{name}")
                if ts is None:
                    raise EventError(
                        f"record.{name}",
                        f"not readable as a time: {obj[name]!r} (ISO-8601, or Unix seconds or milliseconds)"[:160],
                    )
                interaction.metadata.pop(name, None)
                break
        if ts is None:
            ts = fallback_ts
        event = Event(
            run_id=run_id,
            payload=interaction,
            event_id=record_event_id(run_id, obj, ts),
            ts=ts,
            source=self._source,
        )
        check_event(event, "record")
        return event, kind

    def _read_lines(self, handle: IO[bytes], path: Path, run_id: str, fallback_ts: datetime, state: _FileState) -> None:
        """Import JSON lines from the handle's position, advancing ``state`` line by line."""
        pending = 0
        for raw in handle:
            line_no = state.lines + 1
            if raw.strip():
                try:
                    obj = _loads(raw)
                except ValueError as exc:
                    if not raw.endswith(b"\n"):
                        # The last line, still being written: leave it for the next import.
                        self.summary.notes["incomplete last line left for the next import"] += 1
                        state.complete = False
                        break
                    self.summary.error(f"{path}:{line_no}: record: not valid JSON: {exc}")
                else:
                    self._record(obj, f"{path}:{line_no}", run_id, fallback_ts, state)
            state.hasher.update(raw)
            state.offset += len(raw)
            state.lines = line_no
            pending += len(raw)
            if pending >= CHUNK:
                self._advance(pending)
                pending = 0
        self._advance(pending)

    def _read_array(self, handle: IO[bytes], path: Path, run_id: str, fallback_ts: datetime, state: _FileState) -> None:
        """Import the elements of a JSON array file; ``state`` ends at the end of the file."""
        last = 0
        try:
            for _index, line, obj in iter_json_array(handle, state.hasher):
                self._record(obj, f"{path}:{line}", run_id, fallback_ts, state)
                state.lines = line
                position = handle.tell()
                if position - last >= CHUNK:
                    self._advance(position - last)
                    last = position
        except _ArrayError as exc:
            self.summary.error(
                f"{path}:{exc.line}: record {exc.index}: {exc.problem}; the rest of this file is not imported"
            )
            while data := handle.read(CHUNK):  # the ledger keeps the whole file's hash
                state.hasher.update(data)
        state.offset = handle.tell()
        self._advance(state.offset - last)


@dataclass
class _FileState:
    """How far the import of one file got: bytes and lines consumed, their hash, records imported."""

    offset: int
    lines: int
    hasher: Any
    imported: int = 0
    complete: bool = True


def _parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def import_paths(
    paths: list[Path | str],
    settings: Settings,
    *,
    emitter: Emitter | None = None,
    run_id: str | None = None,
    timezone: tzinfo | None = None,
    force: bool = False,
    progress: bool = False,
) -> ImportSummary:
    """Import the log files at ``paths`` (files or directories) into the bus; see the module doc."""
    importer = Importer(settings, emitter=emitter, run_id=run_id, timezone=timezone, force=force, progress=progress)
    return importer.run([Path(p) for p in paths])


# --------------------------------------------------------------------------- the command


def next_step_hint(summary: ImportSummary, global_flags: str = "") -> str | None:
    """What to run after an import, or None when it found nothing to publish.

    An import publishes to the bus; nothing is in ClickHouse (for ``trainwire analyze``, ``sql``
    and ``export``) until a worker stores it. ``global_flags`` (``--data-dir DIR`` ...) go
    before ``worker`` in the command shown.
    """
    worker = f"`trainwire {global_flags + ' ' if global_flags else ''}worker --until-idle 10`"
    if summary.spooled:
        return (
            "next: when the bus is back, run this import again: it publishes the spooled events (and imports "
            f"nothing twice); then {worker} stores them in ClickHouse"
        )
    if summary.imported:
        return (
            "next: these events are on the bus; a worker stores them in ClickHouse for trainwire analyze, "
            f"sql and export: run {worker} (unless a worker is running already)"
        )
    if summary.skipped[ALREADY_IMPORTED]:
        return (
            "note: an earlier import published these events to the bus; if trainwire analyze finds none, "
            f"no worker has stored them yet: run {worker}"
        )
    return None


def _global_flags(ctx: click.Context) -> str:
    """The global options (``--kafka``, ``--data-dir``, ...) given on this command line, to repeat them.

    A ClickHouse password is shown as ``***``.
    """
    root = ctx.find_root()
    flags: list[str] = []
    for name in ("kafka", "clickhouse", "data_dir", "topic_prefix"):
        value = root.params.get(name)
        if value is None or root.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        text = str(value)
        if name == "clickhouse":
            url = urlsplit(text)
            if url.password is not None:
                text = urlunsplit(url._replace(netloc=url.netloc.replace(f":{url.password}@", ":***@", 1)))
        flags.append(f"--{name.replace('_', '-')} {shlex.quote(text)}")
    return " ".join(flags)


def _zone(value: str | None) -> tzinfo | None:
    if value is None or value.lower() == "local":
        return None
    if value.upper() in ("UTC", "Z"):
        return UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"{value!r} is not a time zone (local, UTC, or a name like Europe/Moscow)") from None


@click.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--run", "run_id", help="Run id of every imported record (default: from each file's name).")
@click.option(
    "--timezone",
    "tz_name",
    default="local",
    show_default=True,
    help="Zone of timestamps written without one (local, UTC, or a name like Europe/Moscow).",
)
@click.option("--force", is_flag=True, help="Import again what the ledger says was imported.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar on a terminal.")
@click.pass_obj
def import_command(
    settings: Settings, paths: tuple[Path, ...], run_id: str | None, tz_name: str, force: bool, progress: bool
) -> None:
    """Import LLM logs you already have: GRPO logs (llm_logs_*.jsonl, llm_logs_complete_*.json)
    and LLM call logs (.jsonl files under a directory).

    Importing the same file again adds nothing (it is reported as already imported); a .jsonl
    that grew since is imported from where the last import stopped. Corrupt lines are reported
    with file and line and do not stop the import; the exit status is 1 if there were any.
    With the bus unreachable the events are spooled to disk, not published: the summary says
    where, and the exit status is 3 (run the import again when the bus is back).

    The records go to the bus: run a worker (trainwire worker --until-idle 10) to store them in
    ClickHouse before trainwire analyze, sql or export; the summary says so.
    """
    timezone = _zone(tz_name)
    importer = Importer(settings, run_id=run_id, timezone=timezone, force=force, progress=progress)
    try:
        summary = importer.run(list(paths))
    except KeyboardInterrupt:
        for line in importer.summary.lines():
            click.echo(line)
        click.echo("interrupted: run the same command again to import the rest", err=True)
        sys.exit(130)
    for line in summary.lines():
        click.echo(line)
    hint = next_step_hint(summary, _global_flags(click.get_current_context()))
    if hint:
        click.echo(hint)
    if summary.error_count or summary.failed:
        problems = []
        if summary.error_count:
            problems.append(f"{summary.error_count} record(s) could not be imported (listed above)")
        if summary.failed:
            problems.append(f"{summary.failed} event(s) could not be published (kept in rejected/)")
        raise click.ClickException("; ".join(problems))
    if summary.spooled:
        sys.exit(EXIT_SPOOLED)
