"""Reading a judge's answer: ``Score: N`` / ``Reasoning: ...``, the Russian labels, or JSON.

The judge is asked (see :mod:`trainwire.judge.prompts`) to answer either in two labelled lines::

    Score: 4
    Reasoning: accurate and complete, slightly verbose.

(``Оценка:`` / ``Обоснование:`` in the Russian template), or, when the server is asked for
structured output, as a JSON object ``{"score": 4, "reasoning": "..."}``, possibly inside a
```` ```json ```` fence. :func:`parse_judgement` accepts any of these, whichever template asked.

Anything it cannot read (no score, a score that is not a number, a score outside the scale)
gives a failed :class:`Judgement` carrying the reason: an unparseable answer is never a score.

A group judge (one request per GRPO group) answers a JSON array with one object per answer id,
``[{"id": "1", "score": 4, "reasoning": "..."}, ...]`` (or ``{"scores": [...]}``, as structured
output asks for it); :func:`parse_group_judgement` reads it, matching scores to answers by id
(not by position), and fails the whole group when any answer has no valid score, an id is
unknown or repeated: a group is judged whole or not at all.

:data:`PARSER_VERSION` is recorded with every score; it changes whenever what these functions
accept or return changes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from trainwire.errors import ConfigError

__all__ = ["PARSER_VERSION", "GroupJudgement", "Judgement", "ScoreScale", "parse_group_judgement", "parse_judgement"]

PARSER_VERSION = "2"
"""The version of the answer parsers (1: single answers only; 2: group answers too), recorded with every score."""


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
    return _checked(*found, scale)


def _checked(score: float, reasoning: str | None, out_of: float | None, scale: ScoreScale) -> Judgement:
    """A judgement of ``score`` when it is a finite number within ``scale``, else a failure saying why."""
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
    for obj in _json_values(text, ("{}",)):
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


@dataclass(frozen=True, slots=True)
class GroupJudgement:
    """The outcome of parsing one group answer: a :class:`Judgement` per answer id, or the reason there is none."""

    ok: bool
    judgements: dict[str, Judgement]
    error: str | None = None


_GROUP_ID_KEYS = ("id", "answer_id")


def parse_group_judgement(text: str, ids: list[str], scale: ScoreScale | None = None) -> GroupJudgement:
    """Read one score per answer id from a group judge's answer ``text``; never raises.

    The answer is a JSON array of objects with an ``id``, a ``score`` and a ``reasoning`` (the
    whole text, a fenced block, the outermost ``[...]``, or ``{"scores": [...]}``). It is valid only
    when every id of ``ids`` has exactly one score within ``scale`` and there is no other id;
    otherwise the group fails with the reason (the first problem found), and no answer gets a score.
    """
    scale = scale or ScoreScale()
    if not isinstance(text, str) or not text.strip():
        return GroupJudgement(ok=False, judgements={}, error="empty answer")
    items = _json_array(text)
    if items is None:
        return GroupJudgement(
            ok=False,
            judgements={},
            error=f"no JSON array of scores found (expected one object per answer: {_ids(ids)})",
        )
    expected = set(ids)
    found: dict[str, Judgement] = {}
    for number, item in enumerate(items, 1):
        lowered = {str(k).lower(): v for k, v in item.items()} if isinstance(item, dict) else None
        key = next((k for k in _GROUP_ID_KEYS if lowered and k in lowered), None)
        if lowered is None or key is None:
            return GroupJudgement(
                ok=False, judgements={}, error=f"item {number} of the array is not an object with an id"
            )
        answer_id = str(lowered[key]).strip()
        if answer_id not in expected:
            return GroupJudgement(
                ok=False, judgements={}, error=f"unknown answer id {answer_id!r} (the group's: {_ids(ids)})"
            )
        if answer_id in found:
            return GroupJudgement(ok=False, judgements={}, error=f"answer id {answer_id!r} is scored twice")
        judged = _judged(lowered, scale)
        if not judged.ok:
            return GroupJudgement(ok=False, judgements={}, error=f"answer {answer_id}: {judged.error}")
        found[answer_id] = judged
    missing = [i for i in ids if i not in found]
    if missing:
        return GroupJudgement(
            ok=False,
            judgements={},
            error=f"no score for answer {_ids(missing)} ({len(found)} of {len(ids)} answers scored)",
        )
    return GroupJudgement(ok=True, judgements=found)


def _ids(ids: list[str]) -> str:
    return ", ".join(ids)


def _json_values(text: str, brackets: tuple[str, ...]) -> Iterator[Any]:
    """The JSON values ``text`` may hold, most likely first: the whole text, each fenced block, then
    for each pair of ``brackets`` (``"{}"``, ``"[]"``) the span from its first opening to its last closing."""
    candidates = [text, *(m.group("body") for m in _FENCE_RE.finditer(text))]
    for opening, closing in brackets:
        start, end = text.find(opening), text.rfind(closing)
        if 0 <= start < end:
            candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            yield orjson.loads(candidate.strip())
        except orjson.JSONDecodeError:
            continue


def _json_array(text: str) -> list[Any] | None:
    """The array of scores in ``text``: a JSON array, or the ``scores`` of a JSON object; None if none."""
    for obj in _json_values(text, ("[]", "{}")):
        if isinstance(obj, dict):
            obj = next((v for k, v in obj.items() if str(k).lower() == "scores"), None)
        if isinstance(obj, list):
            return obj
    return None


def _judged(item: dict[str, Any], scale: ScoreScale) -> Judgement:
    """One answer's judgement from its object in a group answer (keys already lower-cased)."""
    key = next((k for k in _JSON_SCORE_KEYS if k in item), None)
    if key is None:
        return Judgement(ok=False, error="no score")
    reasoning = next((item[k] for k in _JSON_REASON_KEYS if k in item), None)
    reasoning = None if reasoning is None else str(reasoning).strip() or None
    score = _json_number(item[key])
    if score is None:
        return Judgement(ok=False, error=f"score {item[key]!r} is not a number")
    return _checked(score, reasoning, None, scale)
