"""Judge prompt templates: text files with sections, few-shot examples from JSONL, a version per content.

A template is a ``.txt`` file (the built-in ones live in ``trainwire/judge/templates/``)::

    # comments before the first section
    [system]
    You are an expert evaluator ... on a scale from $low to $high ...
    Score: <...>
    Reasoning: <...>
    $examples
    [user]
    Question: $question
    $reference
    Answer to grade: $answer
    [reference]
    Reference answer (treat it as correct): $reference
    [example]
    Question: $question ... Score: $score ... Reasoning: $reasoning
    [json]
    Reply with a JSON object only: {"score": ..., "reasoning": "..."}

``[reference]`` is rendered into the user message's ``$reference`` only when the event has a
reference answer (else that line disappears); each few-shot example is rendered with
``[example]`` into the system message's ``$examples``; ``[json]`` is appended to the user message
when the judge asks for structured output. Placeholders use ``string.Template`` (``$name``), so
JSON braces in a template need no escaping.

Built-in templates: ``default`` (English: accuracy, completeness, relevance and conciseness on
1-5, ``Score: N`` / ``Reasoning: ...``) and ``ru`` (the same in Russian, after seed 002, with
``Оценка:`` / ``Обоснование:``). :func:`load_template` takes one of these names or a file path.

The template's :attr:`JudgePrompt.version` is ``{name}-{hash}`` of the template text and the
examples, so changing either is a new version: it is recorded with every score and is part of
the judge cache key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import orjson

from trainwire.errors import ConfigError
from trainwire.events import Prompt

__all__ = ["BUILTIN_TEMPLATES", "FewShotExample", "JudgePrompt", "load_examples", "load_template", "prompt_text"]

BUILTIN_TEMPLATES = ("default", "ru")
"""Names of the templates shipped in ``trainwire/judge/templates/``."""

_SECTIONS = ("system", "user", "reference", "example", "json")
_SECTION_RE = re.compile(r"^\[(?P<name>[a-z]+)\]\s*$")


@dataclass(frozen=True, slots=True)
class FewShotExample:
    """One graded example shown to the judge before the real question."""

    question: str
    answer: str
    score: float
    reasoning: str
    reference: str | None = None


@dataclass(frozen=True)
class JudgePrompt:
    """A parsed template with its few-shot examples; :meth:`render` builds the chat messages."""

    name: str
    sections: dict[str, str]
    examples: tuple[FewShotExample, ...] = ()
    version: str = field(default="")

    def render(
        self,
        question: Prompt,
        answer: str,
        reference: str | None = None,
        *,
        low: float = 1,
        high: float = 5,
        structured: bool = False,
    ) -> list[dict[str, str]]:
        """The chat messages asking the judge to grade ``answer`` to ``question``."""
        scale = {"low": f"{low:g}", "high": f"{high:g}"}
        examples = "\n\n".join(
            Template(self.sections.get("example", "")).safe_substitute(
                scale,
                question=ex.question,
                answer=ex.answer,
                score=f"{ex.score:g}",
                reasoning=ex.reasoning,
                reference=ex.reference or "",
            )
            for ex in self.examples
        )
        system = Template(self.sections.get("system", "")).safe_substitute(
            scale, examples=f"\n{examples}\n" if examples else ""
        )
        reference_block = ""
        if reference:
            reference_block = Template(self.sections.get("reference", "$reference")).safe_substitute(
                scale, reference=reference
            )
        user = Template(self.sections["user"]).safe_substitute(
            scale, question=prompt_text(question), answer=answer, reference=reference_block
        )
        user = re.sub(r"\n{3,}", "\n\n", user).strip()
        if structured and self.sections.get("json"):
            user += "\n\n" + Template(self.sections["json"]).safe_substitute(scale)
        messages = []
        if system.strip():
            messages.append({"role": "system", "content": re.sub(r"\n{3,}", "\n\n", system).strip()})
        messages.append({"role": "user", "content": user})
        return messages


def prompt_text(prompt: Prompt) -> str:
    """An interaction's prompt as text: the text itself, the only user message, or ``role: content`` lines."""
    if isinstance(prompt, str):
        return prompt
    contents = [(m.get("role", ""), _content_text(m.get("content"))) for m in prompt]
    users = [c for role, c in contents if role == "user"]
    if len(users) == 1 and all(role in ("user", "system") for role, _ in contents):
        return users[0]
    return "\n".join(f"{role}: {text}" for role, text in contents)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def load_template(template: str | Path = "default", examples: str | Path | None = None) -> JudgePrompt:
    """A built-in template by name (``default``, ``ru``) or a template file, with optional few-shot examples.

    Raises :class:`ConfigError` naming the file when it cannot be read or lacks a ``[user]`` section.
    """
    if isinstance(template, str) and template in BUILTIN_TEMPLATES:
        name = template
        text = resources.files("trainwire.judge").joinpath("templates", f"{template}.txt").read_text("utf-8")
        where = f"built-in template {template!r}"
    else:
        path = Path(template)
        name, where = path.stem, str(path)
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            known = ", ".join(BUILTIN_TEMPLATES)
            raise ConfigError("judge.template", f"{path}: {exc.strerror or exc} (built-in templates: {known})") from exc
    sections = _parse_sections(text, where)
    shots: tuple[FewShotExample, ...] = ()
    examples_text = ""
    if examples is not None:
        shots, examples_text = load_examples(examples)
    digest = hashlib.sha256(text.encode() + b"\0" + examples_text.encode()).hexdigest()[:10]
    return JudgePrompt(name=name, sections=sections, examples=shots, version=f"{name}-{digest}")


def _parse_sections(text: str, where: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        match = _SECTION_RE.match(line)
        if match:
            name = match.group("name")
            if name not in _SECTIONS:
                raise ConfigError("judge.template", f"{where}:{number}: unknown section [{name}]")
            current = sections.setdefault(name, [])
            continue
        if current is not None:
            current.append(line)
    if "user" not in sections:
        raise ConfigError("judge.template", f"{where}: no [user] section")
    return {name: "\n".join(lines).strip("\n") for name, lines in sections.items()}


def load_examples(path: str | Path) -> tuple[tuple[FewShotExample, ...], str]:
    """Few-shot examples from a JSONL file: one object a line with ``question``, ``answer``, ``score``,
    ``reasoning`` (and optionally ``reference``; ``inputs``/``predictions`` are accepted for the first two).

    Returns the examples and the file's text (part of the template version). Raises
    :class:`ConfigError` naming the file and line of a bad record.
    """
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError("judge.examples", f"{path}: {exc.strerror or exc}") from exc
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            question = obj.get("question", obj.get("inputs"))
            answer = obj.get("answer", obj.get("predictions"))
            if not isinstance(question, str) or not isinstance(answer, str):
                raise ValueError("needs string 'question' and 'answer'")
            score = obj["score"]
            if isinstance(score, bool) or not isinstance(score, int | float):
                raise ValueError(f"'score' must be a number, got {score!r}")
            out.append(
                FewShotExample(
                    question=question,
                    answer=answer,
                    score=float(score),
                    reasoning=str(obj.get("reasoning", "")),
                    reference=obj.get("reference"),
                )
            )
        except (orjson.JSONDecodeError, AttributeError, KeyError, ValueError) as exc:
            raise ConfigError("judge.examples", f"{path}:{number}: {exc}") from exc
    return tuple(out), text
