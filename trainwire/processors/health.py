"""Training health alerts: what a person reading a trainer's log would worry about, checked every step.

:class:`HealthMonitor` reads ``train_step`` events (and ``interaction``/``judge_score`` events,
for the reward rules) and emits ``alert`` events. The rules, after seed 003 (how to read an HF
``Trainer`` log) and the usual GRPO failure modes:

========================  ========  =====================================================================
rule                      severity  fires when
========================  ========  =====================================================================
``nonfinite``             critical  loss, grad_norm, learning_rate, epoch or a metric is NaN or infinite
``loss_not_decreasing``   warning   over the last ``loss_horizon`` losses, the second half's mean is not
                                    below the first half's by ``loss_min_decrease`` (relative)
``grad_norm_exploding``   critical  grad_norm > ``grad_norm_explode_factor`` x the median of the last
                                    ``grad_norm_window`` grad norms (at least ``grad_norm_min_history``)
``grad_norm_vanishing``   warning   grad_norm <= ``grad_norm_vanish_below`` for
                                    ``grad_norm_vanish_steps`` logged steps in a row
``lr_jump``               warning   learning rate changed by more than ``lr_jump_factor`` x in one logged
                                    step (from or to 0 is not a jump: warm-up starts at 0)
``lr_rise_after_decay``   warning   learning rate rose after it had begun to decay from its peak
``reward_collapse``       critical  a step's reward mean is below the mean of the previous
                                    ``reward_window`` steps by more than max(``reward_drop_min``,
                                    ``reward_drop_sigmas`` x their std)
``reward_std_zero``       critical  the reward std was <= ``reward_std_eps`` in each of the last
                                    ``reward_std_window`` steps: GRPO gets no learning signal
``zero_variance_groups``  warning   the share of groups with zero reward variance is above
                                    ``zero_variance_max_share``
========================  ========  =====================================================================

The reward rules take each step's reward mean, std and zero-variance share from the GRPO group
stats of the interactions (:class:`~trainwire.processors.stats.GroupStatsAggregator`), or, when a
run sends no interactions, from the ``train_step`` metrics TRL logs (``reward``, ``reward_std``,
``frac_reward_zero_std``; names configurable). The reward rules take each step once, in order:
a step at or before the last one taken (the other source's copy of it) is ignored.

Each rule has a cool-down per run: after it fires at step ``s`` it stays quiet until step
``s + cooldown_steps`` (or until the steps go backwards, as when a run resumes from a checkpoint).
Alert events carry the triggering event's time and a deterministic id (a UUID derived from run,
rule, step and the triggering ``train_step`` event, or the step alone for group stats), so a
replay after a crash writes the same rows again, which ClickHouse's ``FINAL`` collapses.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from trainwire.errors import ConfigError
from trainwire.events import Alert, Event, Interaction, JudgeScore, TrainStep
from trainwire.processors.base import Processor
from trainwire.processors.stats import GroupStats, GroupStatsAggregator, StatsConfig, mean_of, pstd_of

__all__ = ["CRITICAL", "INFO", "RULES", "WARNING", "HealthConfig", "HealthMonitor"]

INFO, WARNING, CRITICAL = "info", "warning", "critical"
RULES = (
    "nonfinite",
    "loss_not_decreasing",
    "grad_norm_exploding",
    "grad_norm_vanishing",
    "lr_jump",
    "lr_rise_after_decay",
    "reward_collapse",
    "reward_std_zero",
    "zero_variance_groups",
)
_ALERT_NAMESPACE = uuid.UUID("5b0e7c3a-1d2f-4e8b-9a61-7c2d9e0f4b13")


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Thresholds of the health rules (see the module docstring); a window of ``0`` turns its rule off."""

    loss_horizon: int = 50
    loss_min_decrease: float = 0.0
    grad_norm_window: int = 20
    grad_norm_min_history: int = 5
    grad_norm_explode_factor: float = 10.0
    grad_norm_vanish_below: float = 1e-7
    grad_norm_vanish_steps: int = 3
    lr_jump_factor: float = 10.0
    lr_tolerance: float = 1e-6
    reward_window: int = 20
    reward_min_history: int = 5
    reward_drop_sigmas: float = 4.0
    reward_drop_min: float = 0.1
    reward_std_window: int = 5
    reward_std_eps: float = 1e-6
    zero_variance_max_share: float = 0.5
    cooldown_steps: int = 50
    reward_metric: str = "reward"
    reward_std_metric: str = "reward_std"
    zero_variance_metric: str = "frac_reward_zero_std"
    stats: StatsConfig = field(default_factory=StatsConfig)

    def __post_init__(self) -> None:
        windows = ("loss_horizon", "grad_norm_window", "grad_norm_vanish_steps", "reward_window", "reward_std_window")
        for name in windows:
            if getattr(self, name) < 0:
                raise ConfigError(f"health.{name}", f"must be >= 0 (0 turns the rule off), got {getattr(self, name)}")
        if self.loss_horizon % 2:
            raise ConfigError("health.loss_horizon", f"must be even (two halves are compared), got {self.loss_horizon}")
        if not 1 <= self.grad_norm_min_history <= max(self.grad_norm_window, 1):
            raise ConfigError(
                "health.grad_norm_min_history",
                f"must be between 1 and grad_norm_window ({self.grad_norm_window}), got {self.grad_norm_min_history}",
            )
        if not 1 <= self.reward_min_history <= max(self.reward_window, 1):
            raise ConfigError(
                "health.reward_min_history",
                f"must be between 1 and reward_window ({self.reward_window}), got {self.reward_min_history}",
            )
        for name in ("grad_norm_explode_factor", "lr_jump_factor"):
            if not getattr(self, name) > 1:
                raise ConfigError(f"health.{name}", f"must be greater than 1, got {getattr(self, name)}")
        for name in (
            "loss_min_decrease",
            "grad_norm_vanish_below",
            "lr_tolerance",
            "reward_drop_sigmas",
            "reward_drop_min",
            "reward_std_eps",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"health.{name}", f"must be a finite number >= 0, got {value}")
        if not 0 <= self.zero_variance_max_share <= 1:
            raise ConfigError(
                "health.zero_variance_max_share", f"must be between 0 and 1, got {self.zero_variance_max_share}"
            )
        if self.cooldown_steps < 0:
            raise ConfigError("health.cooldown_steps", f"must be >= 0, got {self.cooldown_steps}")


@dataclass(slots=True)
class _RunHealth:
    losses: deque = field(default_factory=deque)  # (step, loss)
    grad_norms: deque = field(default_factory=deque)  # (step, grad_norm)
    vanishing: int = 0
    lr_prev: float | None = None
    lr_prev_step: int | None = None
    lr_peak: float = 0.0
    lr_decaying: bool = False
    reward_means: deque = field(default_factory=deque)  # (step, mean)
    reward_stds: deque = field(default_factory=deque)  # (step, std)
    reward_step: int | None = None  # last step whose reward numbers were taken
    fired: dict[str, int] = field(default_factory=dict)  # rule -> step it last fired at


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _text(value: float) -> float | str:
    """A number for the evidence (JSON has no NaN: non-finite values become their names)."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


class HealthMonitor(Processor[Event]):
    """Health rules over a run's training steps and rewards; emits ``Alert`` events."""

    NAME = "health"

    def __init__(self, config: HealthConfig | None = None):
        self.config = config or HealthConfig()
        self._runs: dict[str, _RunHealth] = {}
        self.groups = GroupStatsAggregator(self.config.stats)

    # ----------------------------------------------------------------- processing

    def process(self, event: Event) -> list[Event]:
        """Take one event; return the alerts it raises."""
        payload = event.payload
        if isinstance(payload, TrainStep):
            return self._train_step(event, payload)
        if isinstance(payload, Interaction):
            return self._group_alerts(self.groups.add_interaction(event))
        if isinstance(payload, JudgeScore):
            self.groups.add_judge_score(event)
        return []

    def flush(self) -> list[Event]:
        """Evaluate the reward rules over the steps still open."""
        return self._group_alerts(self.groups.flush())

    def observe_group_stats(self, stats: GroupStats) -> list[Event]:
        """Evaluate the reward rules on one step's group stats (e.g. computed by the stats processor)."""
        return self._rewards(
            stats.run_id, stats.step, stats.reward_mean, stats.reward_std, stats.zero_variance_share, stats.ts, "group"
        )

    def _group_alerts(self, stats: list[GroupStats]) -> list[Event]:
        out: list[Event] = []
        for s in stats:
            out.extend(self.observe_group_stats(s))
        return out

    def _run(self, run_id: str) -> _RunHealth:
        state = self._runs.get(run_id)
        if state is None:
            state = self._runs[run_id] = self._run_fresh()
        return state

    def _alert(
        self,
        state: _RunHealth,
        run_id: str,
        rule: str,
        severity: str,
        step: int,
        message: str,
        evidence: dict[str, Any],
        ts: datetime,
        cause: str,
    ) -> Event | None:
        last = state.fired.get(rule)
        if last is not None and last <= step < last + self.config.cooldown_steps:
            return None
        state.fired[rule] = step
        event_id = str(uuid.uuid5(_ALERT_NAMESPACE, f"{run_id}\x00{rule}\x00{step}\x00{cause}"))
        return Event(
            run_id=run_id,
            payload=Alert(rule=rule, severity=severity, message=message, step=step, evidence=evidence),
            event_id=event_id,
            ts=ts,
        )

    def _train_step(self, event: Event, payload: TrainStep) -> list[Event]:
        c = self.config
        run, step = event.run_id, payload.step
        state = self._run(run)
        out: list[Event | None] = []

        def alert(rule: str, severity: str, message: str, evidence: dict[str, Any]) -> None:
            out.append(self._alert(state, run, rule, severity, step, message, evidence, event.ts, event.event_id))

        numbers = {
            "loss": payload.loss,
            "grad_norm": payload.grad_norm,
            "learning_rate": payload.learning_rate,
            "epoch": payload.epoch,
        }
        numbers.update({f"metrics.{k}": v for k, v in payload.metrics.items()})
        bad = {k: _text(v) for k, v in numbers.items() if v is not None and not math.isfinite(v)}
        if bad:
            names = ", ".join(f"{k}={v}" for k, v in bad.items())
            alert(
                "nonfinite",
                CRITICAL,
                f"Step {step} logged non-finite numbers ({names}); training has likely diverged.",
                {"fields": bad},
            )

        loss = payload.loss
        if c.loss_horizon and loss is not None and math.isfinite(loss):
            state.losses.append((step, loss))
            if len(state.losses) == c.loss_horizon:
                half = c.loss_horizon // 2
                first = [v for _, v in list(state.losses)[:half]]
                second = [v for _, v in list(state.losses)[half:]]
                a, b = mean_of(first), mean_of(second)
                if a - b <= c.loss_min_decrease * abs(a):
                    s0, s_mid, s1 = state.losses[0][0], state.losses[half][0], state.losses[-1][0]
                    alert(
                        "loss_not_decreasing",
                        WARNING,
                        f"Loss has not decreased over the last {c.loss_horizon} logged steps: mean {_fmt(b)} "
                        f"over steps {s_mid}-{s1} vs {_fmt(a)} over steps {s0}-{state.losses[half - 1][0]}.",
                        {
                            "first_half_mean": a,
                            "second_half_mean": b,
                            "first_steps": [s0, state.losses[half - 1][0]],
                            "second_steps": [s_mid, s1],
                            "horizon": c.loss_horizon,
                        },
                    )

        g = payload.grad_norm
        if g is not None and math.isfinite(g):
            if c.grad_norm_window:
                history = [v for _, v in state.grad_norms]
                if len(history) >= c.grad_norm_min_history:
                    median = _median(history)
                    if median > 0 and g > c.grad_norm_explode_factor * median:
                        alert(
                            "grad_norm_exploding",
                            CRITICAL,
                            f"Gradient norm {_fmt(g)} at step {step} is {_fmt(g / median)}x the median "
                            f"{_fmt(median)} of the last {len(history)} logged steps: gradients are exploding.",
                            {"grad_norm": g, "median": median, "ratio": g / median, "window": len(history)},
                        )
                state.grad_norms.append((step, g))
            if c.grad_norm_vanish_steps:
                state.vanishing = state.vanishing + 1 if g <= c.grad_norm_vanish_below else 0
                if state.vanishing >= c.grad_norm_vanish_steps:
                    alert(
                        "grad_norm_vanishing",
                        WARNING,
                        f"Gradient norm has been {_fmt(g)} (<= {c.grad_norm_vanish_below:g}) for {state.vanishing} "
                        f"logged steps up to step {step}: gradients have vanished and training has stalled.",
                        {"grad_norm": g, "threshold": c.grad_norm_vanish_below, "consecutive_steps": state.vanishing},
                    )

        lr = payload.learning_rate
        if lr is not None and math.isfinite(lr):
            prev = state.lr_prev
            if prev is not None and prev > 0 and lr > 0:
                ratio = lr / prev
                if ratio > c.lr_jump_factor or ratio < 1 / c.lr_jump_factor:
                    alert(
                        "lr_jump",
                        WARNING,
                        f"Learning rate changed {_fmt(ratio)}x in one logged step ({_fmt(prev)} at step "
                        f"{state.lr_prev_step} to {_fmt(lr)} at step {step}); schedulers change it gradually.",
                        {"previous": prev, "previous_step": state.lr_prev_step, "current": lr, "ratio": ratio},
                    )
            if state.lr_decaying and prev is not None and lr > prev * (1 + c.lr_tolerance):
                alert(
                    "lr_rise_after_decay",
                    WARNING,
                    f"Learning rate rose from {_fmt(prev)} to {_fmt(lr)} at step {step} after it had begun to decay "
                    f"from its peak {_fmt(state.lr_peak)}; warm-up then decay should not go back up.",
                    {"previous": prev, "current": lr, "peak": state.lr_peak},
                )
            if lr > state.lr_peak:
                state.lr_peak = lr
            elif lr < state.lr_peak * (1 - c.lr_tolerance):
                state.lr_decaying = True
            state.lr_prev, state.lr_prev_step = lr, step

        metrics = payload.metrics
        if c.reward_metric in metrics:
            out.extend(
                self._rewards(
                    run,
                    step,
                    metrics.get(c.reward_metric),
                    metrics.get(c.reward_std_metric),
                    metrics.get(c.zero_variance_metric),
                    event.ts,
                    event.event_id,
                )
            )
        return [e for e in out if e is not None]

    def _rewards(
        self,
        run: str,
        step: int,
        mean: float | None,
        std: float | None,
        zero_share: float | None,
        ts: datetime,
        cause: str,
    ) -> list[Event]:
        c = self.config
        state = self._run(run)
        if state.reward_step is not None and step <= state.reward_step:
            return []  # this step was taken from the other source already (or arrives out of order)
        state.reward_step = step
        out: list[Event | None] = []

        def alert(rule: str, severity: str, message: str, evidence: dict[str, Any]) -> None:
            out.append(self._alert(state, run, rule, severity, step, message, evidence, ts, cause))

        if c.reward_window and mean is not None and math.isfinite(mean):
            history = [v for _, v in state.reward_means]
            if len(history) >= c.reward_min_history:
                baseline = mean_of(history)
                spread = pstd_of(history)
                threshold = max(c.reward_drop_min, c.reward_drop_sigmas * spread)
                if baseline - mean > threshold:
                    alert(
                        "reward_collapse",
                        CRITICAL,
                        f"Reward mean fell to {_fmt(mean)} at step {step}, from {_fmt(baseline)} on average over the "
                        f"previous {len(history)} steps (a drop of {_fmt(baseline - mean)}, more than "
                        f"{_fmt(threshold)}).",
                        {
                            "reward_mean": mean,
                            "baseline_mean": baseline,
                            "baseline_std": spread,
                            "threshold": threshold,
                            "window_steps": [state.reward_means[0][0], state.reward_means[-1][0]],
                        },
                    )
            state.reward_means.append((step, mean))

        if c.reward_std_window and std is not None and math.isfinite(std):
            state.reward_stds.append((step, std))
            flat = all(v <= c.reward_std_eps for _, v in state.reward_stds)
            if len(state.reward_stds) == c.reward_std_window and flat:
                first = state.reward_stds[0][0]
                alert(
                    "reward_std_zero",
                    CRITICAL,
                    f"Reward std has been ~0 (<= {c.reward_std_eps:g}) in each of the last {c.reward_std_window} "
                    f"steps ({first}-{step}): every completion scores the same, so GRPO has no learning signal.",
                    {"stds": [v for _, v in state.reward_stds], "window_steps": [first, step]},
                )

        if zero_share is not None and math.isfinite(zero_share) and zero_share > c.zero_variance_max_share:
            alert(
                "zero_variance_groups",
                WARNING,
                f"{_fmt(100 * zero_share)}% of the GRPO groups at step {step} have zero reward variance "
                f"(threshold {_fmt(100 * c.zero_variance_max_share)}%): they contribute no gradient.",
                {"zero_variance_share": zero_share, "threshold": c.zero_variance_max_share},
            )
        return [e for e in out if e is not None]

    # ----------------------------------------------------------------- state

    def _state(self) -> dict[str, Any]:
        runs = {}
        for run, s in self._runs.items():
            runs[run] = {
                "losses": list(map(list, s.losses)),
                "grad_norms": list(map(list, s.grad_norms)),
                "vanishing": s.vanishing,
                "lr_prev": s.lr_prev,
                "lr_prev_step": s.lr_prev_step,
                "lr_peak": s.lr_peak,
                "lr_decaying": s.lr_decaying,
                "reward_means": list(map(list, s.reward_means)),
                "reward_stds": list(map(list, s.reward_stds)),
                "reward_step": s.reward_step,
                "fired": dict(s.fired),
            }
        return {"runs": runs, "groups": self.groups.to_dict()}

    def _load_state(self, state: dict[str, Any]) -> None:
        runs = {}
        for run, s in state["runs"].items():
            health = self._run_fresh()
            health.losses.extend((int(a), float(b)) for a, b in s["losses"])
            health.grad_norms.extend((int(a), float(b)) for a, b in s["grad_norms"])
            health.vanishing = int(s["vanishing"])
            health.lr_prev = s["lr_prev"]
            health.lr_prev_step = s["lr_prev_step"]
            health.lr_peak = float(s["lr_peak"])
            health.lr_decaying = bool(s["lr_decaying"])
            health.reward_means.extend((int(a), float(b)) for a, b in s["reward_means"])
            health.reward_stds.extend((int(a), float(b)) for a, b in s["reward_stds"])
            health.reward_step = s["reward_step"]
            health.fired = {str(k): int(v) for k, v in s["fired"].items()}
            runs[run] = health
        groups = GroupStatsAggregator(self.config.stats)
        groups.load_dict(state["groups"])
        self._runs, self.groups = runs, groups

    def _run_fresh(self) -> _RunHealth:
        c = self.config
        return _RunHealth(
            losses=deque(maxlen=c.loss_horizon or 1),
            grad_norms=deque(maxlen=c.grad_norm_window or 1),
            reward_means=deque(maxlen=c.reward_window or 1),
            reward_stds=deque(maxlen=c.reward_std_window or 1),
        )


def _median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
