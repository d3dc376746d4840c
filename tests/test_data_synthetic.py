"""Synthetic datasets: modular addition, multi-digit addition and sparse parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from polyculture.data import DATASETS, DataSpec, Task, build_task
from polyculture.data.synthetic import (
    AdditionOptions,
    ModularAdditionOptions,
    SparseParityOptions,
    _distinct_sign_rows,
    addition_tokens,
    addition_vocabulary,
    build_addition,
    build_modular_addition,
    build_sparse_parity,
    parity_bits,
)
from polyculture.data.text import encode_texts
from polyculture.errors import ConfigError, DataError
from polyculture.zoo import ModelSpec, create_model


def test_synthetic_datasets_are_registered() -> None:
    for name, modality in [
        ("modular_addition", "tabular"),
        ("addition", "text"),
        ("sparse_parity", "tabular"),
    ]:
        assert name in DATASETS
        assert DATASETS.get(name).modality == modality
        assert not DATASETS.get(name).needs_path


# --- modular addition --------------------------------------------------------------------------


def test_modular_addition_labels_features_and_ids() -> None:
    p = 11
    raw = build_modular_addition(None, ModularAdditionOptions(modulus=p, train_fraction=0.3))
    assert raw.class_names == tuple(str(r) for r in range(p))
    assert raw.feature_names[p - 1] == f"a={p - 1}" and raw.feature_names[p] == "b=0"
    for x, y, index in [
        (raw.x_train, raw.y_train, raw.index_train),
        (raw.x_test, raw.y_test, raw.index_test),
    ]:
        assert x.shape[1] == 2 * p and set(np.unique(x).tolist()) == {0.0, 1.0}
        assert (x.sum(axis=1) == 2).all()
        for row, label, pair in zip(x, y.tolist(), index.tolist(), strict=True):
            a, b = int(np.flatnonzero(row[:p])[0]), int(np.flatnonzero(row[p:])[0])
            assert pair == a * p + b  # instance id decodes the pair
            assert label == (a + b) % p  # checked with Python ints


def test_modular_addition_splits_are_disjoint_and_cover_every_pair() -> None:
    p = 13
    raw = build_modular_addition(None, ModularAdditionOptions(modulus=p, train_fraction=0.55))
    assert raw.index_train is not None and raw.index_test is not None
    assert len(raw.index_train) == round(0.55 * p * p)
    assert not set(raw.index_train.tolist()) & set(raw.index_test.tolist())
    assert sorted([*raw.index_train.tolist(), *raw.index_test.tolist()]) == list(range(p * p))

    task = build_task(
        DataSpec(name="modular_addition", options={"modulus": p, "train_fraction": 0.55})
    )
    ids = [set(split.instance_ids().tolist()) for split in (task.train, task.val, task.test)]
    assert ids[0].isdisjoint(ids[1]) and ids[0].isdisjoint(ids[2]) and ids[1].isdisjoint(ids[2])
    assert set.union(*ids) == set(range(p * p))
    assert task.cleaning == ()
    assert set(task.shifted) == {"test_noise"}  # the tabular default


def test_modular_addition_is_deterministic_and_seeded() -> None:
    options = ModularAdditionOptions(modulus=7, train_fraction=0.5, split_seed=3)
    first, again = build_modular_addition(None, options), build_modular_addition(None, options)
    for name in ("x_train", "y_train", "x_test", "y_test", "index_train", "index_test"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    other = build_modular_addition(None, options.model_copy(update={"split_seed": 4}))
    assert not np.array_equal(first.index_train, other.index_train)


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"modulus": 5, "train_fraction": 0.0}, ConfigError, "train_fraction"),
        ({"modulus": 5, "train_fraction": 1.0}, ConfigError, "train_fraction"),
        ({"modulus": 1}, ConfigError, "modulus"),
        ({"modulus": 300}, ConfigError, "modulus"),
        ({"modulus": 5, "p": 7}, ConfigError, "unknown key 'data.options.p'"),
        ({"modulus": 2, "train_fraction": 0.1}, DataError, "0 training"),
        ({"modulus": 2, "train_fraction": 0.9}, DataError, "0 test"),
        ({"modulus": 10, "train_fraction": 0.03}, DataError, "only in the test split"),
    ],
)
def test_modular_addition_bad_options(
    options: dict[str, object], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        build_task(DataSpec(name="modular_addition", options=options))


# --- multi-digit addition ----------------------------------------------------------------------


def _parse(text: str, digits: int) -> tuple[int, int, int]:
    """(a, b, position) back from a row's text, independently of the builder."""
    query, *columns = text.split()
    assert query.startswith("q") and len(columns) == digits
    a = sum(int(column[0]) * 10**s for s, column in enumerate(columns))
    b = sum(int(column[1]) * 10**s for s, column in enumerate(columns))
    return a, b, int(query[1:])


def test_addition_labels_match_python_sums() -> None:
    digits = 3
    options = AdditionOptions(digits=digits, train_problems=60, test_problems=40, seed=5)
    raw = build_addition(None, options)
    length = digits + 1
    assert raw.modality == "text" and raw.answer_length == length
    assert raw.class_names == tuple("0123456789")
    assert raw.vocabulary == addition_vocabulary(digits)
    assert raw.vocabulary[:2] == ("<pad>", "<unk>")
    for x, y, index, texts in [
        (raw.x_train, raw.y_train, raw.index_train, raw.texts_train),
        (raw.x_test, raw.y_test, raw.index_test, raw.texts_test),
    ]:
        assert texts is not None and index is not None
        assert x.shape == (len(texts), length) and x.dtype == np.int64
        # The ids are exactly what the word tokenizer makes of the texts.
        np.testing.assert_array_equal(x, encode_texts(texts, raw.vocabulary, length))
        for text, label, row_id in zip(texts, y.tolist(), index.tolist(), strict=True):
            a, b, position = _parse(text, digits)
            assert 0 <= a < 10**digits and 0 <= b < 10**digits
            assert row_id % length == position  # index layout: position = id % L
            answer = str(a + b).zfill(length)
            assert raw.class_names[label] == answer[position]


def test_addition_problems_are_distinct_whole_and_split_by_problem() -> None:
    digits = 2
    task = build_task(
        DataSpec(
            name="addition",
            options={"digits": digits, "train_problems": 200, "test_problems": 100},
            val_fraction=0.2,
        )
    )
    length = digits + 1
    assert task.answer_length == length and task.cleaning == ()
    problems: dict[str, dict[int, tuple[int, int]]] = {}
    for name, split in (("train", task.train), ("val", task.val), ("test", task.test)):
        assert split.texts is not None
        seen: dict[int, set[int]] = {}
        pairs: dict[int, tuple[int, int]] = {}
        for text, row_id in zip(split.texts, split.instance_ids().tolist(), strict=True):
            a, b, position = _parse(text, digits)
            seen.setdefault(row_id // length, set()).add(position)
            assert pairs.setdefault(row_id // length, (a, b)) == (a, b)  # one problem per id
        assert all(positions == set(range(length)) for positions in seen.values())  # whole
        problems[name] = pairs
    assert len(problems["train"]) + len(problems["val"]) == 200 and len(problems["test"]) == 100
    ids = [set(p) for p in problems.values()]
    pairs_by_split = [set(p.values()) for p in problems.values()]
    for i in range(3):
        for j in range(i + 1, 3):
            assert ids[i].isdisjoint(ids[j]) and pairs_by_split[i].isdisjoint(pairs_by_split[j])
    assert len(set().union(*pairs_by_split)) == 300  # no problem repeats


def test_addition_is_deterministic_and_seeded() -> None:
    options = AdditionOptions(digits=2, train_problems=30, test_problems=10, seed=1)
    first, again = build_addition(None, options), build_addition(None, options)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(first.y_test, again.y_test)
    assert first.texts_test == again.texts_test
    other = build_addition(None, options.model_copy(update={"seed": 2}))
    assert first.texts_train != other.texts_train


@settings(max_examples=60, deadline=None)
@given(
    digits=st.integers(1, 9),
    data=st.data(),
)
def test_addition_tokens_round_trip(digits: int, data: st.DataObject) -> None:
    a = data.draw(st.integers(0, 10**digits - 1))
    b = data.draw(st.integers(0, 10**digits - 1))
    position = data.draw(st.integers(0, digits))
    tokens = addition_tokens(a, b, position, digits)
    assert set(tokens) <= set(addition_vocabulary(digits)[2:])
    assert _parse(" ".join(tokens), digits) == (a, b, position)


def test_addition_runs_through_a_zoo_transformer() -> None:
    task = build_task(
        DataSpec(name="addition", options={"train_problems": 20, "test_problems": 5, "digits": 2})
    )
    torch.manual_seed(0)
    model = create_model(
        ModelSpec(family="transformer", params={"width": 8, "depth": 1, "heads": 2}),
        task.input_shape,
        task.num_classes,
        task.modality,
        vocab_size=len(task.vocabulary),
    )
    assert model(task.test.x).shape == (len(task.test), 10)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"digits": 1, "train_problems": 90, "test_problems": 11}, "exceed the 100 distinct"),
        ({"digits": 0}, "digits"),
        ({"digits": 10}, "digits"),
        ({"train_problems": 1}, "train_problems"),
        ({"test_problems": 0}, "test_problems"),
        ({"digit": 3}, "did you mean 'digits'"),
    ],
)
def test_addition_bad_options(options: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        build_task(DataSpec(name="addition", options=options))


# --- sparse parity -----------------------------------------------------------------------------


def _parity_task(**options: int) -> Task:
    return build_task(DataSpec(name="sparse_parity", options=options, shifts={}))


@pytest.mark.parametrize("n_bits", [6, 40])  # the enumerating and the redrawing sampler
def test_sparse_parity_labels_against_a_count_of_minus_ones(n_bits: int) -> None:
    options = SparseParityOptions(n_bits=n_bits, k=3, train_size=40, test_size=20, seed=7)
    raw = build_sparse_parity(None, options)
    hidden = parity_bits(n_bits, 3, 7)
    assert raw.class_names == ("even", "odd")
    for x, y in [(raw.x_train, raw.y_train), (raw.x_test, raw.y_test)]:
        assert set(np.unique(x).tolist()) <= {-1.0, 1.0} and x.shape[1] == n_bits
        for row, label in zip(x.tolist(), y.tolist(), strict=True):
            minus_ones = sum(1 for bit in hidden.tolist() if row[bit] == -1.0)
            assert label == minus_ones % 2


def test_sparse_parity_rows_are_distinct_across_splits() -> None:
    task = _parity_task(n_bits=4, k=2, train_size=12, test_size=4)  # all 16 vectors
    rows = torch.cat([task.train.x, task.val.x, task.test.x])
    assert len({tuple(r) for r in rows.tolist()}) == 16
    assert task.cleaning == ()
    big = build_sparse_parity(None, SparseParityOptions(n_bits=30, train_size=300, test_size=100))
    both = np.concatenate([big.x_train, big.x_test])
    assert len(np.unique(both, axis=0)) == 400


def test_distinct_rows_redraw_repeats() -> None:
    # 2**21 codes and 6000 draws: the first draw repeats some rows, which are redrawn.
    first_draw = np.random.default_rng(0).integers(0, 2, size=(6000, 21), dtype=np.int8)
    assert len(np.unique(first_draw, axis=0)) < 6000
    rows = _distinct_sign_rows(21, 6000, np.random.default_rng(0))
    assert rows.shape == (6000, 21) and len(np.unique(rows, axis=0)) == 6000


def test_parity_bits_are_seeded_sorted_and_in_range() -> None:
    bits = parity_bits(50, 5, 3)
    assert bits.tolist() == sorted(set(bits.tolist())) and len(bits) == 5
    assert bits.min() >= 0 and bits.max() < 50
    np.testing.assert_array_equal(bits, parity_bits(50, 5, 3))
    assert any(not np.array_equal(bits, parity_bits(50, 5, seed)) for seed in range(4, 8))


def test_sparse_parity_is_deterministic() -> None:
    options = SparseParityOptions(n_bits=25, k=3, train_size=50, test_size=10, seed=2)
    first, again = build_sparse_parity(None, options), build_sparse_parity(None, options)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(first.y_test, again.y_test)
    other = build_sparse_parity(None, options.model_copy(update={"seed": 3}))
    assert not np.array_equal(first.x_train, other.x_train)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"n_bits": 5, "k": 6}, "k=6 hidden bits cannot be chosen from n_bits=5"),
        ({"n_bits": 4, "train_size": 10, "test_size": 7}, "allows only 16"),
        ({"n_bits": 21, "train_size": 2**20, "test_size": 1}, "allows only 1048576"),
        ({"k": 0}, "k"),
        ({"n_bits": 0}, "n_bits"),
        ({"train_size": 1}, "train_size"),
    ],
)
def test_sparse_parity_bad_options(options: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        build_task(DataSpec(name="sparse_parity", options=options))
