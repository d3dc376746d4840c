"""Files of the customer-service assistant: answer templates and the knowledge base.

Two small CSV files (UTF-8, a header row, comma-separated, texts with commas quoted):

* **answers** (``intent,answer``): one answer template per intent. The assistant replies with the
  template of the intent its classifier predicts, when it is confident enough. Templates are plain
  text (no placeholders). Every intent must be one the classifier knows (a typo would otherwise
  never fire); intents without a template are answered by retrieval (or handed to a human).
* **knowledge base** (``question,answer,source`` and an optional ``intent`` column): entries the
  assistant searches when the classifier is unsure. ``source`` says where an answer comes from
  (a help-centre page, a policy) and is returned with it. ``intent`` ties an entry to the intent
  its question is an example of; with it, the retrieval threshold is calibrated on labelled
  queries (see :mod:`polyculture.run.support`).

Cells are stripped of surrounding whitespace. Problems are errors naming the file and line (the
header is line 1): a missing column, an empty cell, a duplicate intent, a file that is not UTF-8.
"""

from __future__ import annotations

import csv
import difflib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from polyculture.errors import ConfigError, DataError

__all__ = [
    "ANSWER_COLUMNS",
    "KNOWLEDGE_BASE_COLUMNS",
    "KnowledgeBase",
    "check_answer_intents",
    "load_answers",
    "load_knowledge_base",
]

ANSWER_COLUMNS = ("intent", "answer")
"""Required columns of an answers file."""
KNOWLEDGE_BASE_COLUMNS = ("question", "answer", "source")
"""Required columns of a knowledge-base file (``intent`` is optional)."""


@dataclass(frozen=True)
class KnowledgeBase:
    """The entries retrieval searches, in file order.

    Attributes
    ----------
    questions, answers, sources
        One string per entry.
    intents
        The intent of each entry's question, or ``None`` when the file has no ``intent`` column
        (empty cells are ``""``: an entry about no intent of the classifier).
    """

    questions: tuple[str, ...]
    answers: tuple[str, ...]
    sources: tuple[str, ...]
    intents: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.questions)


def _read_rows(path: Path, what: str, required: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and data rows of a small UTF-8 CSV; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file '{path}' does not exist", hint=f"give the path of the {what}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{what} file '{path}' line {line} is not valid UTF-8",
            hint="save the file as UTF-8",
        ) from None
    numbered: list[tuple[int, list[str]]] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        start = 1  # the file line a record starts on (a quoted field may span lines)
        for row in reader:
            if any(cell.strip() for cell in row):
                numbered.append((start, row))
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataError(
            f"{what} file '{path}' is not a valid CSV ({err})", hint="quote texts that hold commas"
        ) from None
    if not numbered:
        raise DataError(
            f"{what} file '{path}' is empty", hint=f"write a header ({','.join(required)})"
        )
    header = [cell.strip().lower() for cell in numbered[0][1]]
    missing = [column for column in required if column not in header]
    if missing:
        raise DataError(
            f"{what} file '{path}' has no column '{missing[0]}' (header: {','.join(header)})",
            hint=f"the first line must name the columns {','.join(required)}",
        )
    body: list[list[str]] = []
    for line, row in numbered[1:]:
        if len(row) != len(header):
            raise DataError(
                f"{what} file '{path}' line {line} has {len(row)} fields but the header has "
                f"{len(header)}",
                hint="quote texts that hold commas",
            )
        body.append([f"{line}", *(cell.strip() for cell in row)])
    if not body:
        raise DataError(f"{what} file '{path}' has a header but no rows", hint="add entries")
    return ["line", *header], body


def load_answers(path: str | Path) -> dict[str, str]:
    """Read an answers file: intent -> answer template, in file order.

    Raises
    ------
    DataError
        Missing file or column, an empty intent or answer, an intent listed twice.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "answers.csv"
    >>> _ = path.write_text('intent,answer\\ncard_arrival,"Cards arrive in 5 days, usually."\\n')
    >>> load_answers(path)
    {'card_arrival': 'Cards arrive in 5 days, usually.'}
    """
    header, rows = _read_rows(Path(path), "answers", ANSWER_COLUMNS)
    intent_at, answer_at = header.index("intent"), header.index("answer")
    answers: dict[str, str] = {}
    for row in rows:
        line, intent, answer = row[0], row[intent_at], row[answer_at]
        if not intent or not answer:
            empty = "intent" if not intent else "answer"
            raise DataError(
                f"answers file '{path}' line {line} has an empty {empty}",
                hint="give every row an intent and its answer template",
            )
        if intent in answers:
            raise DataError(
                f"answers file '{path}' line {line} repeats intent '{intent}'",
                hint="keep one answer template per intent",
            )
        answers[intent] = answer
    return answers


def load_knowledge_base(path: str | Path) -> KnowledgeBase:
    """Read a knowledge-base file (``question,answer,source`` and an optional ``intent``).

    Raises
    ------
    DataError
        Missing file or column, an empty question, answer or source.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "kb.csv"
    >>> _ = path.write_text("question,answer,source\\nHow to freeze a card?,In the app.,help/f\\n")
    >>> kb = load_knowledge_base(path)
    >>> len(kb), kb.sources, kb.intents
    (1, ('help/f',), None)
    """
    header, rows = _read_rows(Path(path), "knowledge base", KNOWLEDGE_BASE_COLUMNS)
    positions = {column: header.index(column) for column in KNOWLEDGE_BASE_COLUMNS}
    for row in rows:
        for column, position in positions.items():
            if not row[position]:
                raise DataError(
                    f"knowledge base '{path}' line {row[0]} has an empty {column}",
                    hint="give every entry a question, an answer and a source",
                )
    intents = None
    if "intent" in header:
        intents = tuple(row[header.index("intent")] for row in rows)
    return KnowledgeBase(
        questions=tuple(row[positions["question"]] for row in rows),
        answers=tuple(row[positions["answer"]] for row in rows),
        sources=tuple(row[positions["source"]] for row in rows),
        intents=intents,
    )


def check_answer_intents(
    answers: dict[str, str], class_names: Sequence[str], *, what: str = "answers file"
) -> list[str]:
    """Check that every templated intent is a class; return the classes without a template.

    Raises
    ------
    ConfigError
        An intent of ``answers`` is not a class of the classifier (naming the closest class).

    Examples
    --------
    >>> check_answer_intents({"a": "A."}, ["a", "b"])
    ['b']
    >>> check_answer_intents({"c": "C."}, ["a", "b"])
    Traceback (most recent call last):
    ...
    polyculture.errors.ConfigError: answers file: intent 'c' is not an intent of the classifier; ...
    """
    known = [str(name) for name in class_names]
    for intent in answers:
        if intent not in known:
            close = difflib.get_close_matches(intent, known, n=1)
            guess = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(
                f"{what}: intent '{intent}' is not an intent of the classifier",
                hint=f"{guess}fix the name or remove the row (the intents are the run's classes, "
                "in task.json)",
            )
    return [name for name in known if name not in answers]
