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
when the judge asks for structured output.

A file without any ``[section]`` line is a plain prompt, as seed 002's ``judge_prompt.txt``: the
whole file (``#`` lines included) is the user message and there is no system message. Its
``{reference}`` is the bare reference answer (empty when the event has none). Few-shot examples
go into its text, as seed 002 suggests: ``--examples`` needs ``[example]`` and ``$examples``.

Placeholders are written ``$name`` (``string.Template``; ``$$`` is a literal ``$``) or
``{name}`` (seed 002's ``Вопрос: {question}``); both forms work in every section:

========== ===================================================================
section    placeholders
========== ===================================================================
system     ``examples``, ``low``, ``high``
user       ``question``, ``answer`` (or ``answers``), ``reference``, ``low``, ``high``
reference  ``reference``, ``low``, ``high``
answer     ``id``, ``answer``, ``low``, ``high`` (a group template: one answer of the group)
example    ``question``, ``answer``, ``score``, ``reasoning``, ``reference``, ``low``, ``high``
json       ``low``, ``high``
========== ===================================================================

A template whose user message has ``$answers`` instead of ``$answer`` grades a whole GRPO group
in one request (:attr:`JudgePrompt.group`, :meth:`JudgePrompt.render_group`): each completion
is rendered with ``[answer]`` under a short id, and the judge answers a JSON array with one
``{"id", "score", "reasoning"}`` per id (see :func:`~trainwire.judge.parser.parse_group_judgement`).

Only a known name in single braces is substituted: ``{{name}}`` is a literal ``{name}`` (e.g.
LaTeX ``\\boxed{{answer}}``), and every other brace is sent as written, so JSON such as
``{"score": 4}`` needs no escaping (unlike ``str.format``, ``{{`` and ``}}`` are not collapsed).
:func:`load_template` raises :class:`ConfigError` naming the file and line for a ``{name}`` that
is not a placeholder of its section in a plain file (in a sectioned template it is sent as written,
so LaTeX such as ``\\frac{a}{b}`` keeps working), and for a user message with neither a question
nor an answer placeholder; a ``$name`` that is not a placeholder is sent as written (as ``string.Template``
does; ``$x$`` in LaTeX stays as it is).

Built-in templates: ``default`` (English: accuracy, completeness, relevance and conciseness on
1-5, ``Score: N`` / ``Reasoning: ...``), ``ru`` (the same in Russian, after seed 002, with
``Оценка:`` / ``Обоснование:``) and ``group`` (the ``default`` criteria for a whole group, each
answer compared with the others, after ART's RULER). :func:`load_template` takes one of these names or a file path.

The template's :attr:`JudgePrompt.version` is ``{name}-{hash}`` of the template text and the
examples, so changing either is a new version: it is recorded with every score and is part of
the judge cache key. A template with ``{name}`` or ``{{name}}`` placeholders also hashes a marker
of that syntax, so it never shares a version (and cached judgements) with what older trainwire
releases sent for the same file, braces literally; ``$``-only templates keep their version.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import orjson

from trainwire.errors import ConfigError
from trainwire.events import Prompt

__all__ = [
    "BUILTIN_TEMPLATES",
    "PLACEHOLDERS",
    "FewShotExample",
    "JudgePrompt",
    "load_examples",
    "load_template",
    "prompt_text",
]

BUILTIN_TEMPLATES = ("default", "ru", "group")
"""Names of the templates shipped in ``trainwire/judge/templates/``."""

_SCALE = ("low", "high")
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "system": ("examples", *_SCALE),
    "user": ("question", "answer", "answers", "reference", *_SCALE),
    "reference": ("reference", *_SCALE),
    "answer": ("id", "answer", *_SCALE),
    "example": ("question", "answer", "score", "reasoning", "reference", *_SCALE),
    "json": _SCALE,
}
"""The placeholders each section may use (as ``$name`` or ``{name}``)."""

_SECTION_RE = re.compile(r"^\[(?P<name>[a-z]+)\]\s*$")
_IDENT = r"[_a-z][_a-z0-9]*"  # string.Template's identifier
_TOKEN_RE = re.compile(
    rf"\$(?:(?P<dollar>\$)|(?P<named>{_IDENT})|\{{(?P<braced>{_IDENT})\}})"
    rf"|\{{\{{(?P<escaped>{_IDENT})\}}\}}"
    rf"|\{{(?P<brace>{_IDENT})\}}"
    r"|\$",
    re.ASCII | re.IGNORECASE,
)
_BRACE_SYNTAX = b"\0placeholders: $name and {name}"
"""Hashed into the version of a template that uses ``{name}`` / ``{{name}}``."""


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
    """A parsed template with its few-shot examples; :meth:`render` builds the chat messages.

    ``sections`` are ``string.Template`` texts (:func:`load_template` has already turned any
    ``{name}`` placeholder into ``${name}``).
    """

    name: str
    sections: dict[str, str]
    examples: tuple[FewShotExample, ...] = ()
    version: str = field(default="")
    text_hash: str = field(default="")
    """sha256 of the template text and the examples (``version`` is the name and its first 10 digits)."""
    group: bool = False
    """Whether it grades a whole GRPO group at once (its user message has ``$answers``), see :meth:`render_group`."""

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
        return self._messages(question, reference, low, high, structured, answer=answer)

    def render_group(
        self,
        question: Prompt,
        answers: Sequence[tuple[str, str]],
        reference: str | None = None,
        *,
        low: float = 1,
        high: float = 5,
        structured: bool = False,
    ) -> list[dict[str, str]]:
        """The chat messages asking the judge to grade every ``(id, answer)`` of one group to ``question``.

        Each answer is rendered with the ``[answer]`` section (``$id``, ``$answer``), and all of them,
        separated by blank lines, fill the user message's ``$answers``.
        """
        scale = {"low": f"{low:g}", "high": f"{high:g}"}
        section = Template(self.sections.get("answer", "[$id]\n$answer"))
        rendered = "\n\n".join(section.safe_substitute(scale, id=i, answer=text) for i, text in answers)
        return self._messages(question, reference, low, high, structured, answers=rendered)

    def _messages(
        self, question: Prompt, reference: str | None, low: float, high: float, structured: bool, **answer: str
    ) -> list[dict[str, str]]:
        """The system and user messages around ``answer`` (``answer=`` or ``answers=``, the user placeholder)."""
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
            scale, question=prompt_text(question), reference=reference_block, **answer
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

    A file with ``[section]`` lines needs a ``[user]`` section; a file without any is the user
    message (see the module docstring for both and for the placeholders).

    Raises :class:`ConfigError` naming the file when it cannot be read, has an unknown section, no
    ``[user]`` section, a ``{name}`` that is not a placeholder of its section, or a user message
    with neither a question nor an answer placeholder; and when ``examples`` are given but the
    template has no ``[example]`` section or no ``examples`` placeholder in ``[system]``.
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
    sections: dict[str, str] = {}
    used: dict[str, set[str]] = {}
    braces = False
    plain = not any(_SECTION_RE.match(line) for line in text.splitlines())
    for section, (body, lines) in _parse_sections(text, where).items():
        sections[section], used[section], section_braces = _placeholders(section, body, lines, where, strict=plain)
        braces = braces or section_braces
    if not used["user"] & {"question", "answer", "answers"}:
        raise ConfigError(
            "judge.template",
            f"{where}: the user message has no {{question}} or {{answer}} placeholder ($question, $answer work too),"
            " so the judge would not see what it grades",
        )
    if {"answer", "answers"} <= used["user"]:
        raise ConfigError(
            "judge.template", f"{where}: the user message has both $answer (one answer) and $answers (a group)"
        )
    shots: tuple[FewShotExample, ...] = ()
    examples_text = ""
    if examples is not None:
        shots, examples_text = load_examples(examples)
        if shots and ("example" not in sections or "examples" not in used.get("system", ())):
            raise ConfigError(
                "judge.examples",
                f"{examples}: {where} cannot show few-shot examples: that needs an [example] section"
                " and $examples (or {examples}) in [system]",
            )
    material = text.encode() + b"\0" + examples_text.encode() + (_BRACE_SYNTAX if braces else b"")
    digest = hashlib.sha256(material).hexdigest()
    return JudgePrompt(
        name=name,
        sections=sections,
        examples=shots,
        version=f"{name}-{digest[:10]}",
        text_hash=digest,
        group="answers" in used["user"],
    )


def _parse_sections(text: str, where: str) -> dict[str, tuple[str, list[int]]]:
    """Each section's text and the file line of each of its lines; a file without sections is ``user``."""
    numbered = list(enumerate(text.splitlines(), 1))
    if not any(_SECTION_RE.match(line) for _, line in numbered):
        sections = {"user": numbered}
    else:
        sections = {}
        current: list[tuple[int, str]] | None = None
        for number, line in numbered:
            match = _SECTION_RE.match(line)
            if match:
                name = match.group("name")
                if name not in PLACEHOLDERS:
                    raise ConfigError("judge.template", f"{where}:{number}: unknown section [{name}]")
                current = sections.setdefault(name, [])
                continue
            if current is not None:
                current.append((number, line))
        if "user" not in sections:
            raise ConfigError("judge.template", f"{where}: no [user] section")
    out = {}
    for name, lines in sections.items():
        while lines and not lines[0][1]:
            lines = lines[1:]
        while lines and not lines[-1][1]:
            lines = lines[:-1]
        out[name] = ("\n".join(line for _, line in lines), [number for number, _ in lines])
    return out


def _placeholders(section: str, text: str, lines: list[int], where: str, *, strict: bool) -> tuple[str, set[str], bool]:
    """``text`` as a ``string.Template`` text with its ``{name}`` placeholders turned into ``${name}``.

    Returns that text, the placeholders the section uses, and whether it has any ``{name}`` or
    ``{{name}}``. A ``{name}`` the section does not know raises :class:`ConfigError` when
    ``strict`` (a plain file, written for ``str.format`` as seed 002's) and is sent as written
    otherwise (a sectioned template: LaTeX such as ``\\frac{a}{b}`` keeps working).
    """
    known = PLACEHOLDERS[section]
    used: set[str] = set()
    braces = False
    out: list[str] = []
    pos = 0
    for match in _TOKEN_RE.finditer(text):
        out.append(text[pos : match.start()])
        pos = match.end()
        kind = match.lastgroup
        if kind is None or kind == "dollar":  # a literal '$' ('$$', or one before no name): keep it literal
            out.append("$$")
        elif kind in ("named", "braced"):
            if match.group(kind) in known:
                used.add(match.group(kind))
            out.append(match.group())
        elif kind == "escaped":
            braces = True
            out.append("{" + match.group(kind) + "}")
        else:
            name = match.group(kind)
            if name not in known and not strict:
                out.append(match.group())
                continue
            if name not in known:
                line = lines[text.count("\n", 0, match.start())]
                raise ConfigError(
                    "judge.template",
                    f"{where}:{line}: unknown placeholder {{{name}}} in [{section}]"
                    f" (known there: {', '.join(known)}; write {{{{{name}}}}} for literal braces)",
                )
            braces = True
            used.add(name)
            out.append("${" + name + "}")
    out.append(text[pos:])
    return "".join(out), used, braces


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
