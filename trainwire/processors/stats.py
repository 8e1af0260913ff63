"""Reward statistics: rolling per-run, per-reward-function stats, and GRPO group stats per step.

:class:`RewardStatsProcessor` reads ``interaction`` (and ``judge_score``) events and emits

- :class:`RewardStats`, one per run, window and reward function. The reward functions are
  ``total`` (the interaction's ``reward``) and each key of its ``rewards``. Two kinds of window:

  - ``steps``: tumbling windows of ``step_window`` training steps, ``[0, N)``, ``[N, 2N)``, ...
    A window is emitted when an interaction of a step at or beyond its end plus
    ``lateness_steps`` arrives, or on flush. Interactions without a step are not in these.
  - ``time``: a sliding window of ``time_window_s`` seconds of event time (``Event.ts``),
    advanced in hops of ``time_hop_s``: the data is kept in hop-sized buckets (each a mergeable
    summary) and the window ending at each hop boundary is the merge of the buckets inside it.
    It is emitted once the stream's event time passes the boundary by ``time_lateness_s``
    (windows without data are not emitted; on flush, the windows up to the last bucket are).
    Emitting a window merges ``time_window_s / time_hop_s`` bucket summaries: keep that ratio
    modest (tens, not thousands).

  Events that arrive after their window was emitted are counted in ``late`` (in the snapshot)
  and left out, never emitted twice. Non-finite rewards are counted in ``nonfinite`` and left
  out of the numbers.

- :class:`GroupStats`, one per run and step (see :class:`GroupStatsAggregator`): the share of
  GRPO groups whose rewards do not vary, the mean within-group std, the correlation of
  completion length with reward, and the agreement of judge scores with rule rewards.

std is the population standard deviation (ddof=0) everywhere. Quantiles (p10, p50, p90) come
from :class:`QuantileSketch`, exact up to ``sketch_k`` values and within a bound it reports
itself beyond.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from trainwire.errors import ConfigError
from trainwire.events import Event, GroupStatsPayload, Interaction, JudgeScore, RewardStatsPayload
from trainwire.processors.base import Processor

__all__ = [
    "GroupStats",
    "GroupStatsAggregator",
    "QuantileSketch",
    "RewardStats",
    "RewardStatsProcessor",
    "StatsConfig",
    "Summary",
    "mean_of",
    "pearson",
    "pstd_of",
    "spearman",
]

_STATS_NAMESPACE = uuid.UUID("0f6d2b1e-8c4a-4f7e-b3d2-5a9c1e7f0b24")
TOTAL = "total"
"""The reward-function name of an interaction's total ``reward``."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class StatsConfig:
    """Windows and accuracy of the reward statistics.

    - ``step_window``: steps per tumbling window.
    - ``time_window_s`` / ``time_hop_s``: length of the sliding event-time window and the hop it
      advances by (the window must be a whole number of hops).
    - ``lateness_steps``: a step (and its step window) stays open until an interaction this many
      steps past it arrives; raise it when judge scores or stragglers arrive late.
    - ``time_lateness_s``: a time window is emitted once event time is this far past its end.
    - ``sketch_k``: values per sketch level; quantiles are exact below it.
    - ``zero_std_eps``: a group whose reward std is at most this has "zero variance".
    - ``max_judge_scores``: judge scores waiting for their interaction kept per run (oldest dropped).
    """

    step_window: int = 10
    time_window_s: float = 300.0
    time_hop_s: float = 60.0
    lateness_steps: int = 0
    time_lateness_s: float = 0.0
    sketch_k: int = 256
    zero_std_eps: float = 1e-9
    max_judge_scores: int = 100_000

    def __post_init__(self) -> None:
        if self.step_window < 1:
            raise ConfigError("stats.step_window", f"must be at least 1, got {self.step_window}")
        if not self.time_hop_s > 0:
            raise ConfigError("stats.time_hop_s", f"must be positive, got {self.time_hop_s}")
        hops = self.time_window_s / self.time_hop_s
        if not self.time_window_s > 0 or abs(hops - round(hops)) > 1e-9:
            raise ConfigError(
                "stats.time_window_s",
                f"must be a positive multiple of time_hop_s ({self.time_hop_s}), got {self.time_window_s}",
            )
        if self.lateness_steps < 0:
            raise ConfigError("stats.lateness_steps", f"must be >= 0, got {self.lateness_steps}")
        if self.time_lateness_s < 0:
            raise ConfigError("stats.time_lateness_s", f"must be >= 0, got {self.time_lateness_s}")
        if self.sketch_k < 8:
            raise ConfigError("stats.sketch_k", f"must be at least 8, got {self.sketch_k}")
        if self.zero_std_eps < 0:
            raise ConfigError("stats.zero_std_eps", f"must be >= 0, got {self.zero_std_eps}")
        if self.max_judge_scores < 0:
            raise ConfigError("stats.max_judge_scores", f"must be >= 0, got {self.max_judge_scores}")

    @property
    def hops_per_window(self) -> int:
        """How many hop buckets one time window spans."""
        return round(self.time_window_s / self.time_hop_s)


# --------------------------------------------------------------------------- the sketch


class QuantileSketch:
    """A mergeable, serializable quantile sketch: a stack of compactors (KLL-style, fixed capacity).

    Values enter level 0. When a level holds more than ``k`` values it is sorted and compacted:
    every second value (alternately the odd or the even ones) moves up one level, where each
    value stands for twice as many inputs; with an odd count the largest value stays behind.

    Error: with ``n <= k`` values nothing is compacted and every quantile is exact. Beyond,
    compacting level ``h`` moves the rank of any value by at most ``2**h``, and level ``h`` is
    compacted at most ``n / (k * 2**h)`` times, so the rank of a returned quantile is off by at
    most ``n * (levels - 1) / k``: a normalized rank error of ``(levels - 1) / k``, where
    ``levels - 1 <= ceil(log2(n / k))``. :meth:`rank_error_bound` returns that bound for this
    sketch (e.g. k=256, n=100,000: at most 9/256 = 3.5%; in practice the alternating
    compactions cancel and the error is far smaller). Memory is at most ``k + 1`` floats per level.

    Quantiles use the nearest-rank rule: ``quantile(q)`` is the smallest value whose cumulative
    weight reaches ``q * n`` (the ``ceil(q * n)``-th smallest value when exact).
    """

    __slots__ = ("_flip", "k", "levels", "n")

    def __init__(self, k: int = 256):
        self.k = k
        self.n = 0
        self.levels: list[list[float]] = [[]]
        self._flip: list[int] = [0]

    def add(self, value: float) -> None:
        """Add one (finite) value."""
        self.extend((value,))

    def extend(self, values: Sequence[float]) -> None:
        """Add (finite) values: the same sketch as adding them one by one, compacted at the same points."""
        done = 0
        while done < len(values):
            base = self.levels[0]
            # up to the value that takes level 0 past k, which is compacted there as add would
            chunk = values[done : done + max(self.k + 1 - len(base), 1)]
            base.extend(map(float, chunk))
            self.n += len(chunk)
            done += len(chunk)
            if len(base) > self.k:
                self._compress()

    def merge(self, other: QuantileSketch) -> None:
        """Add everything ``other`` has seen (both must have the same ``k``)."""
        if other.k != self.k:
            raise ValueError(f"cannot merge sketches with k={self.k} and k={other.k}")
        while len(self.levels) < len(other.levels):
            self.levels.append([])
            self._flip.append(0)
        for h, values in enumerate(other.levels):
            self.levels[h].extend(values)
        self.n += other.n
        self._compress()

    def _compress(self) -> None:
        h = 0
        while h < len(self.levels):
            if len(self.levels[h]) > self.k:
                if h + 1 == len(self.levels):
                    self.levels.append([])
                    self._flip.append(0)
                buffer = sorted(self.levels[h])
                keep = [buffer.pop()] if len(buffer) % 2 else []
                self.levels[h + 1].extend(buffer[self._flip[h] :: 2])
                self._flip[h] ^= 1
                self.levels[h] = keep
            h += 1

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (0 <= q <= 1) by nearest rank; None when empty."""
        if self.n == 0:
            return None
        weighted = sorted((v, 1 << h) for h, values in enumerate(self.levels) for v in values)
        target = max(q * self.n, 1e-12)
        cumulative = 0
        for value, weight in weighted:
            cumulative += weight
            if cumulative >= target - 1e-9:
                return value
        return weighted[-1][0]

    def rank_error_bound(self) -> float:
        """The most a quantile's normalized rank can be off: 0 while exact, ``(levels - 1) / k`` after."""
        return (len(self.levels) - 1) / self.k

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state."""
        return {"k": self.k, "n": self.n, "levels": [list(v) for v in self.levels], "flip": list(self._flip)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantileSketch:
        """Rebuild a sketch from :meth:`to_dict`."""
        sketch = cls(int(data["k"]))
        sketch.n = int(data["n"])
        sketch.levels = [[float(v) for v in values] for values in data["levels"]]
        sketch._flip = [int(f) for f in data["flip"]]
        if len(sketch.levels) != len(sketch._flip) or not sketch.levels:
            raise ValueError("sketch levels and flips differ in length")
        return sketch


def _json_float(value: float) -> float | str:
    """``value``, or for NaN and the infinities the text that ``float()`` reads back (strict JSON has no
    number for them, and orjson would write null)."""
    return value if math.isfinite(value) else repr(value)


class Summary:
    """count, mean, std (Welford, merged by Chan's formula), min, max and a quantile sketch of finite values.

    :meth:`add` only buffers the value: the buffer is folded into the numbers when any of them is
    read (and every :data:`_FOLD_EVERY` values), value by value in the order they came, so the
    numbers are exactly those of folding each value as it comes, at a fraction of the cost per value.
    """

    __slots__ = ("_count", "_max", "_mean", "_min", "_nonfinite", "_pending", "_sketch", "_sq")

    def __init__(self, k: int = 256):
        self._count = 0
        self._mean = 0.0
        self._sq = 0.0  # sum of squared deviations from the mean
        self._min = math.inf
        self._max = -math.inf
        self._nonfinite = 0
        self._sketch = QuantileSketch(k)
        self._pending: list[float] = []

    def add(self, value: float) -> None:
        """Add one value; a NaN or infinity is only counted in ``nonfinite``."""
        pending = self._pending
        pending.append(value)
        if len(pending) >= _FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        """Fold the buffered values into the numbers and the sketch."""
        values = self._pending
        if not values:
            return
        self._pending = []
        # One sum (in C) instead of a test per value: a NaN or infinity makes it non-finite, and so does
        # an overflowing sum of finite values, which only costs the exact path.
        if not math.isfinite(sum(values)):
            finite = [v for v in values if math.isfinite(v)]
            self._nonfinite += len(values) - len(finite)
            if not finite:
                return
            values = finite
        count, mean, sq = self._count, self._mean, self._sq
        for value in values:
            count += 1
            delta = value - mean
            mean += delta / count
            sq += delta * (value - mean)
        self._count, self._mean, self._sq = count, mean, sq
        low, high = min(values), max(values)
        if low < self._min:
            self._min = low
        if high > self._max:
            self._max = high
        self._sketch.extend(values)

    @property
    def count(self) -> int:
        """How many finite values were added."""
        self._fold()
        return self._count

    @property
    def mean(self) -> float:
        """Mean of the finite values (0 while there are none)."""
        self._fold()
        return self._mean

    @property
    def min(self) -> float:
        """Smallest finite value (infinity while there are none)."""
        self._fold()
        return self._min

    @property
    def max(self) -> float:
        """Largest finite value (minus infinity while there are none)."""
        self._fold()
        return self._max

    @property
    def nonfinite(self) -> int:
        """How many NaN or infinite values were added (and left out)."""
        self._fold()
        return self._nonfinite

    @property
    def sketch(self) -> QuantileSketch:
        """The quantile sketch of the finite values."""
        self._fold()
        return self._sketch

    @property
    def std(self) -> float:
        """Population standard deviation (0 for fewer than two values)."""
        self._fold()
        return math.sqrt(max(self._sq, 0.0) / self._count) if self._count else 0.0

    def merge(self, other: Summary) -> None:
        """Add everything ``other`` has seen."""
        self._fold()
        other._fold()
        self._nonfinite += other._nonfinite
        if other._count == 0:
            return
        total = self._count + other._count
        delta = other._mean - self._mean
        self._sq += other._sq + delta * delta * self._count * other._count / total
        self._mean += delta * other._count / total
        self._count = total
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        self._sketch.merge(other._sketch)

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON-able state (min/max are null while empty; a mean or sum that overflowed is text)."""
        self._fold()
        return {
            "count": self._count,
            "mean": _json_float(self._mean),
            "sq": _json_float(self._sq),
            "min": self._min if self._count else None,
            "max": self._max if self._count else None,
            "nonfinite": self._nonfinite,
            "sketch": self._sketch.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        """Rebuild a summary from :meth:`to_dict`."""
        sketch = QuantileSketch.from_dict(data["sketch"])
        summary = cls(sketch.k)
        summary._count = int(data["count"])
        summary._mean = float(data["mean"])
        summary._sq = float(data["sq"])
        summary._min = math.inf if data["min"] is None else float(data["min"])
        summary._max = -math.inf if data["max"] is None else float(data["max"])
        summary._nonfinite = int(data["nonfinite"])
        summary._sketch = sketch
        return summary


_FOLD_EVERY = 4096
"""The most values a :class:`Summary` buffers before folding them in (a bound on its memory)."""


# --------------------------------------------------------------------------- outputs


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class RewardStats:
    """Statistics of one reward function over one window of one run.

    ``window`` is ``"steps"`` (then ``step_start`` inclusive / ``step_end`` exclusive are set and
    ``window_start``/``window_end`` are the first and last event times seen) or ``"time"`` (then
    the steps are None and ``[window_start, window_end)`` is the window). ``count`` counts finite
    values; the numbers are None when ``count`` is 0 (a window of only non-finite rewards).
    """

    run_id: str
    window: str
    reward_fn: str
    window_start: datetime
    window_end: datetime
    step_start: int | None
    step_end: int | None
    count: int
    nonfinite: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    p10: float | None
    p50: float | None
    p90: float | None

    def to_row(self) -> dict[str, Any]:
        """A dict of Python values, one per column (datetimes stay datetimes)."""
        return asdict(self)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO-8601 UTC text)."""
        row = self.to_row()
        row["window_start"] = _iso(self.window_start)
        row["window_end"] = _iso(self.window_end)
        return row

    def event_id(self) -> str:
        """A deterministic event id (from run, window and reward function): a replay rewrites the same row."""
        start = self.step_start if self.window == "steps" else _epoch_us(self.window_start)
        return str(
            uuid.uuid5(
                _STATS_NAMESPACE, f"reward_stats\x00{self.run_id}\x00{self.window}\x00{self.reward_fn}\x00{start}"
            )
        )

    def payload_dict(self) -> dict[str, Any]:
        """The fields of the proposed ``reward_stats`` event payload (the envelope's ``ts`` is ``window_end``).

        Times become Unix microseconds (``window_start_us``/``window_end_us``); the run is the envelope's.
        """
        row = self.to_row()
        del row["run_id"], row["window_start"], row["window_end"]
        return {
            "window_start_us": _epoch_us(self.window_start),
            "window_end_us": _epoch_us(self.window_end),
            **row,
        }

    def to_event(self) -> Event:
        """The ``reward_stats`` event to publish (deterministic id, ``ts`` = the window's end)."""
        return Event(
            self.run_id, RewardStatsPayload(**self.payload_dict()), event_id=self.event_id(), ts=self.window_end
        )


@dataclass(frozen=True, slots=True)
class GroupStats:
    """GRPO group statistics of one training step of one run.

    - ``interactions``: interactions of the step with a finite ``reward``;
    - ``groups``: groups (``group_id``) with at least two such interactions;
      ``zero_variance_groups`` of them have a reward std <= ``zero_std_eps``;
      ``zero_variance_share`` = zero_variance_groups / groups, ``mean_group_std`` the mean of the
      groups' stds (both None without groups);
    - ``reward_mean`` / ``reward_std`` over all the step's interactions;
    - ``length_reward_corr``: Pearson correlation of completion length (``completion_tokens``,
      else characters of ``completion``) with reward (None when either does not vary);
    - ``judge_pairs``: interactions with both a reward and a judge ``score_normalized``; over
      them ``judge_pearson``, ``judge_spearman`` and ``judge_median_agreement`` (the share of
      pairs where judge and reward fall on the same side of their medians, both at the median
      counting as the same side). None without pairs / without variation.
    """

    run_id: str
    step: int
    ts: datetime
    interactions: int
    groups: int
    zero_variance_groups: int
    zero_variance_share: float | None
    mean_group_std: float | None
    reward_mean: float | None
    reward_std: float | None
    length_reward_corr: float | None
    judge_pairs: int
    judge_pearson: float | None
    judge_spearman: float | None
    judge_median_agreement: float | None

    def to_row(self) -> dict[str, Any]:
        """A dict of Python values, one per column."""
        return asdict(self)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``ts`` as ISO-8601 UTC text)."""
        row = self.to_row()
        row["ts"] = _iso(self.ts)
        return row

    def event_id(self) -> str:
        """A deterministic event id (UUID derived from run and step): a replay rewrites the same row."""
        return str(uuid.uuid5(_STATS_NAMESPACE, f"group_stats\x00{self.run_id}\x00{self.step}"))

    def payload_dict(self) -> dict[str, Any]:
        """The fields of the proposed ``group_stats`` event payload (run and ``ts`` go in the envelope)."""
        row = self.to_row()
        del row["run_id"], row["ts"]
        return row

    def to_event(self) -> Event:
        """The ``group_stats`` event to publish (deterministic id)."""
        return Event(self.run_id, GroupStatsPayload(**self.payload_dict()), event_id=self.event_id(), ts=self.ts)


# --------------------------------------------------------------------------- small math


def _scaled(values: Sequence[float]) -> tuple[list[float], int]:
    """``values`` divided by a power of two that brings the largest magnitude into [0.5, 1), and that power.

    Scaling by a power of two is exact (for values that stay normal), so sums and squares of the
    scaled values cannot overflow however close to the float maximum the values are, and every
    result computed on them scales back exactly.
    """
    largest = max((abs(v) for v in values), default=0.0)
    exponent = math.frexp(largest)[1] if largest else 0
    return [math.ldexp(v, -exponent) for v in values], exponent


def mean_of(values: Sequence[float]) -> float:
    """The mean of finite values (at least one): finite for any finite values, even near the float maximum."""
    scaled, exponent = _scaled(values)
    mean = math.fsum(scaled) / len(scaled)
    return math.ldexp(min(max(mean, min(scaled)), max(scaled)), exponent)  # rounding never leaves [min, max]


def pstd_of(values: Sequence[float]) -> float:
    """The population std (ddof=0) of finite values (at least one): finite for any finite values.

    It is at most half the range (max - min) / 2, so it is representable whenever the values are;
    the result is kept within that bound against rounding.
    """
    scaled, exponent = _scaled(values)
    mean = math.fsum(scaled) / len(scaled)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in scaled) / len(scaled))
    return math.ldexp(min(std, (max(scaled) - min(scaled)) / 2), exponent)


def _median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """Pearson correlation of two equally long lists; None with fewer than 2 pairs or no variation."""
    if len(xs) != len(ys):
        raise ValueError(f"pearson needs equally long lists, got {len(xs)} and {len(ys)}")
    if len(xs) < 2:
        return None
    # Scaled (exactly, by a power of two each) so that no sum or square overflows; the
    # correlation does not depend on the scale of either list.
    (xs, _), (ys, _) = _scaled(xs), _scaled(ys)
    mx, my = math.fsum(xs) / len(xs), math.fsum(ys) / len(ys)
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    syy = math.fsum((y - my) ** 2 for y in ys)
    if sxx <= 0 or syy <= 0:
        return None
    return max(-1.0, min(1.0, sxy / (math.sqrt(sxx) * math.sqrt(syy))))


def _ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman rank correlation (Pearson of average ranks); None as for :func:`pearson`."""
    return pearson(_ranks(xs), _ranks(ys))


def _median_agreement(xs: list[float], ys: list[float]) -> float | None:
    if not xs:
        return None
    mx, my = _median(xs), _median(ys)

    def side(v: float, m: float) -> int:
        return (v > m) - (v < m)

    same = sum(1 for x, y in zip(xs, ys, strict=True) if side(x, mx) == side(y, my))
    return same / len(xs)


# --------------------------------------------------------------------------- group stats


class GroupStatsAggregator:
    """Per-run, per-step GRPO group statistics; pure state, used by the stats and health processors.

    Feed it interactions and judge scores (:meth:`add_interaction`, :meth:`add_judge_score`); a
    step is complete when an interaction of a step beyond it plus ``lateness_steps`` arrives
    (returned by ``add_interaction``) or on :meth:`flush`.
    """

    def __init__(self, config: StatsConfig):
        self.config = config
        # run -> step -> [[interaction_id, group_id, reward, length, ts_epoch_us], ...]
        self._steps: dict[str, dict[int, list[list[Any]]]] = {}
        self._judge: dict[str, dict[str, float]] = {}  # run -> interaction_id -> score_normalized
        self._closed: dict[str, int] = {}  # run -> highest step emitted
        self.late = 0

    def add_interaction(self, event: Event) -> list[GroupStats]:
        """Record one interaction event; return the group stats of the steps it completes."""
        payload = event.payload
        if not isinstance(payload, Interaction) or payload.step is None:
            return []
        run, step = event.run_id, payload.step
        closed = self._closed.get(run)
        if closed is not None and step <= closed:
            self.late += 1
            return []
        out = self._complete(run, step - self.config.lateness_steps - 1)
        reward = payload.reward
        if reward is not None and math.isfinite(reward):
            length = payload.completion_tokens if payload.completion_tokens is not None else len(payload.completion)
            steps = self._steps.get(run)
            if steps is None:
                steps = self._steps[run] = {}
            rows = steps.get(step)
            if rows is None:
                rows = steps[step] = []
            rows.append([event.event_id, payload.group_id, reward, length, _epoch_us(event.ts)])
        return out

    def add_judge_score(self, event: Event) -> None:
        """Record a judge score (matched to its interaction by ``interaction_id``)."""
        payload = event.payload
        if not isinstance(payload, JudgeScore) or not payload.success or payload.score_normalized is None:
            return
        if not math.isfinite(payload.score_normalized) or self.config.max_judge_scores == 0:
            return
        scores = self._judge.setdefault(event.run_id, {})
        scores.pop(payload.interaction_id, None)
        scores[payload.interaction_id] = payload.score_normalized
        while len(scores) > self.config.max_judge_scores:
            del scores[next(iter(scores))]

    def flush(self) -> list[GroupStats]:
        """Complete every open step of every run."""
        out: list[GroupStats] = []
        for run in list(self._steps):
            out.extend(self._complete(run, None))
        return out

    def _complete(self, run: str, upto: int | None) -> list[GroupStats]:
        steps = self._steps.get(run)
        if not steps or (upto is not None and min(steps) > upto):
            return []  # what most events find: no step to complete
        due = sorted(s for s in steps if upto is None or s <= upto)
        out = []
        for step in due:
            out.append(self._stats(run, step, steps.pop(step)))
            self._closed[run] = max(self._closed.get(run, step), step)
        return out

    def _stats(self, run: str, step: int, rows: list[list[Any]]) -> GroupStats:
        eps = self.config.zero_std_eps
        rewards = [r[2] for r in rows]
        groups: dict[str, list[float]] = {}
        for row in rows:
            if row[1] is not None:
                groups.setdefault(row[1], []).append(row[2])
        stds = [pstd_of(values) for values in groups.values() if len(values) >= 2]
        zero = sum(1 for s in stds if s <= eps)
        judge = self._judge.get(run, {})
        pairs = [(judge.pop(r[0]), r[2]) for r in rows if r[0] in judge]
        js, rs = [p[0] for p in pairs], [p[1] for p in pairs]
        return GroupStats(
            run_id=run,
            step=step,
            ts=_from_epoch_us(max(r[4] for r in rows)),
            interactions=len(rows),
            groups=len(stds),
            zero_variance_groups=zero,
            zero_variance_share=zero / len(stds) if stds else None,
            mean_group_std=mean_of(stds) if stds else None,
            reward_mean=mean_of(rewards),
            reward_std=pstd_of(rewards),
            length_reward_corr=pearson([float(r[3]) for r in rows], rewards),
            judge_pairs=len(pairs),
            judge_pearson=pearson(js, rs),
            judge_spearman=spearman(js, rs) if pairs else None,
            judge_median_agreement=_median_agreement(js, rs),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state."""
        return {
            "steps": {run: {str(s): rows for s, rows in steps.items()} for run, steps in self._steps.items()},
            "judge": self._judge,
            "closed": self._closed,
            "late": self.late,
        }

    def load_dict(self, data: dict[str, Any]) -> None:
        """Replace the state with :meth:`to_dict` output."""
        self._steps = {
            run: {int(s): [list(r) for r in rows] for s, rows in steps.items()} for run, steps in data["steps"].items()
        }
        self._judge = {run: {k: float(v) for k, v in scores.items()} for run, scores in data["judge"].items()}
        self._closed = {run: int(s) for run, s in data["closed"].items()}
        self.late = int(data["late"])


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _epoch_us(ts: datetime) -> int:
    return (ts - _EPOCH) // _MICROSECOND


def _from_epoch_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


# --------------------------------------------------------------------------- the processor


def _reward_values(payload: Interaction) -> list[tuple[str, float]]:
    values = [] if payload.reward is None else [(TOTAL, payload.reward)]
    values.extend(sorted(payload.rewards.items()))
    return values


def _fn_order(name: str) -> tuple[int, str]:
    return (0, "") if name == TOTAL else (1, name)


@dataclass(slots=True)
class _StepWindow:
    first_us: int
    last_us: int
    summaries: dict[str, Summary] = field(default_factory=dict)


@dataclass(slots=True)
class _RunState:
    step_windows: dict[int, _StepWindow] = field(default_factory=dict)  # window index -> data
    step_closed: int | None = None  # highest step-window index emitted
    buckets: dict[int, dict[str, Summary]] = field(default_factory=dict)  # hop index -> fn -> summary
    time_emitted: int | None = None  # hop index of the last emitted window end (exclusive bucket)
    watermark_us: int | None = None  # highest event time seen


class RewardStatsProcessor(Processor[RewardStats | GroupStats]):
    """Rolling reward stats (:class:`RewardStats`) and GRPO group stats (:class:`GroupStats`) per run.

    Handles ``interaction`` and ``judge_score`` events; ignores the rest. Outputs are in a
    deterministic order: group stats by step, then step windows, then time windows, each by
    window and reward function (``total`` first, then the others by name).
    """

    NAME = "reward_stats"

    def __init__(self, config: StatsConfig | None = None):
        self.config = config or StatsConfig()
        self._hop_us = round(self.config.time_hop_s * 1_000_000)
        self._lateness_us = round(self.config.time_lateness_s * 1_000_000)
        self._runs: dict[str, _RunState] = {}
        self.groups = GroupStatsAggregator(self.config)
        self.late_steps = 0
        self.late_time = 0

    # ----------------------------------------------------------------- processing

    def process(self, event: Event) -> list[RewardStats | GroupStats]:
        """Take one event; return the group stats and windows it completes."""
        payload = event.payload
        if isinstance(payload, JudgeScore):
            self.groups.add_judge_score(event)
            return []
        if not isinstance(payload, Interaction):
            return []
        out: list[RewardStats | GroupStats] = list(self.groups.add_interaction(event))
        state = self._runs.get(event.run_id)
        if state is None:
            state = self._runs[event.run_id] = _RunState()
        values = _reward_values(payload)
        ts_us = _epoch_us(event.ts)
        if payload.step is not None:
            out.extend(self._add_step(event.run_id, state, payload.step, ts_us, values))
        out.extend(self._add_time(event.run_id, state, ts_us, values))
        return out

    def flush(self) -> list[RewardStats | GroupStats]:
        """Emit every open step, step window and time window."""
        out: list[RewardStats | GroupStats] = list(self.groups.flush())
        for run, state in self._runs.items():
            out.extend(self._close_steps(run, state, None))
        for run, state in self._runs.items():
            if state.buckets:
                out.extend(self._close_time(run, state, max(state.buckets) + 1))
        return out

    def _add_step(
        self, run: str, state: _RunState, step: int, ts_us: int, values: list[tuple[str, float]]
    ) -> list[RewardStats]:
        n = self.config.step_window
        index = step // n
        if state.step_closed is not None and index <= state.step_closed:
            self.late_steps += 1
            return []
        # windows that end at or before step - lateness are complete
        out = self._close_steps(run, state, (step - self.config.lateness_steps) // n - 1)
        if not values:
            return out
        window = state.step_windows.get(index)
        if window is None:
            window = state.step_windows[index] = _StepWindow(ts_us, ts_us)
        elif ts_us < window.first_us:
            window.first_us = ts_us
        elif ts_us > window.last_us:
            window.last_us = ts_us
        self._add_values(window.summaries, values)
        return out

    def _add_values(self, summaries: dict[str, Summary], values: list[tuple[str, float]]) -> None:
        for name, value in values:
            summary = summaries.get(name)
            if summary is None:
                summary = summaries[name] = Summary(self.config.sketch_k)
            summary.add(value)

    def _close_steps(self, run: str, state: _RunState, upto: int | None) -> list[RewardStats]:
        if not state.step_windows or (upto is not None and min(state.step_windows) > upto):
            return []  # what most events find: nothing to close
        out = []
        for index in sorted(i for i in state.step_windows if upto is None or i <= upto):
            window = state.step_windows.pop(index)
            n = self.config.step_window
            for name in sorted(window.summaries, key=_fn_order):
                out.append(
                    _stats(
                        run,
                        "steps",
                        name,
                        window.summaries[name],
                        _from_epoch_us(window.first_us),
                        _from_epoch_us(window.last_us),
                        index * n,
                        (index + 1) * n,
                    )
                )
            state.step_closed = index if state.step_closed is None else max(state.step_closed, index)
        return out

    def _add_time(self, run: str, state: _RunState, ts_us: int, values: list[tuple[str, float]]) -> list[RewardStats]:
        hop_us = self._hop_us
        bucket = ts_us // hop_us
        if state.time_emitted is not None and bucket < state.time_emitted:
            self.late_time += 1
            return []
        if state.watermark_us is None or ts_us > state.watermark_us:
            state.watermark_us = ts_us
        if values:
            summaries = state.buckets.get(bucket)
            if summaries is None:
                summaries = state.buckets[bucket] = {}
            self._add_values(summaries, values)
        # windows ending at hop boundary e (exclusive bucket index) are due when watermark >= e*hop + lateness
        due = (state.watermark_us - self._lateness_us) // hop_us
        return self._close_time(run, state, due)

    def _close_time(self, run: str, state: _RunState, due: int) -> list[RewardStats]:
        """Emit the windows ending at hop boundaries up to ``due`` that hold data; drop old buckets."""
        if state.time_emitted is not None and due <= state.time_emitted:
            return []  # what most events find: no hop boundary passed
        hops = self.config.hops_per_window
        hop_us = self._hop_us
        # a bucket b is in the windows ending at b+1 .. b+hops; only ends not emitted yet and due now
        start = state.time_emitted + 1 if state.time_emitted is not None else None
        ends = sorted(
            {
                e
                for b in state.buckets
                for e in range(b + 1 if start is None else max(b + 1, start), min(b + hops, due) + 1)
            }
        )
        out = []
        for end in ends:
            merged: dict[str, Summary] = {}
            for b in range(end - hops, end):
                for name, summary in state.buckets.get(b, {}).items():
                    merged.setdefault(name, Summary(self.config.sketch_k)).merge(summary)
            begin_us, end_us = (end - hops) * hop_us, end * hop_us
            for name in sorted(merged, key=_fn_order):
                out.append(
                    _stats(
                        run,
                        "time",
                        name,
                        merged[name],
                        _from_epoch_us(begin_us),
                        _from_epoch_us(end_us),
                        None,
                        None,
                    )
                )
        state.time_emitted = due
        for b in [b for b in state.buckets if b + hops <= due]:
            del state.buckets[b]
        return out

    # ----------------------------------------------------------------- state

    def _state(self) -> dict[str, Any]:
        runs = {}
        for run, s in self._runs.items():
            runs[run] = {
                "step_windows": {
                    str(i): {
                        "first_us": w.first_us,
                        "last_us": w.last_us,
                        "summaries": {name: sm.to_dict() for name, sm in w.summaries.items()},
                    }
                    for i, w in s.step_windows.items()
                },
                "step_closed": s.step_closed,
                "buckets": {str(b): {name: sm.to_dict() for name, sm in fns.items()} for b, fns in s.buckets.items()},
                "time_emitted": s.time_emitted,
                "watermark_us": s.watermark_us,
            }
        return {
            "runs": runs,
            "groups": self.groups.to_dict(),
            "late_steps": self.late_steps,
            "late_time": self.late_time,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        runs = {}
        for run, s in state["runs"].items():
            runs[run] = _RunState(
                step_windows={
                    int(i): _StepWindow(
                        int(w["first_us"]),
                        int(w["last_us"]),
                        {name: Summary.from_dict(sm) for name, sm in w["summaries"].items()},
                    )
                    for i, w in s["step_windows"].items()
                },
                step_closed=s["step_closed"],
                buckets={
                    int(b): {name: Summary.from_dict(sm) for name, sm in fns.items()} for b, fns in s["buckets"].items()
                },
                time_emitted=s["time_emitted"],
                watermark_us=s["watermark_us"],
            )
        groups = GroupStatsAggregator(self.config)
        groups.load_dict(state["groups"])
        self._runs, self.groups = runs, groups
        self.late_steps = int(state["late_steps"])
        self.late_time = int(state["late_time"])


def _stats(
    run: str,
    window: str,
    name: str,
    summary: Summary,
    start: datetime,
    end: datetime,
    step_start: int | None,
    step_end: int | None,
) -> RewardStats:
    has = summary.count > 0
    sketch = summary.sketch
    return RewardStats(
        run_id=run,
        window=window,
        reward_fn=name,
        window_start=start,
        window_end=end,
        step_start=step_start,
        step_end=step_end,
        count=summary.count,
        nonfinite=summary.nonfinite,
        mean=summary.mean if has else None,
        std=summary.std if has else None,
        min=summary.min if has else None,
        max=summary.max if has else None,
        p10=sketch.quantile(0.1),
        p50=sketch.quantile(0.5),
        p90=sketch.quantile(0.9),
    )
