"""Text datasets: the word tokenizer, the ``text_csv`` and ``phrasebank`` readers, bad input."""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import shared_data
from polyculture.data import DATASETS, DataSpec, Task, build_task
from polyculture.data.task import PAD_ID, UNKNOWN_ID
from polyculture.data.text import (
    PHRASEBANK_CLASSES,
    TextCsvOptions,
    build_text_csv,
    build_vocabulary,
    encode_texts,
    tokenize,
)
from polyculture.errors import ConfigError, DataError

WORDS = ["good", "bad", "stock", "rose", "fell", "profit", "loss", "Café", "naïve", "x_1"]
texts_strategy = st.lists(
    st.text(
        alphabet=st.sampled_from([*"aBcé1_.,!?@ \t\n", "ß", "İ", "\u00a0", "日", "本"]), max_size=30
    ),
    max_size=12,
)


# --- tokenizer -----------------------------------------------------------------------------------


def test_tokenize_examples() -> None:
    assert tokenize("The CAFÉ's profit: +5.7%") == [
        "the",
        "café",
        "'",
        "s",
        "profit",
        ":",
        "+",
        "5",
        ".",
        "7",
        "%",
    ]
    assert tokenize("The CAFÉ", lowercase=False) == ["The", "CAFÉ"]
    assert tokenize("  \t\n") == []


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.booleans())
def test_tokens_cover_every_non_space_character(text: str, lowercase: bool) -> None:
    tokens = tokenize(text, lowercase)
    source = text.lower() if lowercase else text
    # Reference: the non-space characters, in order, make up exactly the tokens.
    assert "".join(tokens) == "".join(ch for ch in source if not ch.isspace())
    for token in tokens:
        assert not any(ch.isspace() for ch in token)
        # a token is one word run or one single non-word character
        assert (len(token) == 1) or all(ch.isalnum() or ch == "_" for ch in token)


def test_vocabulary_planted_order() -> None:
    texts = ["b a c", "a b", "a d d", "c"]  # counts: a 3, b 2, c 2, d 2
    assert build_vocabulary(texts, min_count=2) == ("<pad>", "<unk>", "a", "b", "c", "d")
    assert build_vocabulary(texts, min_count=3) == ("<pad>", "<unk>", "a")
    assert build_vocabulary(texts, min_count=1, max_size=4) == ("<pad>", "<unk>", "a", "b")
    assert build_vocabulary(["A a", "B b"], min_count=2, lowercase=False) == ("<pad>", "<unk>")


@settings(max_examples=100, deadline=None)
@given(texts_strategy, st.integers(1, 3), st.integers(2, 12), st.randoms(use_true_random=False))
def test_vocabulary_deterministic_and_ordered(
    texts: list[str], min_count: int, max_size: int, rng: random.Random
) -> None:
    vocabulary = build_vocabulary(texts, min_count, max_size)
    shuffled = list(texts)
    rng.shuffle(shuffled)
    assert build_vocabulary(shuffled, min_count, max_size) == vocabulary
    assert vocabulary[:2] == ("<pad>", "<unk>") and len(vocabulary) <= max_size
    assert len(set(vocabulary)) == len(vocabulary)
    # Reference counts from a separate regex pass.
    counts = Counter(t for text in texts for t in re.findall(r"\w+|[^\w\s]", text.lower()))
    tokens = vocabulary[2:]
    assert all(counts[t] >= min_count for t in tokens)
    keys = [(-counts[t], t) for t in tokens]
    assert keys == sorted(keys)
    left_out = [t for t, c in counts.items() if c >= min_count and t not in tokens]
    if left_out:  # only the cap leaves frequent tokens out, and only ones ranked after the kept
        assert len(vocabulary) == max_size
        assert not keys or min((-counts[t], t) for t in left_out) > keys[-1]


@settings(max_examples=100, deadline=None)
@given(texts_strategy, st.integers(1, 8))
def test_encoding_properties(texts: list[str], max_length: int) -> None:
    vocabulary = build_vocabulary(texts[: len(texts) // 2 + 1], min_count=1)
    ids = encode_texts(texts, vocabulary, max_length)
    assert ids.dtype == np.int64 and ids.shape == (len(texts), max_length)
    assert ((ids >= 0) & (ids < len(vocabulary))).all()
    for row, text in zip(ids, texts, strict=True):
        tokens = tokenize(text)[:max_length]
        # right padding: the tokens, then only pads (a token never maps to the pad id)
        assert (row[: len(tokens)] != PAD_ID).all() and (row[len(tokens) :] == PAD_ID).all()
        for token, token_id in zip(tokens, row, strict=False):
            if token in vocabulary:
                assert vocabulary[token_id] == token  # round trip for known tokens
            else:
                assert token_id == UNKNOWN_ID


def test_encoding_example_and_bad_vocabulary() -> None:
    vocabulary = ("<pad>", "<unk>", "dog", "the")
    expected = np.array([[3, 2, 0, 0], [1, 2, 1, 1], [0, 0, 0, 0]])
    got = encode_texts(["The dog", "a dog barks loudly today", ""], vocabulary, 4)
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ConfigError, match="build_vocabulary"):
        encode_texts(["x"], ("dog", "the"), 4)
    with pytest.raises(ConfigError, match="max_length"):
        encode_texts(["x"], vocabulary, 0)
    with pytest.raises(ConfigError, match="one string"):
        build_vocabulary("the dog")


# --- text_csv ------------------------------------------------------------------------------------


def sentence(i: int) -> tuple[str, str]:
    """A generated example: the label is readable from the words."""
    label = ["neg", "neu", "pos"][i % 3]
    word = {"neg": "fell", "neu": "held", "pos": "rose"}[label]
    return f"Stock {WORDS[i % len(WORDS)]} {word} {i} %", label


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def csv_text(rows: list[tuple[str, ...]], header: tuple[str, ...], sep: str = ",") -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=sep, lineterminator="\n").writerows([header, *rows])
    return buffer.getvalue()


def file_rows(path: Path, sep: str = ",") -> dict[int, dict[str, str]]:
    """Reference reader: each row by the 1-based line it starts on (header is line 1)."""
    rows: dict[int, dict[str, str]] = {}
    line = 2
    reader = csv.DictReader(io.StringIO(path.read_text(), newline=""), delimiter=sep)
    for row in reader:
        rows[line] = row
        line = reader.line_num + 1
    return rows


def check_aligned(
    task: Task, source: dict[int, dict[str, str]], label: str = "label", test_only: bool = False
) -> None:
    """Every split's texts, labels and token ids agree with the file rows its ids point to."""
    for split in (task.test,) if test_only else (task.train, task.val, task.test):
        assert split.x.dtype == torch.int64 and split.texts is not None
        assert split.x.shape == (len(split), task.input_shape[0])
        for i, line in enumerate(split.instance_ids().tolist()):
            assert source[line]["text"].strip() == split.texts[i]
            assert source[line][label] == task.class_names[int(split.y[i])]
        expected = encode_texts(split.texts, task.vocabulary, task.input_shape[0])
        np.testing.assert_array_equal(split.x.numpy(), expected)


def test_registered() -> None:
    assert {"text_csv", "phrasebank"} <= set(DATASETS.names())
    assert DATASETS.get("text_csv").modality == "text" and DATASETS.get("phrasebank").needs_path


def test_text_csv_single_file_split(tmp_path: Path) -> None:
    rows = [(*sentence(i), ["a", "b"][i % 2]) for i in range(60)]
    rows[7] = ('He said "hi",\nthen held', "neu", "b")  # quoted, spans lines 9 and 10
    path = write(tmp_path / "t.csv", csv_text(rows, ("text", "label", "region")))
    options = {"groups": ["region"], "max_length": 6}
    task = build_task(DataSpec(name="text_csv", path=str(path), options=options))
    assert task.modality == "text" and task.input_shape == (6,)
    assert task.class_names == ("neg", "neu", "pos")
    assert len(task.test) == 12 and len(task.train) + len(task.val) == 48
    source = file_rows(path)
    check_aligned(task, source)
    # instance ids are start lines: the row after the two-line text starts on line 11
    ids = torch.cat([s.instance_ids() for s in (task.train, task.val, task.test)])
    assert sorted(ids.tolist()) == [*range(2, 10), *range(11, 63)]
    # group attributes follow their rows
    assert task.test.groups is not None
    expected_groups = [source[line]["region"] for line in task.test.instance_ids().tolist()]
    assert task.test.groups["region"].tolist() == expected_groups
    # the vocabulary comes from the training rows (train + validation), never the test rows
    assert task.train.texts is not None and task.val.texts is not None
    assert task.vocabulary == build_vocabulary(task.train.texts + task.val.texts)
    # stratified: each class keeps its share in the test split
    assert np.bincount(task.test.y.numpy()).tolist() == [4, 4, 4]


def test_text_csv_folder_with_test_file_tsv_and_options(tmp_path: Path) -> None:
    train = [sentence(i) for i in range(30)]
    test = [sentence(i) for i in range(100, 112)] + [("a new unseen zebra", "pos")]
    header = ("id", "category", "body")
    write(
        tmp_path / "train.tsv",
        csv_text([(str(i), c, t) for i, (t, c) in enumerate(train)], header, "\t"),
    )
    write(
        tmp_path / "test.tsv",
        csv_text([(str(i), c, t) for i, (t, c) in enumerate(test)], header, "\t"),
    )
    options = {
        "text": "body",
        "label": "category",
        "classes": ["pos", "neu", "neg"],
        "min_count": 1,
    }
    task = build_task(DataSpec(name="text_csv", path=str(tmp_path), options=options))
    assert task.class_names == ("pos", "neu", "neg")
    assert len(task.test) == 13 and len(task.train) + len(task.val) == 30
    assert task.test.texts is not None and task.test.texts[-1] == "a new unseen zebra"
    assert task.test.x[-1, :4].tolist() == [1, 1, 1, 1]  # words never seen in training
    for split in (task.train, task.test):
        assert split.texts is not None
        for text, y in zip(split.texts, split.y.tolist(), strict=True):
            assert task.class_names[y] == {"fell": "neg", "held": "neu", "rose": "pos"}.get(
                text.split()[2], "pos"
            )
    # an explicit test_path wins over the folder's test file; a separate file for train also works
    write(tmp_path / "other.csv", "body,category\nstock rose,pos\nstock fell,neg\n")
    spec = DataSpec(
        name="text_csv",
        path=str(tmp_path / "train.tsv"),
        options={**options, "test_path": str(tmp_path / "other.csv")},
    )
    assert build_task(spec).test.texts == ("stock rose", "stock fell")


def test_text_csv_classes_option_drops_and_counts(tmp_path: Path) -> None:
    rows = [sentence(i) for i in range(30)] + [("odd one", "maybe"), ("no label", "")]
    path = write(tmp_path / "t.csv", csv_text(rows, ("text", "label")) + "\n,\n")
    options = {"classes": ["neg", "neu", "pos"]}
    task = build_task(DataSpec(name="text_csv", path=str(path), options=options))
    steps = {step.step: step for step in task.cleaning}
    assert steps["unknown label"].removed == 1 and steps["unknown label"].detail == "maybe"
    assert steps["missing label"].removed == 1
    assert steps["blank lines"].removed == 2  # the empty line and the line of empty fields
    assert len(task.train) + len(task.val) + len(task.test) == 30


def test_text_csv_reads_latin1_when_told(tmp_path: Path) -> None:
    rows = [sentence(i) for i in range(20)] + [("Café crème rose", "pos")]
    path = write(tmp_path / "t.csv", csv_text(rows, ("text", "label")), encoding="latin-1")
    spec = DataSpec(name="text_csv", path=str(path), options={"encoding": "latin-1"})
    task = build_task(spec)
    texts = task.train.texts + task.val.texts + task.test.texts  # type: ignore[operator]
    assert "Café crème rose" in texts


# --- bad input -----------------------------------------------------------------------------------


def text_csv_error(path: Path, **options: object) -> str:
    with pytest.raises(DataError) as info:
        build_task(DataSpec(name="text_csv", path=str(path), options=options))
    assert info.value.hint and "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("blank", ["", "   ", '"  \t "'])
def test_empty_text_names_file_and_line(tmp_path: Path, blank: str) -> None:
    rows = "".join(f"{t},{c}\n" for t, c in (sentence(i) for i in range(20)))
    path = write(tmp_path / "t.csv", f"text,label\nStock extra rose,pos\n{blank},pos\n" + rows)
    message = text_csv_error(path)
    assert f"'{path}' line 3 has an empty text" in message and "empty_text='drop'" in message
    task = build_task(DataSpec(name="text_csv", path=str(path), options={"empty_text": "drop"}))
    step = next(s for s in task.cleaning if s.step == "empty text")
    assert (step.split, step.removed, step.detail) == ("train", 1, "lines 3")
    assert len(task.train) + len(task.val) + len(task.test) == 21


def test_single_class(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "text,label\n" + "".join(f"w{i},x\n" for i in range(9)))
    message = text_csv_error(path)
    assert "has only one class 'x'; a classifier needs at least two" in message


def test_wrong_encoding_names_the_line(tmp_path: Path) -> None:
    rows = "".join(f"{t},{c}\n" for t, c in (sentence(i) for i in range(20)))
    path = write(tmp_path / "t.csv", "text,label\n" + rows, encoding="utf-8")
    path.write_bytes(path.read_bytes() + "Café au lait,pos\n".encode("latin-1"))
    message = text_csv_error(path)
    assert f"'{path}' line 22 is not valid utf-8 (byte 0xe9)" in message
    assert "data.options.encoding" in message and "latin-1" in message


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"text": "sentence"}, "no text column 'sentence' (columns: text, label, who)"),
        ({"label": "category"}, "no label column 'category' (columns: text, label, who)"),
        ({"groups": ["who", "sex"]}, "no group column(s) sex (columns: text, label, who)"),
    ],
)
def test_missing_columns_name_the_existing_ones(
    tmp_path: Path, options: dict[str, object], expected: str
) -> None:
    path = write(tmp_path / "t.csv", "text,label,who\nstock rose,pos,a\nstock fell,neg,b\n")
    assert expected in text_csv_error(path, **options)


def test_malformed_files(tmp_path: Path) -> None:
    assert "is empty" in text_csv_error(write(tmp_path / "e.csv", " \n\n"))
    assert "header but no rows" in text_csv_error(write(tmp_path / "h.csv", "text,label\n"))
    ragged = write(tmp_path / "r.csv", "text,label\nstock rose,pos\nstock, fell,neg\n")
    assert "line 3 has 3 fields but the header has 2" in text_csv_error(ragged)
    assert "has no train.csv" in text_csv_error(tmp_path)
    rare = write(tmp_path / "rare.csv", "text,label\na,x\nb,y\nc,x\nd,y\ne,x\n")
    assert "no token occurs 2 times" in text_csv_error(rare)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"lable": "y"}, "unknown key 'data.options.lable'; did you mean 'label'"),
        ({"encoding": "klingon"}, "unknown encoding 'klingon'"),
        ({"sep": ";;"}, "one character"),
        ({"max_vocab": 2}, "data.options.max_vocab"),
        ({"classes": ["a", "a"]}, "twice"),
        ({"empty_text": "skip"}, "data.options.empty_text"),
    ],
)
def test_bad_options(tmp_path: Path, options: dict[str, object], match: str) -> None:
    path = write(tmp_path / "t.csv", "text,label\nstock rose,pos\n")
    with pytest.raises(ConfigError, match=re.escape(match)):
        build_task(DataSpec(name="text_csv", path=str(path), options=options))


# --- phrasebank ----------------------------------------------------------------------------------


def phrasebank_lines(n: int) -> list[str]:
    """Lines with an '@' inside the sentence too: the label follows the last one."""
    verbs = ["fell", "held", "rose"]
    return [f"Net sales {verbs[i % 3]} @ {i} % .@{PHRASEBANK_CLASSES[i % 3]}" for i in range(n)]


def test_phrasebank_reads_folder_by_agreement(tmp_path: Path) -> None:
    lines = phrasebank_lines(50)
    lines[4] = "Sales in \x85 Espoo fell .@negative"  # "\x85" is a latin-1 character, no line end
    write(tmp_path / "Sentences_66Agree.txt", "\r\n".join(lines) + "\r\n", encoding="latin-1")
    spec = DataSpec(name="phrasebank", path=str(tmp_path), options={"agreement": 66})
    task = build_task(spec)
    assert task.class_names == ("negative", "neutral", "positive")
    assert len(task.test) == 10 and len(task.train) + len(task.val) == 40
    for split in (task.train, task.val, task.test):
        assert split.texts is not None
        for i, line in enumerate(split.instance_ids().tolist()):
            text, _, label = lines[line - 1].rpartition("@")
            assert split.texts[i] == text.strip()
            assert task.class_names[int(split.y[i])] == label
    assert task.vocabulary == build_vocabulary(task.train.texts + task.val.texts)  # type: ignore[operator]
    # naming the file directly works too, and a contradicting agreement option is an error
    file_spec = DataSpec(name="phrasebank", path=str(tmp_path / "Sentences_66Agree.txt"))
    assert build_task(file_spec).fingerprint() == task.fingerprint()
    with pytest.raises(ConfigError, match="agreement='75'"):
        build_task(file_spec.model_copy(update={"options": {"agreement": "75"}}))
    with pytest.raises(DataError, match="Sentences_50Agree.txt' does not exist"):
        build_task(DataSpec(name="phrasebank", path=str(tmp_path)))


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("Sales rose by 5 %", "line 3 has no '@' before its label"),
        ("Sales rose @ 5 %@great", "line 3 has unknown label 'great'"),
        ("  @neutral", "line 3 has an empty text"),
    ],
)
def test_phrasebank_bad_lines(tmp_path: Path, bad_line: str, expected: str) -> None:
    lines = phrasebank_lines(20)
    lines.insert(2, bad_line)
    path = write(tmp_path / "p.txt", "\n".join(lines), encoding="latin-1")
    with pytest.raises(DataError) as info:
        build_task(DataSpec(name="phrasebank", path=str(path)))
    assert f"'{path}' {expected}" in str(info.value) and info.value.hint


def test_phrasebank_empty_single_class_and_encoding(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is empty"):
        build_task(DataSpec(name="phrasebank", path=str(write(tmp_path / "e.txt", "\r\n"))))
    one = write(tmp_path / "o.txt", "".join(f"s {i}@neutral\n" for i in range(10)))
    with pytest.raises(DataError, match="only one class 'neutral'; a classifier needs"):
        build_task(DataSpec(name="phrasebank", path=str(one)))
    lines = phrasebank_lines(20)
    lines[5] = "Café sales rose .@positive"
    latin = write(tmp_path / "l.txt", "\n".join(lines), encoding="latin-1")
    with pytest.raises(DataError, match=r"line 6 is not valid utf-8.*e\.g\. 'latin-1'"):
        build_task(DataSpec(name="phrasebank", path=str(latin), options={"encoding": "utf-8"}))


# --- real data -----------------------------------------------------------------------------------


def test_banking77_official_split() -> None:
    folder = shared_data("banking77")
    raw = build_text_csv(folder, TextCsvOptions(label="category"))
    assert (len(raw.y_train), len(raw.y_test), len(raw.class_names)) == (10003, 3080, 77)
    assert set(raw.class_names) == set(json.loads((folder / "categories.json").read_text()))
    task = build_task(DataSpec(name="text_csv", path=str(folder), options={"label": "category"}))
    removed = {s.split: s.removed for s in task.cleaning if s.step == "exact duplicate rows"}
    # a few queries repeat with only a leading newline: stripped, they are counted duplicates
    assert len(task.train) + len(task.val) + removed.get("train", 0) == 10003
    assert len(task.test) + removed.get("test", 0) == 3080
    assert task.num_classes == 77 and task.input_shape == (64,)
    check_aligned(task, file_rows(folder / "test.csv"), label="category", test_only=True)


def test_phrasebank_50agree_sizes_and_balance() -> None:
    folder = shared_data("financial-phrasebank")
    task = build_task(DataSpec(name="phrasebank", path=str(folder)))
    lines = (folder / "Sentences_50Agree.txt").read_bytes().decode("latin-1").split("\r\n")[:-1]
    assert len(lines) == 4846
    duplicates = sum(s.removed for s in task.cleaning if s.step == "exact duplicate rows")
    assert 0 < duplicates <= len(lines) - len(set(lines))
    assert len(task.train) + len(task.val) + len(task.test) + duplicates == 4846
    labels = [line.rpartition("@")[2] for line in lines]
    share = np.array([labels.count(c) for c in PHRASEBANK_CLASSES]) / len(labels)
    for split in (task.train, task.val, task.test):
        counts = np.bincount(split.y.numpy(), minlength=3)
        np.testing.assert_allclose(counts / len(split), share, atol=3 / len(split))
        for i in range(0, len(split), 97):
            line = lines[int(split.instance_ids()[i]) - 1]
            assert split.texts is not None and split.texts[i] == line.rpartition("@")[0].strip()
    test_duplicates = sum(
        s.removed for s in task.cleaning if s.step == "exact duplicate rows" and s.split == "test"
    )
    assert len(task.test) + test_duplicates == 970  # ceil(20% of 4846)
