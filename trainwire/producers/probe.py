"""The logits probe: how strongly models lean towards reasoning words, per answer position.

For each model (a baseline, its SFT and RL versions, ...) and each sample ``{query, answer,
level, correct}`` of a JSONL file, the model reads ``query + answer`` once (batched, no
generation) and, at every answer position, the distribution over the next token is probed for a
set of target words (``wait``, ``aha``, ``check``, ... and their leading-space and capitalised
forms, those that are one token in the model's tokenizer). Each (sample, position, target) gives
one ``logits`` event: the logit, the probability, the rank among the whole vocabulary (1 = the
model's top choice), the sample's level and correctness.

``position`` counts answer tokens from 0: position ``j`` is the prediction of answer token ``j``
from the query and answer tokens ``0..j-1``.

A rerun skips (run, model, sample) triples already done: a done-list under
``{data_dir}/probe/done.jsonl`` is appended once a batch's events are flushed. Samples are
identified by their ``id`` field, else by a hash of query and answer. A bad dataset line is
reported with its file and line number; the other lines are probed (and the command exits 1).

Models are checked before anything else (:func:`check_model`): a directory with a
``config.json``, or a hub id already in the local Hugging Face cache. The probe never downloads:
no network is a normal state, and models load with ``local_files_only``.

    trainwire probe logits --model base=Qwen/Qwen2.5-Math-7B --model rl=./ckpt --data tasks.jsonl
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from trainwire.bus import Emitter
from trainwire.config import Settings
from trainwire.errors import ConfigError, MissingExtraError, TrainwireError
from trainwire.events import Event, Logits, Source
from trainwire.private_files import open_private

__all__ = [
    "DEFAULT_WORDS",
    "DoneList",
    "ProbeDataError",
    "ProbeModel",
    "ProbeReport",
    "ProbeSample",
    "check_model",
    "load_samples",
    "parse_model_spec",
    "probe_command",
    "run_probe",
    "target_tokens",
]

logger = logging.getLogger("trainwire.probe")

DEFAULT_WORDS: tuple[str, ...] = (
    "wait",
    "aha",
    "check",
    "think",
    "hmm",
    "let",
    "actually",
    "however",
    "so",
    "therefore",
)
"""The reasoning words of the original study; each is probed as ``w``, ``" w"``, ``W`` and ``" W"``."""


class ProbeDataError(TrainwireError):
    """A line of the probe's dataset is not a valid sample; names the file and the line."""

    def __init__(self, path: str | Path, line: int, problem: str):
        self.path = str(path)
        self.line = line
        self.problem = problem
        super().__init__(f"{self.path}:{line}: {problem}")


@dataclass(frozen=True)
class ProbeSample:
    """One dataset line: the question, the answer to probe, its difficulty level and correctness."""

    sample_id: str
    query: str
    answer: str
    level: int | None = None
    correct: bool | None = None


@dataclass(frozen=True)
class ProbeModel:
    """A model to probe: the name events carry, and the path (or hub id) to load it from."""

    name: str
    path: str


@dataclass
class ProbeReport:
    """What a probe run did."""

    events: int = 0
    """``logits`` events emitted."""
    probed: dict[str, int] = field(default_factory=dict)
    """Samples probed, per model."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Samples skipped as already done, per model."""
    targets: dict[str, dict[str, int]] = field(default_factory=dict)
    """The target tokens used, per model (text -> token id)."""


def parse_model_spec(spec: str) -> ProbeModel:
    """``NAME=PATH`` (or just ``PATH``, named after its last part) as a :class:`ProbeModel`."""
    name, sep, path = spec.partition("=")
    if not sep:
        path = spec
        name = Path(spec.rstrip("/")).name or spec
    if not name or not path:
        raise click.BadParameter(f"{spec!r} is not NAME=PATH")
    return ProbeModel(name=name, path=path)


def check_model(model: ProbeModel) -> None:
    """Raise :class:`ConfigError` naming the model unless its path is a model on this machine.

    A model is a directory with a ``config.json``, or a hub id (``org/name``) already in the local
    Hugging Face cache; nothing is downloaded.
    """
    path = Path(model.path).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return
        problem = "a directory without a config.json, not a saved model"
    elif path.exists():
        problem = "a file, not a model directory"
    elif _in_hub_cache(model.path):
        return
    else:
        problem = (
            "no such directory, and no model of that name in the local Hugging Face cache (the probe never downloads)"
        )
    raise ConfigError(f"--model {model.name}", f"{model.path}: {problem}")


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a repo id at all (./model, /abs/path): HFValidationError
        return False


def load_samples(path: str | Path) -> tuple[list[ProbeSample], list[ProbeDataError]]:
    """Read a JSONL file of ``{query, answer, level, correct}``; return the samples and the bad lines.

    ``query`` and ``answer`` are required strings; ``level`` (an integer) and ``correct`` (true or
    false) are optional; ``id`` (string or integer) names the sample, else a hash of query and
    answer does. Blank lines are ignored; a line that is not UTF-8 is a bad line. Raises
    :class:`ConfigError` naming the file when it cannot be read.
    """
    samples: list[ProbeSample] = []
    errors: list[ProbeDataError] = []
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise ConfigError("--data", f"{path}: cannot read: {exc.strerror or exc}") from exc
    with fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                samples.append(_sample(json.loads(line.decode("utf-8")), path, number))
            except UnicodeDecodeError as exc:
                errors.append(ProbeDataError(path, number, f"not UTF-8 text (byte {exc.start + 1} of the line)"))
            except json.JSONDecodeError as exc:
                errors.append(ProbeDataError(path, number, f"not valid JSON: {exc.msg} (column {exc.colno})"))
            except ProbeDataError as exc:
                errors.append(exc)
    return samples, errors


def _sample(obj: Any, path: str | Path, line: int) -> ProbeSample:
    if not isinstance(obj, dict):
        raise ProbeDataError(path, line, f"expected a JSON object, got {type(obj).__name__}")
    for key in ("query", "answer"):
        if not isinstance(obj.get(key), str):
            problem = "missing" if key not in obj else f"must be a string, got {type(obj[key]).__name__}"
            raise ProbeDataError(path, line, f"{key}: {problem}")
    if not obj["answer"]:
        raise ProbeDataError(path, line, "answer: empty")
    level = obj.get("level")
    if isinstance(level, str) and level.strip().lstrip("-").isdigit():
        level = int(level)
    if level is not None and (isinstance(level, bool) or not isinstance(level, int)):
        raise ProbeDataError(path, line, f"level: must be an integer, got {level!r}")
    correct = obj.get("correct")
    if correct is not None and not isinstance(correct, bool):
        raise ProbeDataError(path, line, f"correct: must be true or false, got {correct!r}")
    sample_id = obj.get("id")
    if sample_id is None:
        digest = hashlib.sha1(f"{obj['query']}\x00{obj['answer']}".encode()).hexdigest()
        sample_id = digest[:16]
    elif isinstance(sample_id, bool) or not isinstance(sample_id, str | int):
        raise ProbeDataError(path, line, f"id: must be a string or an integer, got {sample_id!r}")
    return ProbeSample(str(sample_id), obj["query"], obj["answer"], level, correct)


def target_tokens(tokenizer: Any, words: Iterable[str] = DEFAULT_WORDS) -> dict[str, int]:
    """The single-token forms of ``words`` in ``tokenizer``: ``{text: token id}``.

    Each word is tried as ``w``, ``" w"``, ``W`` (capitalised) and ``" W"``; forms that the
    tokenizer splits into several tokens are left out, and of forms sharing a token id the first
    is kept.
    """
    out: dict[str, int] = {}
    seen: set[int] = set()
    for word in words:
        word = word.strip()
        if not word:
            continue
        for form in dict.fromkeys((word, f" {word}", word.capitalize(), f" {word.capitalize()}")):
            ids = tokenizer.encode(form, add_special_tokens=False)
            if len(ids) == 1 and ids[0] not in seen:
                seen.add(ids[0])
                out[form] = ids[0]
    return out


class DoneList:
    """The (run, model, sample) triples already probed, in an append-only JSONL file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._done: set[tuple[str, str, str]] = set()
        if self.path.exists():
            with open(self.path, encoding="utf-8") as fh:
                for raw in fh:
                    try:
                        row = json.loads(raw)
                        self._done.add((row["run"], row["model"], row["sample"]))
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a torn last line from a crash: that sample is probed again

    @classmethod
    def for_settings(cls, settings: Settings) -> DoneList:
        """The done-list under the settings' data directory."""
        return cls(Path(settings.data_dir) / "probe" / "done.jsonl")

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        return key in self._done

    def add_many(self, keys: Sequence[tuple[str, str, str]]) -> None:
        """Record ``keys`` as done (written and fsynced before returning)."""
        if not keys:
            return
        with open_private(self.path, "a", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"run": r, "model": m, "sample": s}) + "\n" for r, m, s in keys)
            fh.flush()
            os.fsync(fh.fileno())
        self._done.update(keys)


def run_probe(
    models: Sequence[ProbeModel],
    samples: Sequence[ProbeSample],
    *,
    run_id: str,
    emitter: Emitter,
    done: DoneList | None = None,
    words: Iterable[str] = DEFAULT_WORDS,
    batch_size: int = 8,
    device: str | None = None,
    max_answer_tokens: int | None = None,
    chat_template: bool = False,
    chunk_rows: int = 1024,
) -> ProbeReport:
    """Probe every model on every sample not done yet; emit ``logits`` events; return a report.

    Args:
        models: the models to load (``AutoModelForCausalLM``) and probe, one after the other.
        samples: the dataset (see :func:`load_samples`).
        run_id: the run the events belong to (and the done-list key).
        emitter: where the events go; flushed after each batch, before the batch is marked done.
        done: the done-list; None probes everything and records nothing.
        words: the target words (see :func:`target_tokens`).
        batch_size: samples per forward pass.
        device: ``cuda``, ``cpu``, ... (default: CUDA when available).
        max_answer_tokens: probe at most this many answer positions per sample.
        chat_template: wrap the query in the tokenizer's chat template (a user turn) first.
        chunk_rows: answer positions scored at once (bounds memory with large vocabularies).
    """
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError("train", "trainwire.producers.probe") from exc

    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    for spec in models:
        check_model(spec)
    words = list(words)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    report = ProbeReport()
    source = Source.current("trainwire.probe")
    for spec in models:
        todo = [s for s in samples if done is None or (run_id, spec.name, s.sample_id) not in done]
        report.skipped[spec.name] = len(samples) - len(todo)
        report.probed[spec.name] = 0
        if not todo:
            continue
        tokenizer = AutoTokenizer.from_pretrained(spec.path, local_files_only=True)
        targets = target_tokens(tokenizer, words)
        report.targets[spec.name] = targets
        if not targets:
            logger.warning("trainwire probe: none of the target words is a single token for %s", spec.name)
        model = AutoModelForCausalLM.from_pretrained(spec.path, local_files_only=True).to(device).eval()
        max_len = getattr(model.config, "max_position_embeddings", None)
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            payloads = _probe_batch(
                model,
                tokenizer,
                batch,
                targets,
                spec.name,
                device,
                max_answer_tokens,
                max_len,
                chat_template,
                chunk_rows,
            )
            for payload in payloads:
                emitter.emit(Event(run_id=run_id, payload=payload, source=source))
            report.events += len(payloads)
            emitter.flush(60.0)
            if done is not None:
                done.add_many([(run_id, spec.name, s.sample_id) for s in batch])
            report.probed[spec.name] += len(batch)
        del model
    return report


def _encode_pair(tokenizer: Any, sample: ProbeSample, chat_template: bool) -> tuple[list[int], list[int]]:
    if chat_template:
        prefix = tokenizer.apply_chat_template(
            [{"role": "user", "content": sample.query}], add_generation_prompt=True, tokenize=False
        )
        prefix_ids = tokenizer.encode(prefix, add_special_tokens=False)
    else:
        prefix_ids = tokenizer.encode(sample.query, add_special_tokens=True)
    answer_ids = tokenizer.encode(sample.answer, add_special_tokens=False)
    if not prefix_ids:  # the first answer token needs something to be predicted from
        prefix_ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    return prefix_ids, answer_ids


def _probe_batch(
    model: Any,
    tokenizer: Any,
    batch: Sequence[ProbeSample],
    targets: dict[str, int],
    model_name: str,
    device: str,
    max_answer_tokens: int | None,
    max_len: int | None,
    chat_template: bool,
    chunk_rows: int,
) -> list[Logits]:
    """One forward pass over ``batch`` (right-padded); the ``logits`` payloads of every answer position."""
    import torch

    rows: list[tuple[list[int], int, int]] = []  # ids, first answer index, number of answer positions
    for sample in batch:
        prefix_ids, answer_ids = _encode_pair(tokenizer, sample, chat_template)
        if max_answer_tokens is not None:
            answer_ids = answer_ids[:max_answer_tokens]
        ids = prefix_ids + answer_ids
        if max_len is not None and len(ids) > max_len:
            ids = ids[:max_len]
        rows.append((ids, len(prefix_ids), max(0, len(ids) - len(prefix_ids))))
    width = max(len(ids) for ids, _, _ in rows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, _, _) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[i, : len(ids)] = 1
    with torch.inference_mode():
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits

    # the logits at index k predict token k + 1: answer position j is predicted at first + j - 1
    where_row, where_col, keys = [], [], []
    for i, (_, first, count) in enumerate(rows):
        for j in range(count):
            where_row.append(i)
            where_col.append(first + j - 1)
            keys.append((i, j))
    if not keys or not targets:
        return []
    rows_index = torch.tensor(where_row, device=logits.device)
    cols_index = torch.tensor(where_col, device=logits.device)
    target_ids = torch.tensor(list(targets.values()), device=logits.device)
    target_logits, probs, ranks = [], [], []
    for start in range(0, len(keys), chunk_rows):  # bounded memory with 150k-token vocabularies
        picked = logits[rows_index[start : start + chunk_rows], cols_index[start : start + chunk_rows]]
        picked = picked.float()  # (rows, vocab)
        chosen = picked[:, target_ids].contiguous()  # (rows, targets)
        ordered = torch.sort(picked, dim=-1).values
        greater = picked.shape[-1] - torch.searchsorted(ordered, chosen, right=True)  # logits above the target's
        log_norm = torch.logsumexp(picked, dim=-1, keepdim=True)
        target_logits += chosen.cpu().tolist()
        probs += (chosen - log_norm).exp().cpu().tolist()
        ranks += (greater + 1).cpu().tolist()

    out = []
    names = list(targets)
    token_ids = list(targets.values())
    for n, (i, j) in enumerate(keys):
        sample = batch[i]
        for k, name in enumerate(names):
            out.append(
                Logits(
                    model=model_name,
                    sample_id=sample.sample_id,
                    position=j,
                    target_token=name,
                    logit=target_logits[n][k],
                    probability=probs[n][k],
                    rank=ranks[n][k],
                    token_id=token_ids[k],
                    level=sample.level,
                    correct=sample.correct,
                )
            )
    return out


# --------------------------------------------------------------------------- command


@click.group("probe")
def probe_command() -> None:
    """Probe models: read-only passes over a dataset that emit what the models lean towards."""


@probe_command.command("logits")
@click.option(
    "--model", "model_specs", multiple=True, required=True, metavar="NAME=PATH", help="A model to probe (repeatable)."
)
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL of {query, answer, level, correct}.",
)
@click.option(
    "--words",
    multiple=True,
    help="Target words, comma-separated or repeated (default: wait, aha, check, think, hmm, let, actually, ...).",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Samples per forward pass."
)
@click.option("--run", "run_id", help="Run id of the events (default: probe-<data file name>).")
@click.option("--device", help="Device to run on (default: cuda when available, else cpu).")
@click.option("--max-answer-tokens", type=click.IntRange(min=1), help="Probe at most this many answer tokens.")
@click.option("--chat-template", is_flag=True, help="Put the query in the tokenizer's chat template first.")
@click.pass_obj
def probe_logits(
    settings: Settings,
    model_specs: tuple[str, ...],
    data_path: Path,
    words: tuple[str, ...],
    batch_size: int,
    run_id: str | None,
    device: str | None,
    max_answer_tokens: int | None,
    chat_template: bool,
) -> None:
    """Emit target-word logits per model, sample and answer position (reruns skip what is done).

    Each --model is a directory (or a hub id in the local Hugging Face cache); a missing one stops
    the command before anything runs. Bad data lines are reported with file and line and skipped;
    the exit status is 1 if there were any.
    """
    models = [parse_model_spec(spec) for spec in model_specs]
    for model in models:
        check_model(model)
    word_list = [w.strip() for chunk in words for w in chunk.split(",") if w.strip()] or list(DEFAULT_WORDS)
    samples, errors = load_samples(data_path)
    for error in errors:
        click.echo(f"bad line: {error}", err=True)
    run_id = run_id or f"probe-{data_path.stem}"
    with Emitter(settings) as emitter:
        report = run_probe(
            models,
            samples,
            run_id=run_id,
            emitter=emitter,
            done=DoneList.for_settings(settings),
            words=word_list,
            batch_size=batch_size,
            device=device,
            max_answer_tokens=max_answer_tokens,
            chat_template=chat_template,
        )
    for spec in models:
        targets = report.targets.get(spec.name)
        click.echo(
            f"{spec.name}: {report.probed[spec.name]} samples probed, {report.skipped[spec.name]} already done"
            + (f", targets: {' '.join(repr(t) for t in targets)}" if targets else "")
        )
    click.echo(f"run {run_id}: {report.events} logits events, {len(errors)} bad lines in {data_path}")
    if errors:
        raise click.ClickException(f"{len(errors)} bad line(s) in {data_path} were not probed (listed above)")
