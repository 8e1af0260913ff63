"""The judge worker: interactions in, ``judge_request`` and ``judge_score`` events out.

:class:`JudgeWorker` is one consumer group member on two topics:

- ``interactions``: each record goes through the :class:`~trainwire.judge.trigger.JudgeTrigger`;
  the chosen ones are published as ``judge_request`` events (which the store worker writes to
  ClickHouse, and which come back to this worker on the other topic);
- ``judge_requests``: each batch is graded concurrently by the :class:`~trainwire.judge.client.Judge`
  and published as ``judge_score`` events, one per request, failed judgements included.

The commit order of one batch, written down once in :meth:`JudgeWorker.process_batch`:

1. every record decoded and handled (requests published, scores judged and published);
2. the emitter flushed (every event delivered to the bus, or fsynced to its spool);
3. dead letters (records that do not decode, or that the trigger or the judge fails on) published;
4. consumer offsets committed.

A crash replays at most one batch; the trigger's request ids and the scores' ids are derived
from what they answer and the judge's configuration (and keep its timestamp), so the repeats
collapse in ClickHouse, and the judge cache means a replayed request costs no second call.

With a judge in ``mode="group"`` the requests are gathered into GRPO groups
(:class:`~trainwire.judge.grouping.GroupCollector`, which says when a group is complete) and each
complete group is graded in one call; the offsets are committed only up to the first record of a
group still open, so a crash replays the open groups.

``trainwire judge run`` runs it; ``trainwire worker`` stores what it publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from trainwire.bus import Emitter, make_transport, open_consumer
from trainwire.bus.publisher import Publisher
from trainwire.config import Settings
from trainwire.errors import BusError
from trainwire.events import Event, Interaction, JudgeRequest, JudgeScore
from trainwire.judge.grouping import GroupCollector, Member
from trainwire.judge.trigger import JudgeTrigger, TriggerConfig
from trainwire.sinks.dead_letter import DeadLetters, failure
from trainwire.topics import event_topic

if TYPE_CHECKING:
    from trainwire.judge.client import Judge, JudgeConfig

__all__ = ["JudgeWorker", "judge_command", "score_event", "score_event_id"]

logger = logging.getLogger("trainwire.judge")
LIBRARY = "trainwire.judge"
_SCORE_NAMESPACE = uuid.UUID("9d2b4f61-3c7a-4e0d-8f15-6a9e2c3b7d48")


def score_event_id(request_event_id: str, config_id: str) -> str:
    """The id of a score event: the same for the same request judged by the same judge configuration
    (``JudgeScore.config_id``: model, template, mode, parser, sampling), so a replay or a rescore with
    an unchanged configuration adds no row, and another configuration's score is a row of its own."""
    return str(uuid.uuid5(_SCORE_NAMESPACE, f"{request_event_id}\0{config_id}"))


def score_event(request: Event, score: JudgeScore) -> Event:
    """The ``judge_score`` event answering ``request`` (same run, same time, a derived id)."""
    return Event(
        run_id=request.run_id,
        payload=score,
        event_id=score_event_id(request.event_id, score.config_id),
        ts=request.ts,
    )


class JudgeWorker:
    """Consumes interactions and judge requests, publishes requests and scores (see the module docstring).

    Args:
        settings: the bus to use.
        judge: the judge that grades requests.
        trigger: turns interactions into requests; None to only grade requests others publish.
        group: the consumer group.
        emitter: publishes requests and scores (default: a new one on ``settings``, closed by :meth:`run`).
        max_batch: records per batch (a batch is judged concurrently, then committed).
        flush_timeout_s: how long to wait for the emitter at a checkpoint before giving up on the batch.
        groups: when a GRPO group is complete, for a judge in ``mode="group"`` (default: a
            :class:`~trainwire.judge.grouping.GroupCollector` with no known size, 30 s wait).
    """

    def __init__(
        self,
        settings: Settings,
        judge: Judge,
        *,
        trigger: JudgeTrigger | None = None,
        group: str = "trainwire-judge",
        emitter: Emitter | None = None,
        max_batch: int | None = None,
        flush_timeout_s: float = 60.0,
        groups: GroupCollector | None = None,
    ):
        self.settings = settings
        self.judge = judge
        self.trigger = trigger
        self.group = group
        self._own_emitter = emitter is None
        self.emitter = emitter or Emitter(settings)
        self.max_batch = max_batch or max(64, judge.config.concurrency * 4)
        self.flush_timeout_s = flush_timeout_s
        self.groups = (GroupCollector() if groups is None else groups) if judge.config.mode == "group" else None
        prefix = settings.topic_prefix
        self.topics = [event_topic(prefix, "judge_request")]
        if trigger is not None:
            self.topics.insert(0, event_topic(prefix, "interaction"))
        self._publisher = Publisher(make_transport(settings), settings.data_dir)
        self.dead_letters = DeadLetters(self._publisher, prefix)
        self.records_in = 0
        self.requests_out = 0
        self.scores_out = 0
        self.failed_scores = 0

    async def run(self, stop: asyncio.Event | None = None, idle_exit_s: float | None = None) -> None:
        """Consume until ``stop`` is set, or until nothing new arrived for ``idle_exit_s`` seconds."""
        stop = stop or asyncio.Event()
        consumer = open_consumer(self.settings, self.topics, self.group)
        await consumer.start()
        try:
            last_record = time.monotonic()
            while not stop.is_set():
                records = await consumer.getmany(timeout_ms=500, max_records=self.max_batch)
                if records:
                    await self.process_batch(records)
                    last_record = time.monotonic()
                elif idle_exit_s is not None and time.monotonic() - last_record >= idle_exit_s:
                    if self.groups is not None and len(self.groups):
                        await self.process_batch([], drain=True)  # the stream is over: judge open groups as they are
                        await consumer.commit()
                    break
                elif self.groups is not None and self.groups.has_due(time.monotonic()):
                    await self.process_batch([])  # groups that waited long enough
                else:
                    continue
                # stopped or not, an open group's records stay uncommitted: the next start reads them again
                await consumer.commit(self.groups.held() if self.groups is not None else None)
        finally:
            await consumer.stop()
            await self._publisher.close()
            if self._own_emitter:
                await asyncio.to_thread(self.emitter.close)

    async def process_batch(self, records: list[Any], *, drain: bool = False) -> None:
        """Handle one batch up to the point where its offsets may be committed (steps 1-3 of the order).

        A record that does not decode, or that the trigger or the judge fails on, is a dead letter
        with the reason (the workers' poison-record policy, :class:`~trainwire.sinks.dead_letter.DeadLetters`);
        the rest of the batch is handled and committed. In group mode the requests join their
        groups, and the groups complete now (all of them with ``drain``) are judged.
        """
        self.records_in += len(records)
        requests: list[tuple[Any, Event]] = []
        for record in records:
            event = self.dead_letters.decode(record)
            if event is None:
                continue
            if isinstance(event.payload, Interaction):
                if self.trigger is not None:
                    try:
                        outputs = self.trigger.process(event)
                    except Exception as exc:
                        self.dead_letters.not_processed(record, [failure("trigger", exc)])
                        continue
                    for out in outputs:
                        self.emitter.emit(out)
                        self.requests_out += 1
            elif isinstance(event.payload, JudgeRequest):
                requests.append((record, event))
        if self.groups is None:
            judged = [self._score(record, request) for record, request in requests]
        else:
            now = time.monotonic()
            complete = [group for member in requests for group in self.groups.add(*member, now)]
            complete += self.groups.drain() if drain else self.groups.due(now)
            judged = [self._score_group(group) for group in complete]
        for scores in await asyncio.gather(*judged):
            for score in scores:
                self.emitter.emit(score)
                self.scores_out += 1
                self.failed_scores += not score.payload.success
        if not await asyncio.to_thread(self.emitter.flush, self.flush_timeout_s):
            raise BusError(f"the emitter did not flush within {self.flush_timeout_s:g}s; the batch is not committed")
        await self._publisher.flush()

    async def _score(self, record: Any, request: Event) -> list[Event]:
        """The score event answering ``request``; none when judging it raised (then it is a dead letter)."""
        try:
            return [score_event(request, await self.judge.judge(request.payload))]  # type: ignore[arg-type]
        except Exception as exc:
            self.dead_letters.not_processed(record, [failure("judge", exc)])
            return []

    async def _score_group(self, group: list[Member]) -> list[Event]:
        """The score events answering a group's requests (one call); none when judging it raised
        (then each of its requests is a dead letter)."""
        try:
            scores = await self.judge.judge_group([request.payload for _, request in group])  # type: ignore[misc]
        except Exception as exc:
            for record, _ in group:
                self.dead_letters.not_processed(record, [failure("judge", exc)])
            return []
        return [score_event(request, score) for (_, request), score in zip(group, scores, strict=True)]


# --------------------------------------------------------------------------- commands


def judge_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The click options that build a :class:`JudgeConfig` (shared by ``judge run`` and ``judge eval``)."""
    options = [
        click.option("--url", "base_url", envvar="TRAINWIRE_JUDGE_URL", help="OpenAI-compatible API of the judge."),
        click.option("--model", envvar="TRAINWIRE_JUDGE_MODEL", help="Judge model name."),
        click.option("--api-key", envvar="TRAINWIRE_JUDGE_API_KEY", help="API key of the judge server."),
        click.option("--template", envvar="TRAINWIRE_JUDGE_TEMPLATE", help="Template: default, ru, or a file."),
        click.option(
            "--examples",
            envvar="TRAINWIRE_JUDGE_EXAMPLES",
            type=click.Path(exists=True, dir_okay=False),
            help="Few-shot examples, a JSONL file.",
        ),
        click.option("--concurrency", type=int, default=None, help="Judge calls in flight at most (default 8)."),
        click.option("--timeout", "timeout_s", type=float, default=None, help="Seconds per judge call (default 60)."),
        click.option("--retries", "max_retries", type=int, default=None, help="Retries on 429/5xx (default 4)."),
        click.option("--structured", is_flag=True, default=None, help="Ask for JSON output (response_format)."),
        click.option(
            "--guided-choice",
            is_flag=True,
            default=None,
            help="Constrain the answer to 'Score: N' (vLLM guided_choice): every answer parses, no reasoning.",
        ),
        click.option(
            "--api",
            envvar="TRAINWIRE_JUDGE_API",
            type=click.Choice(["chat", "completions"]),
            default=None,
            help="The judge server's API: chat (default) or completions (a base model without a chat template).",
        ),
        click.option("--no-cache", "no_cache", is_flag=True, help="Do not use the judge cache."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def config_from_options(options: dict[str, Any]) -> JudgeConfig:
    """A :class:`JudgeConfig` from the values of :func:`judge_options` (None = not given)."""
    from trainwire.judge.client import JudgeConfig

    names = (
        "base_url",
        "model",
        "api_key",
        "template",
        "examples",
        "concurrency",
        "timeout_s",
        "max_retries",
        "api",
        "mode",
    )
    values = {name: options.get(name) for name in names}
    values["structured"] = options.get("structured") or None
    values["guided_choice"] = options.get("guided_choice") or None
    values["cache"] = False if options.get("no_cache") else None
    return JudgeConfig.from_env(**values)


async def _check_listening(judge: Judge) -> None:
    """:meth:`Judge.check_listening`, then close the judge's client."""
    try:
        await judge.check_listening()
    finally:
        await judge.aclose()


def report_failures(judged: int, failures: Mapping[str, int], url: str | None = None) -> None:
    """The judge commands' exit policy: say how many judgements failed, by kind, and at which URL.

    None failed: nothing is said. Some failed and some scored: a ``warning:`` line on stderr and
    exit status 0. Every judgement failed: an error (exit status 1), since a judge that scores
    nothing is down or misconfigured.
    """
    from trainwire.judge.client import describe_failures

    failed = sum(failures.values())
    if not failed:
        return
    at = f" (judge at {url})" if url else ""
    line = f"{failed} of {judged} judgements failed{at}: {describe_failures(failures)}"
    if failed < judged:
        click.echo(f"warning: {line}", err=True)
    else:
        raise click.ClickException(line)


def group_mode_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The click options of the judge's mode and of when a GRPO group is complete (``judge run``)."""
    options = [
        click.option(
            "--mode",
            type=click.Choice(["single", "group"]),
            default=None,
            help="single: one request per completion (default); group: one request per GRPO group, "
            "its completions scored relative to each other (the built-in 'group' template).",
        ),
        click.option(
            "--group-size",
            type=int,
            default=None,
            help="Group mode: completions per group (TRL's num_generations); a group is judged once it has them.",
        ),
        click.option(
            "--group-wait",
            type=float,
            default=30.0,
            show_default=True,
            help="Group mode: seconds a group waits for another completion before it is judged as it is.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group("judge")
def judge_command() -> None:
    """LLM-as-a-judge: grade interactions with a model behind an OpenAI-compatible API (vLLM).

    Every judge command says how many judgements failed and why (connection refused, HTTP
    status, timeout, unparseable answer) and exits with status 1 when none got a score.
    """


@judge_command.command("run")
@judge_options
@click.option("--group", default="trainwire-judge", show_default=True, help="Consumer group name.")
@click.option("--until-idle", type=float, default=None, help="Exit after this many seconds with no new events.")
@click.option("--sample-rate", type=float, default=1.0, show_default=True, help="Share of interactions to judge.")
@click.option("--runs", "runs", multiple=True, help="Only runs matching this glob (repeatable; default all).")
@click.option("--min-reward", type=float, default=None, help="Only interactions with reward >= this.")
@click.option("--max-reward", type=float, default=None, help="Only interactions with reward <= this.")
@click.option(
    "--success",
    type=click.Choice(["true", "false", "any"]),
    default="true",
    show_default=True,
    help="Only successful calls, only failed ones, or both.",
)
@click.option("--no-trigger", is_flag=True, help="Do not read interactions; only grade judge_request events.")
@group_mode_options
@click.pass_obj
def judge_run(
    settings: Settings,
    group: str,
    group_size: int | None,
    group_wait: float,
    until_idle: float | None,
    sample_rate: float,
    runs: tuple[str, ...],
    min_reward: float | None,
    max_reward: float | None,
    success: str,
    no_trigger: bool,
    **options: Any,
) -> None:
    """Grade interactions from the bus and publish judge_score events (Ctrl+C stops it cleanly).

    Reads the interactions topic, publishes a judge_request for each chosen interaction, grades
    the requests concurrently and publishes the scores. `trainwire worker` stores both in ClickHouse.
    """
    from trainwire.judge.client import Judge

    config = config_from_options(options)
    trigger = None
    if not no_trigger:
        trigger = JudgeTrigger(
            TriggerConfig(
                sample_rate=sample_rate,
                runs=runs or ("*",),
                min_reward=min_reward,
                max_reward=max_reward,
                success={"true": True, "false": False, "any": None}[success],
                whole_groups=config.mode == "group",
            )
        )
    groups = GroupCollector(group_size, group_wait)
    judge = Judge(config, cache_dir=Path(settings.data_dir) / "judge")
    click.echo(f"judge: {config.model} at {config.base_url}, template {judge.template_version}, mode {config.mode}")

    async def main() -> JudgeWorker:
        try:
            await judge.check_listening()
            worker = JudgeWorker(settings, judge, trigger=trigger, group=group, groups=groups)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await worker.run(stop, idle_exit_s=until_idle)
        finally:
            await judge.aclose()
        return worker

    worker = asyncio.run(main())
    stats = judge.stats
    click.echo(
        f"judge stopped: {worker.records_in} records, {worker.requests_out} requests, {worker.scores_out} scores "
        f"({worker.failed_scores} failed), {stats.cache_hits} from cache, {stats.retries} retries, "
        f"{worker.dead_letters.count} dead letters"
    )
    report_failures(stats.judged, stats.errors, config.base_url)


@judge_command.command("eval")
@click.argument("csv_path", metavar="DATA.csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@judge_options
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI (default sqlite in data dir).")
@click.option("--experiment", default="trainwire-judge", show_default=True, help="MLflow experiment name.")
@click.option("--run-name", default=None, help="MLflow run name (default: judge-eval-<file name>).")
@click.pass_obj
def judge_eval(
    settings: Settings,
    csv_path: Path,
    tracking_uri: str | None,
    experiment: str,
    run_name: str | None,
    **options: Any,
) -> None:
    """Grade a CSV of inputs,predictions (expectations optional) with the judge through mlflow.genai.evaluate.

    Logs an MLflow run with each row's score and reasoning (a table) and the mean score.
    """
    from trainwire.judge.client import Judge

    config = config_from_options(options)
    asyncio.run(_check_listening(Judge(config)))  # before MLflow starts: a judge that is not there is said at once
    os.environ.setdefault("TQDM_DISABLE", "1")  # MLflow's progress bar (tqdm reads it when imported)
    from trainwire.judge.mlflow_log import evaluate_csv

    with contextlib.redirect_stdout(io.StringIO()):  # MLflow's "Evaluation completed" banner: the line below says it
        result = evaluate_csv(
            csv_path,
            config,
            tracking_uri=tracking_uri,
            data_dir=settings.data_dir,
            experiment=experiment,
            run_name=run_name,
        )
    mean = "n/a" if result.mean_score is None else f"{result.mean_score:.3f}"
    click.echo(
        f"judged {result.rows} rows: {result.succeeded} scored, {result.rows - result.succeeded} failed, "
        f"mean score {mean}; MLflow run {result.run_id} at {result.tracking_uri}"
    )
    report_failures(result.rows, result.failures, config.base_url)


@judge_command.command("log")
@click.argument("run_id")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI (default sqlite in data dir).")
@click.option("--experiment", default="trainwire-judge", show_default=True, help="MLflow experiment name.")
@click.option("--run-name", default=None, help="MLflow run name (default: the trainwire run id).")
@click.pass_obj
def judge_log(settings: Settings, run_id: str, tracking_uri: str | None, experiment: str, run_name: str | None) -> None:
    """Log RUN_ID's judge scores (from ClickHouse) to MLflow: mean score per step and a table of examples."""
    from trainwire.judge.mlflow_log import log_run_from_store

    result = log_run_from_store(settings, run_id, tracking_uri=tracking_uri, experiment=experiment, run_name=run_name)
    click.echo(
        f"logged the {result.rows} judgements of {run_id} ({result.succeeded} scored) "
        f"as MLflow run {result.run_id} at {result.tracking_uri}"
    )
    report_failures(result.rows, result.failures)


@judge_command.command("rescore")
@judge_options
@click.option("--runs", "runs", multiple=True, required=True, help="Runs to rescore: an id or a glob (repeatable).")
@click.option(
    "--mode",
    type=click.Choice(["single", "group"]),
    default=None,
    help="single: one request per completion (default); group: one request per GRPO group.",
)
@click.option(
    "--source",
    type=click.Choice(["store", "bus"]),
    default="store",
    show_default=True,
    help="Read the interactions from ClickHouse, or replay the interactions topic from its earliest offset.",
)
@click.option("--idle", type=float, default=3.0, show_default=True, help="--source bus: stop after this idle time.")
@click.pass_obj
def judge_rescore(settings: Settings, runs: tuple[str, ...], source: str, idle: float, **options: Any) -> None:
    """Judge the interactions of RUNS again with another configuration (--template, --model, --mode, ...).

    The new scores are published beside the old ones (`trainwire worker` stores them), told apart
    by their provenance (judge_scores.config_id, template_name, mode, ...). Rescoring again with the
    same configuration adds no row and, through the judge cache, makes no call.
    """
    from trainwire.judge.client import Judge
    from trainwire.judge.rescore import BusReplay, RescoreResult, interactions_from_store, rescore
    from trainwire.store.clickhouse import open_store

    config = config_from_options(options)
    judge = Judge(config, cache_dir=Path(settings.data_dir) / "judge")
    trigger = JudgeTrigger(TriggerConfig(runs=runs, whole_groups=config.mode == "group"))
    replay = BusReplay(settings, idle_s=idle) if source == "bus" else None

    async def main() -> RescoreResult:
        try:
            await judge.check_listening()
            emitter = Emitter(settings)
            try:
                if replay is not None:
                    return await rescore(judge, replay, trigger, emitter)
                with open_store(settings) as store:
                    return await rescore(judge, interactions_from_store(store, runs), trigger, emitter)
            finally:
                await asyncio.to_thread(emitter.close)
        finally:
            await judge.aclose()

    result = asyncio.run(main())
    stats = judge.stats
    click.echo(
        f"rescored {result.interactions} interactions of {', '.join(runs)} from the {source} with {config.model}, "
        f"template {judge.template_version}, mode {config.mode} (config {judge.provenance['config_id']}): "
        f"{result.requests} requests, {result.scores} scores ({result.failed} failed), {stats.calls} calls, "
        f"{stats.cache_hits} from cache"
    )
    if replay is not None and replay.undecodable:
        click.echo(
            f"skipped {len(replay.undecodable)} records that do not decode, first: {replay.undecodable[0]}", err=True
        )
    click.echo("`trainwire worker` stores the new scores beside the old ones")
