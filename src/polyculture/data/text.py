"""Text classification data: a CSV/TSV reader, the Financial PhraseBank, and the word tokenizer.

Two datasets are registered here:

* ``text_csv``: a CSV/TSV file with a text and a label column (plus optional group columns), or a
  folder holding ``train.csv`` and optionally ``test.csv`` (``.tsv`` also works). Without a test
  file, ``test_fraction`` of the rows are held out (stratified, seeded by ``split_seed``).
  BANKING77 loads as ``path=<folder>, options={"label": "category"}`` with its official split.
* ``phrasebank``: the Financial PhraseBank (Malo et al. 2014), one ``sentence@label`` per line,
  latin-1, classes ``negative``, ``neutral``, ``positive``; a stratified seeded 80/20 split.

The tokenizer (a decision, kept on purpose): every from-scratch text member reads the token ids
made here, from a word-level vocabulary built from the task's training rows only. It is *not* the
pretrained encoder's WordPiece tokenizer, for two reasons: the from-scratch members must share no
component with the pretrained model (that difference is what the component-sharing experiment
measures), and this tokenizer needs no optional dependency. Tokens are the matches of
``\\w+|[^\\w\\s]`` (Unicode word characters, each other non-space character alone) after
lowercasing; ids are ``0`` = ``<pad>``, ``1`` = ``<unk>``, then the tokens seen at least
``min_count`` times, by descending count and then by token, capped at ``max_vocab`` ids in all.
Texts are truncated to ``max_length`` tokens and right-padded with ``0``. The validation split is
carved later (by :func:`~polyculture.data.builders.build_task`) from the training rows, so the
vocabulary also covers the validation rows, never the test rows. The pretrained encoder re-reads
the raw strings in ``Split.texts``.

Instance ids (``Split.index``) are 1-based line numbers in the source file: the line where the
row starts (a CSV's header is line 1, so its first row is line 2; a quoted text spanning lines is
counted at its first line). Error messages name the same line numbers. Texts and labels are
stripped of surrounding whitespace. Cleaning is counted, never silent: blank lines, rows without
a label and labels outside an explicit ``classes`` list are dropped and logged; an empty text is an
error unless ``empty_text = "drop"``.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from polyculture.data.builders import RawData, dataset, seeded_split
from polyculture.data.task import PAD_ID, UNKNOWN_ID, CleaningStep
from polyculture.errors import ConfigError, DataError

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
"""A token: a run of Unicode word characters, or one character that is neither word nor space."""
PAD_TOKEN = "<pad>"
"""The token of id 0 (``PAD_ID``); the pattern never produces it from text."""
UNKNOWN_TOKEN = "<unk>"
"""The token of id 1 (``UNKNOWN_ID``): every word outside the vocabulary."""

PHRASEBANK_CLASSES = ("negative", "neutral", "positive")
PHRASEBANK_FILES = {
    "50": "Sentences_50Agree.txt",
    "66": "Sentences_66Agree.txt",
    "75": "Sentences_75Agree.txt",
    "all": "Sentences_AllAgree.txt",
}


# --- tokenizer ---------------------------------------------------------------------------------


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Split ``text`` into word and punctuation tokens.

    Parameters
    ----------
    text
        Any string.
    lowercase
        Lowercase before splitting.

    Returns
    -------
    list of str
        Runs of Unicode word characters, and every other non-space character on its own.

    Examples
    --------
    >>> tokenize("Café sales rose 5.7% (Q3)!")
    ['café', 'sales', 'rose', '5', '.', '7', '%', '(', 'q3', ')', '!']
    """
    return TOKEN_PATTERN.findall(text.lower() if lowercase else text)


def build_vocabulary(
    texts: Iterable[str], min_count: int = 2, max_size: int = 20000, *, lowercase: bool = True
) -> tuple[str, ...]:
    """The vocabulary of ``texts``: the token of each id.

    Parameters
    ----------
    texts
        The training texts.
    min_count
        Tokens seen fewer times are left out (they become ``<unk>``).
    max_size
        Most ids in all, the two special tokens included.
    lowercase
        Lowercase before tokenizing (as :func:`tokenize`).

    Returns
    -------
    tuple of str
        ``("<pad>", "<unk>", ...)``, then tokens by descending count, ties by token.

    Examples
    --------
    >>> build_vocabulary(["the cat", "The dog", "a dog"], min_count=2)
    ('<pad>', '<unk>', 'dog', 'the')
    >>> build_vocabulary(["b a", "a b c"], min_count=1, max_size=4)
    ('<pad>', '<unk>', 'a', 'b')
    """
    if isinstance(texts, str):
        raise ConfigError("build_vocabulary got one string", hint="pass a list of texts")
    if min_count < 1 or max_size < 2:
        raise ConfigError(
            f"build_vocabulary: min_count={min_count}, max_size={max_size}",
            hint="min_count must be >= 1 and max_size >= 2 (the <pad> and <unk> ids)",
        )
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(tokenize(text, lowercase))
    frequent = sorted(
        (t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t)
    )
    return (PAD_TOKEN, UNKNOWN_TOKEN, *frequent[: max_size - 2])


def encode_texts(
    texts: Sequence[str], vocabulary: Sequence[str], max_length: int, *, lowercase: bool = True
) -> np.ndarray:
    """Token ids of ``texts``: truncated, right-padded with ``0``, unknown words ``1``.

    Parameters
    ----------
    texts
        The texts to encode.
    vocabulary
        From :func:`build_vocabulary` (``vocabulary[0]`` must be ``<pad>``, ``[1]`` ``<unk>``).
    max_length
        Tokens kept per text; later ones are cut.
    lowercase
        Lowercase before tokenizing; use the setting the vocabulary was built with.

    Returns
    -------
    numpy.ndarray
        int64, shape ``(len(texts), max_length)``.

    Examples
    --------
    >>> encode_texts(["the dog", "a dog barks"], ("<pad>", "<unk>", "dog", "the"), max_length=3)
    array([[3, 2, 0],
           [1, 2, 1]])
    """
    if tuple(vocabulary[:2]) != (PAD_TOKEN, UNKNOWN_TOKEN):
        raise ConfigError(
            f"the vocabulary starts with {tuple(vocabulary[:2])}, not ('<pad>', '<unk>')",
            hint="build it with build_vocabulary",
        )
    if max_length < 1:
        raise ConfigError(f"max_length={max_length}", hint="max_length must be at least 1")
    ids: dict[str, int] = {}
    for position, token in enumerate(vocabulary):
        ids.setdefault(token, position)
    encoded = np.full((len(texts), max_length), PAD_ID, dtype=np.int64)  # (n, max_length)
    for row, text in enumerate(texts):
        tokens = tokenize(text, lowercase)[:max_length]
        encoded[row, : len(tokens)] = [ids.get(token, UNKNOWN_ID) for token in tokens]
    return encoded


# --- options -----------------------------------------------------------------------------------


class TextOptions(BaseModel):
    """Options every text dataset shares: the tokenizer, the test split, cleaning and encoding.

    Attributes
    ----------
    max_length
        Tokens kept per text (longer texts are truncated).
    min_count
        Training-set count a token needs to get its own id.
    max_vocab
        Most ids in the vocabulary, ``<pad>`` and ``<unk>`` included.
    lowercase
        Lowercase texts before tokenizing.
    test_fraction, split_seed
        The stratified seeded test split, where the data have no test file.
    empty_text
        ``error`` (default): an empty or blank text stops the run, naming its line; ``drop``:
        such rows are dropped and counted in the cleaning log.
    encoding
        Text encoding of the files.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_length: int = Field(64, ge=1)
    min_count: int = Field(2, ge=1)
    max_vocab: int = Field(20000, ge=3)
    lowercase: bool = True
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0, lt=2**32)
    empty_text: Literal["error", "drop"] = "error"
    encoding: str = "utf-8"

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str) -> str:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {encoding!r} (try 'utf-8' or 'latin-1')") from None
        return encoding


class TextCsvOptions(TextOptions):
    """Options of the ``text_csv`` reader (and those of :class:`TextOptions`).

    Attributes
    ----------
    text, label
        Names of the text and the label column.
    test_path
        A separate test file; default: ``test.csv`` beside a folder's ``train.csv``, else a split.
    groups
        Columns kept as per-instance group attributes (string values; empty cells ``(missing)``).
    sep
        Field separator; default a tab for ``.tsv`` files, else a comma.
    classes
        Class order; rows with any other label are dropped and counted.
    """

    text: str = "text"
    label: str = "label"
    test_path: str | None = None
    groups: list[str] = []
    sep: str | None = None
    classes: list[str] | None = None

    @field_validator("sep")
    @classmethod
    def _one_character(cls, sep: str | None) -> str | None:
        if sep is not None and len(sep) != 1:
            raise ValueError(f"the separator must be one character, not {sep!r}")
        return sep

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, classes: list[str] | None) -> list[str] | None:
        if classes is not None and len(set(classes)) != len(classes):
            raise ValueError("classes lists a class twice")
        return classes


class PhrasebankOptions(TextOptions):
    """Options of the ``phrasebank`` reader (and those of :class:`TextOptions`).

    Attributes
    ----------
    agreement
        Which file a folder path reads: annotator agreement ``50``, ``66``, ``75`` or ``all`` %.
    encoding
        The release is latin-1.
    """

    agreement: Literal["50", "66", "75", "all"] = "50"
    encoding: str = "latin-1"

    @field_validator("agreement", mode="before")
    @classmethod
    def _agreement_as_text(cls, agreement: object) -> object:
        # TOML users write agreement = 50; "All" and "AllAgree" name the same file.
        if isinstance(agreement, int) and not isinstance(agreement, bool):
            return str(agreement)
        if isinstance(agreement, str):
            return agreement.lower().removesuffix("agree")
        return agreement


# --- reading -----------------------------------------------------------------------------------


@dataclass
class _Rows:
    """Examples read from one file, in file order."""

    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)

    def add(self, text: str, label: str, line: int, groups: list[str]) -> None:
        self.texts.append(text)
        self.labels.append(label)
        self.lines.append(line)
        self.groups.append(groups)

    def take(self, positions: np.ndarray) -> _Rows:
        picked = positions.tolist()
        return _Rows(
            [self.texts[i] for i in picked],
            [self.labels[i] for i in picked],
            [self.lines[i] for i in picked],
            [self.groups[i] for i in picked],
        )


def _decode(path: Path, encoding: str) -> str:
    """The text of ``path``; a decoding error names its line, an empty file is an error."""
    if not path.is_file():
        raise DataError(
            f"text file '{path}' does not exist", hint="check data.path and data.options"
        )
    data = path.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].decode(encoding, errors="replace").count("\n") + 1
        other = "utf-8" if codecs.lookup(encoding).name == "iso8859-1" else "latin-1"
        raise DataError(
            f"'{path}' line {line} is not valid {encoding} (byte 0x{data[err.start]:02x})",
            hint=f"set data.options.encoding to the file's encoding, e.g. '{other}'",
        ) from None
    text = text.removeprefix("\ufeff")  # a byte-order mark is not part of the first field
    if not text.strip():
        raise DataError(f"'{path}' is empty", hint="check data.path: the file holds no examples")
    return text


def _empty_texts(
    path: Path, lines: list[int], options: TextOptions, split: str, cleaning: list[CleaningStep]
) -> None:
    """Stop at empty texts, or count them when ``empty_text='drop'``."""
    if not lines:
        return
    if options.empty_text == "error":
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        raise DataError(
            f"'{path}' line {lines[0]} has an empty text{more}",
            hint="remove it, or set data.options.empty_text='drop' to drop and count such rows",
        )
    shown = ", ".join(map(str, lines[:5])) + (", ..." if len(lines) > 5 else "")
    cleaning.append(CleaningStep(split, "empty text", len(lines), f"lines {shown}"))


def _read_csv(
    path: Path, options: TextCsvOptions, split: str, cleaning: list[CleaningStep]
) -> _Rows:
    text = _decode(path, options.encoding)
    sep = options.sep or ("\t" if path.suffix.lower() == ".tsv" else ",")
    # newline="\n" splits lines at "\n" only, so line numbers agree with the decoding error's.
    reader = csv.reader(io.StringIO(text, newline="\n"), delimiter=sep, skipinitialspace=True)
    rows = _Rows()
    header: list[str] | None = None
    blank: list[int] = []
    no_label: list[int] = []
    empty: list[int] = []
    unknown: Counter[str] = Counter()
    last_line = 0
    try:
        for fields in reader:
            line, last_line = last_line + 1, reader.line_num
            if not any(cell.strip() for cell in fields):
                if header is not None:
                    blank.append(line)
                continue
            if header is None:
                header = [name.strip() for name in fields]
                columns = _column_positions(path, header, options)
                continue
            if len(fields) != len(header):
                raise DataError(
                    f"'{path}' line {line} has {len(fields)} fields but the header has "
                    f"{len(header)}",
                    hint="check the separator (data.options.sep) and that texts holding it "
                    "are quoted",
                )
            text_value, label, *groups = (fields[i].strip() for i in columns)
            if not label:
                no_label.append(line)
            elif not text_value:
                empty.append(line)
            elif options.classes is not None and label not in options.classes:
                unknown[label] += 1
            else:
                rows.add(text_value, label, line, [g or "(missing)" for g in groups])
    except csv.Error as err:
        raise DataError(
            f"cannot parse '{path}' line {reader.line_num}: {err}".splitlines()[0],
            hint="check the separator (data.options.sep) and the quoting",
        ) from None
    if len(rows.texts) + len(blank) + len(no_label) + len(empty) + unknown.total() == 0:
        raise DataError(f"'{path}' has a header but no rows", hint="check data.path")
    _empty_texts(path, empty, options, split, cleaning)
    if blank:
        cleaning.append(CleaningStep(split, "blank lines", len(blank)))
    if no_label:
        cleaning.append(CleaningStep(split, "missing label", len(no_label)))
    if unknown:
        values = ", ".join(sorted(unknown)[:5])
        cleaning.append(CleaningStep(split, "unknown label", unknown.total(), values))
    return rows


def _column_positions(path: Path, header: list[str], options: TextCsvOptions) -> list[int]:
    """Positions of the text, label and group columns; missing ones are named with the hint."""
    existing = ", ".join(header)
    for role, name in (("text", options.text), ("label", options.label)):
        if name not in header:
            raise DataError(
                f"'{path}' has no {role} column '{name}' (columns: {existing})",
                hint=f"set data.options.{role} to the column holding the {role}",
            )
    missing = [name for name in options.groups if name not in header]
    if missing:
        raise DataError(
            f"'{path}' has no group column(s) {', '.join(missing)} (columns: {existing})",
            hint="check data.options.groups",
        )
    return [header.index(name) for name in (options.text, options.label, *options.groups)]


def _read_phrasebank(path: Path, options: PhrasebankOptions, cleaning: list[CleaningStep]) -> _Rows:
    text = _decode(path, options.encoding)
    rows = _Rows()
    blank = 0
    empty: list[int] = []
    # Split at "\n" only: str.splitlines() would also break at "\x85" and friends, which latin-1
    # decodes from ordinary bytes.
    lines = text.split("\n")
    if not lines[-1].strip():
        lines.pop()  # what follows the final newline is not a line
    for number, raw_line in enumerate(lines, start=1):
        content = raw_line.strip()
        if not content:
            blank += 1
            continue
        sentence, at, label = content.rpartition("@")
        if not at:
            raise DataError(
                f"'{path}' line {number} has no '@' before its label",
                hint="each line must read 'sentence@label' (negative, neutral or positive)",
            )
        label = label.strip().lower()
        if label not in PHRASEBANK_CLASSES:
            raise DataError(
                f"'{path}' line {number} has unknown label {label!r}",
                hint="labels must be negative, neutral or positive",
            )
        sentence = sentence.strip()
        if not sentence:
            empty.append(number)
            continue
        rows.add(sentence, label, number, [])
    _empty_texts(path, empty, options, "train", cleaning)
    if blank:
        cleaning.append(CleaningStep("train", "blank lines", blank))
    return rows


def _require_two_classes(rows: _Rows, what: str) -> None:
    """A classifier needs two classes; also catches files left empty by the cleaning."""
    if not rows.labels:
        raise DataError(f"{what} has no rows with a text and a label", hint="see the cleaning log")
    classes = sorted(set(rows.labels))
    if len(classes) == 1:
        raise DataError(
            f"{what} has only one class {classes[0]!r}",
            hint="a classifier needs at least two; check the file and the label column",
        )


def _split(rows: _Rows, options: TextOptions) -> tuple[_Rows, _Rows]:
    kept, held = seeded_split(np.array(rows.labels), options.test_fraction, options.split_seed)
    return rows.take(kept), rows.take(held)


def _raw_data(
    train: _Rows,
    test: _Rows,
    class_names: tuple[str, ...],
    options: TextOptions,
    cleaning: list[CleaningStep],
    group_names: Sequence[str] = (),
) -> RawData:
    """Tokenize with the training vocabulary and map labels to class indices."""
    vocabulary = build_vocabulary(
        train.texts, options.min_count, options.max_vocab, lowercase=options.lowercase
    )
    if len(vocabulary) == 2:
        raise DataError(
            f"no token occurs {options.min_count} times in the {len(train.texts)} training texts",
            hint="lower data.options.min_count",
        )
    lookup = {name: i for i, name in enumerate(class_names)}
    # A test label missing from the lookup gets an index past the classes: the common label
    # check then reports it as a class unseen in training (as the tabular reader does).
    unseen_test = sorted(set(test.labels) - set(lookup))
    lookup.update({name: len(class_names) + i for i, name in enumerate(unseen_test)})

    def encode(rows: _Rows) -> np.ndarray:
        return encode_texts(rows.texts, vocabulary, options.max_length, lowercase=options.lowercase)

    def groups_of(rows: _Rows) -> pd.DataFrame | None:
        if not group_names:
            return None
        return pd.DataFrame(rows.groups, columns=list(group_names), dtype=str)

    return RawData(
        modality="text",
        class_names=class_names + tuple(unseen_test),
        x_train=encode(train),
        y_train=np.array([lookup[label] for label in train.labels], dtype=np.int64),
        x_test=encode(test),
        y_test=np.array([lookup[label] for label in test.labels], dtype=np.int64),
        groups_train=groups_of(train),
        groups_test=groups_of(test),
        index_train=np.array(train.lines, dtype=np.int64),
        index_test=np.array(test.lines, dtype=np.int64),
        cleaning=cleaning,
        texts_train=tuple(train.texts),
        texts_test=tuple(test.texts),
        vocabulary=vocabulary,
    )


# --- datasets ----------------------------------------------------------------------------------


def _csv_files(path: Path, options: TextCsvOptions) -> tuple[Path, Path | None]:
    """The train file and the test file (``None``: split the train file)."""
    test = None if options.test_path is None else Path(options.test_path).expanduser()
    if not path.is_dir():
        return path, test
    found = [path / name for name in ("train.csv", "train.tsv") if (path / name).is_file()]
    if not found:
        raise DataError(
            f"folder '{path}' has no train.csv",
            hint="pass the CSV file itself, or a folder holding train.csv (and test.csv)",
        )
    if test is None:
        test = next((path / n for n in ("test.csv", "test.tsv") if (path / n).is_file()), None)
    return found[0], test


@dataset(
    "text_csv",
    description="text CSV/TSV: a text and a label column (or a folder with train.csv, test.csv)",
    modality="text",
    options=TextCsvOptions,
    needs_path=True,
)
def build_text_csv(path: Path | None, options: TextCsvOptions) -> RawData:
    """Read a text classification task from CSV/TSV.

    Examples
    --------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "t.csv"
    >>> rows = [f"{['bad', 'good'][i % 2]} day {i},{['neg', 'pos'][i % 2]}" for i in range(10)]
    >>> _ = f.write_text("text,label\\n" + "\\n".join(rows) + "\\n")
    >>> raw = build_text_csv(f, TextCsvOptions(max_length=4))
    >>> raw.x_train.shape, raw.class_names, raw.vocabulary
    ((8, 4), ('neg', 'pos'), ('<pad>', '<unk>', 'day', 'bad', 'good'))
    """
    assert path is not None
    cleaning: list[CleaningStep] = []
    train_file, test_file = _csv_files(path, options)
    train = _read_csv(train_file, options, "train", cleaning)
    _require_two_classes(train, f"label column '{options.label}' of '{train_file}'")
    if test_file is None:
        train, test = _split(train, options)
    else:
        test = _read_csv(test_file, options, "test", cleaning)
    class_names = tuple(options.classes or sorted(set(train.labels)))
    return _raw_data(train, test, class_names, options, cleaning, options.groups)


@dataset(
    "phrasebank",
    description="Financial PhraseBank: financial news sentences, negative/neutral/positive",
    modality="text",
    options=PhrasebankOptions,
    needs_path=True,
)
def build_phrasebank(path: Path | None, options: PhrasebankOptions) -> RawData:
    """Read the Financial PhraseBank (a ``Sentences_*Agree.txt`` file or the release folder).

    Examples
    --------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "Sentences_50Agree.txt"
    >>> lines = [f"Sales {'rose' if i % 2 else 'fell'} by {i} % .@{PHRASEBANK_CLASSES[i % 3]}"
    ...          for i in range(30)]
    >>> _ = f.write_bytes("\\r\\n".join(lines).encode("latin-1"))
    >>> raw = build_phrasebank(f, PhrasebankOptions())
    >>> len(raw.y_train), len(raw.y_test), raw.class_names
    (24, 6, ('negative', 'neutral', 'positive'))
    """
    assert path is not None
    if path.is_dir():
        path = path / PHRASEBANK_FILES[options.agreement]
    elif (
        "agreement" in options.model_fields_set and path.name != PHRASEBANK_FILES[options.agreement]
    ):
        raise ConfigError(
            f"data.options.agreement='{options.agreement}' but data.path is '{path.name}'",
            hint="give the folder as data.path to choose the file by agreement, or drop the option",
        )
    cleaning: list[CleaningStep] = []
    rows = _read_phrasebank(path, options, cleaning)
    _require_two_classes(rows, f"'{path}'")
    train, test = _split(rows, options)
    return _raw_data(train, test, PHRASEBANK_CLASSES, options, cleaning)
