"""Reading a judge's answer: ``Score: N`` / ``Reasoning: ...``, the Russian labels, or JSON.

The judge is asked (see :mod:`trainwire.judge.prompts`) to answer either in two labelled lines::

    Score: 4
    Reasoning: accurate and complete, slightly verbose.

(``Оценка:`` / ``Обоснование:`` in the Russian template), or, when the server is asked for
structured output, as a JSON object ``{"score": 4, "reasoning": "..."}``, possibly inside a
```` ```json ```` fence. :func:`parse_judgement` accepts any of these, whichever template asked.

Anything it cannot read (no score, a score that is not a number, a score outside the scale)
gives a failed :class:`Judgement` carrying the reason: an unparseable answer is never a score.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from trainwire.errors import ConfigError

__all__ = ["Judgement", "ScoreScale", "parse_judgement"]


@dataclass(frozen=True, slots=True)
class ScoreScale:
    """The judge's score range, ``low..high`` inclusive (1..5 by default)."""

    low: float = 1.0
    high: float = 5.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ConfigError("judge.scale", f"needs finite low < high, got {self.low}..{self.high}")

    def normalize(self, score: float) -> float:
        """``score`` mapped to 0..1 (``(s - low) / (high - low)``; ``(s - 1) / 4`` on 1..5)."""
        return (score - self.low) / (self.high - self.low)

    def __str__(self) -> str:
        return f"{self.low:g}..{self.high:g}"


@dataclass(frozen=True, slots=True)
class Judgement:
    """The outcome of parsing one answer: a score with its reasoning, or the reason there is none."""

    ok: bool
    score: float | None = None
    score_normalized: float | None = None
    reasoning: str | None = None
    error: str | None = None


_SCORE_LABELS = r"score|rating|grade|оценка|балл|баллы"
_REASON_LABELS = r"reasoning|rationale|explanation|justification|обоснование|объяснение|пояснение"
_DECOR = r"[\s*_#>`\-]*"
_NUMBER = r"[-+]?\d+(?:[.,]\d+)?"
_SCORE_RE = re.compile(
    rf"^{_DECOR}(?:{_SCORE_LABELS}){_DECOR}[:：=]{_DECOR}(?P<value>[^\n]*)",
    re.IGNORECASE | re.MULTILINE,
)
_VALUE_RE = re.compile(
    rf"^\[?(?P<num>{_NUMBER})\]?(?:\s*(?:/|из|out of)\s*(?P<of>{_NUMBER}))?(?![\w.,])", re.IGNORECASE
)
_REASON_RE = re.compile(
    rf"^{_DECOR}(?:{_REASON_LABELS}){_DECOR}[:：]{_DECOR}(?P<text>.*)", re.IGNORECASE | re.MULTILINE
)
_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*\n?(?P<body>.*?)```", re.DOTALL)
_JSON_SCORE_KEYS = ("score", "rating", "grade", "оценка")
_JSON_REASON_KEYS = ("reasoning", "rationale", "explanation", "justification", "обоснование")


def parse_judgement(text: str, scale: ScoreScale | None = None) -> Judgement:
    """Read a score (and reasoning) from a judge's answer ``text``; never raises.

    JSON (a whole-text object, a fenced block, or the first ``{...}`` with a ``score`` key) is
    tried first, then the labelled lines. The score must be a number within ``scale``
    (``4/5`` and ``4 из 5`` are read as 4 when the denominator is the scale's top).
    """
    scale = scale or ScoreScale()
    if not isinstance(text, str) or not text.strip():
        return Judgement(ok=False, error="empty answer")
    found = _from_json(text)
    if found is None:
        found = _from_labels(text)
    if isinstance(found, str):
        return Judgement(ok=False, error=found)
    score, reasoning, out_of = found
    if out_of is not None and out_of != scale.high:
        return Judgement(ok=False, reasoning=reasoning, error=f"score given out of {out_of:g}, the scale is {scale}")
    if not math.isfinite(score):
        return Judgement(ok=False, reasoning=reasoning, error=f"score {score} is not a finite number")
    if not scale.low <= score <= scale.high:
        return Judgement(ok=False, reasoning=reasoning, error=f"score {score:g} is outside the scale {scale}")
    return Judgement(
        ok=True, score=score, score_normalized=scale.normalize(score), reasoning=reasoning or None, error=None
    )


def _from_json(text: str) -> tuple[float, str | None, float | None] | str | None:
    """``(score, reasoning, out_of)``, an error message, or None when the text holds no JSON judgement."""
    candidates = [m.group("body") for m in _FENCE_RE.finditer(text)]
    stripped = text.strip()
    if stripped.startswith("{"):
        candidates.insert(0, stripped)
    start = text.find("{")
    if start >= 0:
        end = text.rfind("}")
        if end > start:
            candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            obj = orjson.loads(candidate.strip())
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        lowered = {str(k).lower(): v for k, v in obj.items()}
        key = next((k for k in _JSON_SCORE_KEYS if k in lowered), None)
        if key is None:
            continue
        reasoning = next((lowered[k] for k in _JSON_REASON_KEYS if k in lowered), None)
        reasoning = None if reasoning is None else str(reasoning).strip()
        score = _json_number(lowered[key])
        if score is None:
            return f"score {lowered[key]!r} in the JSON answer is not a number"
        return score, reasoning, None
    return None


def _json_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _VALUE_RE.match(value.strip())
        if match and match.end() == len(value.strip()):
            return float(match.group("num").replace(",", "."))
    return None


def _from_labels(text: str) -> tuple[float, str | None, float | None] | str:
    match = _SCORE_RE.search(text)
    if match is None:
        return "no score found (expected 'Score: N', 'Оценка: N' or JSON with a 'score')"
    raw_value = match.group("value").strip().strip("*_`").strip()
    value = _VALUE_RE.match(raw_value)
    if value is None:
        return f"score {raw_value[:40]!r} is not a number"
    score = float(value.group("num").replace(",", "."))
    out_of = float(value.group("of").replace(",", ".")) if value.group("of") else None
    reason = _REASON_RE.search(text)
    reasoning = reason.group("text").strip() if reason else None
    if reason is not None:
        # the reasoning runs to the end, unless the score line comes after it
        tail = text[reason.start("text") :]
        if match.start() > reason.start():
            tail = text[reason.start("text") : match.start()]
        reasoning = tail.strip() or None
    return score, reasoning, out_of
