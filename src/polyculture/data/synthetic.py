"""Synthetic tasks for emergence studies: modular addition, multi-digit addition, sparse parity.

Three datasets are registered here, all generated offline from a seed:

* ``modular_addition`` (tabular): every pair ``(a, b)`` with ``0 <= a, b < p``, labelled
  ``(a + b) mod p``; features are the one-hot code of ``a`` followed by that of ``b`` (``2p``
  columns of 0/1, not standardized). A seeded ``train_fraction`` of the ``p**2`` pairs trains,
  every other pair tests; the study's validation split is carved from the training pairs, and
  held-out accuracy over training steps is what shows grokking (Power et al. 2022).
* ``addition`` (text): sums of two ``D``-digit numbers (leading zeros allowed), answered with
  ``D + 1`` digits. Each answer spans ``D + 1`` rows (``answer_length``), one per digit; see
  :func:`addition_tokens` for the token layout, chosen so that a small transformer can learn it.
* ``sparse_parity`` (tabular): ``n_bits`` uniform features in ``{-1, +1}``, labelled by the
  parity of ``k`` hidden bits (Barak et al. 2022, "Hidden progress in deep learning").

Instance ids are stable: ``a * p + b`` for modular addition; ``problem * (D + 1) + position``
for addition, with problems numbered over train then test; the row number of the sample
(train first, then test) for sparse parity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from polyculture.data.builders import RawData, dataset
from polyculture.data.text import PAD_TOKEN, UNKNOWN_TOKEN
from polyculture.errors import DataError

MAX_MODULUS = 256
"""Largest modulus: the feature matrix holds ``2 p**3`` floats (134 MB at 256)."""
MAX_DIGITS = 9
"""Most digits per addend: problem codes ``a * 10**D + b`` must fit in an int64."""
ENUMERATED_BITS = 20
"""Sparse parity with at most this many bits draws codes without replacement; above, it redraws."""
PARITY_CLASSES = ("even", "odd")
"""Class names of sparse parity: ``odd`` when an odd number of the hidden bits are ``-1``."""


# --- modular addition --------------------------------------------------------------------------


class ModularAdditionOptions(BaseModel):
    """Options of ``modular_addition``.

    Attributes
    ----------
    modulus
        ``p``: the task has ``p**2`` pairs and ``p`` classes (need not be prime).
    train_fraction
        Share of the ``p**2`` pairs in the training split (rounded to whole pairs); the rest test.
    split_seed
        Seed of the choice of training pairs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    modulus: int = Field(97, ge=2, le=MAX_MODULUS)
    train_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0, lt=2**32)


@dataset(
    "modular_addition",
    description="(a + b) mod p from one-hot a and b; a seeded share of all p^2 pairs trains "
    "(grokking)",
    modality="tabular",
    options=ModularAdditionOptions,
)
def build_modular_addition(path: Path | None, options: ModularAdditionOptions) -> RawData:
    """Every pair ``(a, b)`` of residues mod ``p``, labelled ``(a + b) mod p``.

    Row ``a * p + b`` has ones in columns ``a`` and ``p + b``. ``round(train_fraction * p**2)``
    pairs, chosen with ``split_seed``, form the training split; the others the test split.

    Raises
    ------
    DataError
        When ``train_fraction`` leaves either split without pairs.

    Examples
    --------
    >>> raw = build_modular_addition(None, ModularAdditionOptions(modulus=5, train_fraction=0.6))
    >>> raw.x_train.shape, raw.x_test.shape, raw.feature_names[:2], raw.feature_names[5]
    ((15, 10), (10, 10), ('a=0', 'a=1'), 'b=0')
    >>> a, b = raw.index_train[0] // 5, raw.index_train[0] % 5
    >>> bool(raw.y_train[0] == (a + b) % 5)
    True
    """
    p = options.modulus
    n_pairs = p * p
    n_train = round(options.train_fraction * n_pairs)
    if not 0 < n_train < n_pairs:
        raise DataError(
            f"train_fraction {options.train_fraction} of {n_pairs} pairs leaves "
            f"{n_train} training and {n_pairs - n_train} test pairs",
            hint="pick a train_fraction that leaves at least one pair on each side",
        )
    pair = np.arange(n_pairs)  # pair id a * p + b
    a, b = pair // p, pair % p
    features = np.zeros((n_pairs, 2 * p), dtype=np.float32)  # (p^2, 2p)
    features[pair, a] = 1.0
    features[pair, p + b] = 1.0
    labels = ((a + b) % p).astype(np.int64)
    chosen = np.random.default_rng(options.split_seed).permutation(n_pairs)
    train_rows, test_rows = np.sort(chosen[:n_train]), np.sort(chosen[n_train:])
    return RawData(
        modality="tabular",
        class_names=tuple(str(r) for r in range(p)),
        x_train=features[train_rows],
        y_train=labels[train_rows],
        x_test=features[test_rows],
        y_test=labels[test_rows],
        index_train=train_rows,
        index_test=test_rows,
        feature_names=tuple(f"a={r}" for r in range(p)) + tuple(f"b={r}" for r in range(p)),
    )


# --- multi-digit addition ----------------------------------------------------------------------


class AdditionOptions(BaseModel):
    """Options of ``addition``.

    Attributes
    ----------
    digits
        ``D``: digits per addend (leading zeros allowed); answers have ``D + 1`` digits.
    train_problems, test_problems
        Distinct problems ``(a, b)`` in each split (no problem is in both); at least two train
        problems, so that a validation problem can be held out.
    seed
        Seed of the problems.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    digits: int = Field(3, ge=1, le=MAX_DIGITS)
    train_problems: int = Field(2000, ge=2)
    test_problems: int = Field(1000, ge=1)
    seed: int = Field(0, ge=0, lt=2**32)

    @model_validator(mode="after")
    def _enough_problems(self) -> Self:
        available = 10 ** (2 * self.digits)
        wanted = self.train_problems + self.test_problems
        if wanted > available:
            raise ValueError(
                f"{self.train_problems} train + {self.test_problems} test problems exceed the "
                f"{available} distinct problems with digits={self.digits}; ask for fewer "
                "problems or more digits"
            )
        return self


def addition_vocabulary(digits: int) -> tuple[str, ...]:
    """Tokens of the ``addition`` task, by id: padding, unknown, digit pairs, then queries.

    Examples
    --------
    >>> vocab = addition_vocabulary(2)
    >>> len(vocab), vocab[:3], vocab[-3:]
    (105, ('<pad>', '<unk>', '00'), ('q0', 'q1', 'q2'))
    """
    pairs = tuple(f"{a}{b}" for a in range(10) for b in range(10))
    queries = tuple(f"q{j}" for j in range(digits + 1))
    return (PAD_TOKEN, UNKNOWN_TOKEN, *pairs, *queries)


def addition_tokens(a: int, b: int, position: int, digits: int) -> list[str]:
    """The tokens asking for digit ``position`` of ``a + b`` (0 = most significant).

    The layout: the query token ``q<position>``, then one token per column, least significant
    column first, each the two digits of that column (``a``'s then ``b``'s) as one word. A
    column token carries both addends' digits, so a column's sum is one embedding lookup away
    and what a model has to learn is which column the query asks for and the carry from the
    columns below it. The query sits at a fixed position, and every row of a problem has the
    same ``D + 1`` tokens (no padding). A layout of single digits (``q a0 b0 a1 b1 ...``) was
    tried and dropped: one-block zoo transformers up to width 64 did not learn it (test digit
    accuracy at most 0.62), two blocks learned it at about twice the cost.

    Examples
    --------
    >>> addition_tokens(47, 85, 0, 2)  # 47 + 85 = 132: ask for the leading "1"
    ['q0', '75', '48']
    """
    columns = [f"{a // 10**s % 10}{b // 10**s % 10}" for s in range(digits)]
    return [f"q{position}", *columns]


def _addition_rows(
    a: np.ndarray, b: np.ndarray, first_problem: int, digits: int, vocabulary: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Token ids ``(n * (D + 1), D + 1)``, digit labels, instance ids and texts of problems."""
    length = digits + 1
    ids = {token: i for i, token in enumerate(vocabulary)}
    x, y, index, texts = [], [], [], []
    for problem, (left, right) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        answer = f"{left + right:0{length}d}"
        for position in range(length):
            tokens = addition_tokens(left, right, position, digits)
            x.append([ids[token] for token in tokens])
            y.append(int(answer[position]))
            index.append((first_problem + problem) * length + position)
            texts.append(" ".join(tokens))
    return (
        np.array(x, dtype=np.int64).reshape(-1, length),  # (n * (D + 1), D + 1)
        np.array(y, dtype=np.int64),
        np.array(index, dtype=np.int64),
        tuple(texts),
    )


@dataset(
    "addition",
    description="D-digit addition a + b, one row per answer digit (answer_length D + 1); "
    "text tokens: a query, then digit-pair columns",
    modality="text",
    options=AdditionOptions,
)
def build_addition(path: Path | None, options: AdditionOptions) -> RawData:
    """Distinct random ``D``-digit problems ``a + b``, one row per digit of the answer.

    Answers are written with ``D + 1`` digits (a leading ``0`` when there is no carry out), so
    every problem spans ``D + 1`` rows: row ``problem * (D + 1) + j`` asks for digit ``j`` (0 =
    most significant) and its label is that digit (classes ``"0"`` to ``"9"``). Problems are
    drawn without replacement from all ``10**(2D)`` pairs with ``seed``; the first
    ``train_problems`` train, the rest test. Inputs follow :func:`addition_tokens`.

    Examples
    --------
    >>> raw = build_addition(None, AdditionOptions(digits=2, train_problems=4, test_problems=3))
    >>> raw.x_train.shape, raw.x_test.shape, raw.answer_length
    ((12, 3), (9, 3), 3)
    >>> raw.texts_train[0], raw.y_train[:3].tolist()  # columns 72, 05: 07 + 52 = 059
    ('q0 72 05', [0, 5, 9])
    """
    digits = options.digits
    n_problems = options.train_problems + options.test_problems
    codes = np.random.default_rng(options.seed).choice(
        10 ** (2 * digits), size=n_problems, replace=False
    )  # (problems,): a * 10**D + b, all distinct
    a, b = codes // 10**digits, codes % 10**digits
    vocabulary = addition_vocabulary(digits)
    split = options.train_problems
    x_train, y_train, index_train, texts_train = _addition_rows(
        a[:split], b[:split], 0, digits, vocabulary
    )
    x_test, y_test, index_test, texts_test = _addition_rows(
        a[split:], b[split:], split, digits, vocabulary
    )
    return RawData(
        modality="text",
        class_names=tuple(str(d) for d in range(10)),
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        index_train=index_train,
        index_test=index_test,
        texts_train=texts_train,
        texts_test=texts_test,
        vocabulary=vocabulary,
        answer_length=digits + 1,
    )


# --- sparse parity -----------------------------------------------------------------------------


class SparseParityOptions(BaseModel):
    """Options of ``sparse_parity``.

    Attributes
    ----------
    n_bits
        Features per example, each uniform in ``{-1, +1}``.
    k
        Number of hidden bits whose parity is the label.
    train_size, test_size
        Examples per split; all ``train_size + test_size`` examples are distinct (at most all
        ``2**n_bits`` vectors up to 20 bits, half of them above).
    seed
        Seed of the hidden bits and of the examples.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_bits: int = Field(30, ge=1, le=4096)
    k: int = Field(3, ge=1)
    train_size: int = Field(5000, ge=2)
    test_size: int = Field(2000, ge=1)
    seed: int = Field(0, ge=0, lt=2**32)

    @model_validator(mode="after")
    def _sizes_fit(self) -> Self:
        if self.k > self.n_bits:
            raise ValueError(
                f"k={self.k} hidden bits cannot be chosen from n_bits={self.n_bits}; "
                "use k <= n_bits"
            )
        wanted = self.train_size + self.test_size
        if self.n_bits < 63 and wanted > _max_examples(self.n_bits):
            raise ValueError(
                f"{wanted} distinct examples requested but n_bits={self.n_bits} allows only "
                f"{_max_examples(self.n_bits)}; use more bits or fewer examples"
            )
        return self


def _max_examples(n_bits: int) -> int:
    """Most distinct examples drawn from ``n_bits`` bits: all of them where they are enumerated,
    half of them where repeats are redrawn (so that redrawing ends quickly)."""
    return 2**n_bits if n_bits <= ENUMERATED_BITS else 2 ** (n_bits - 1)


def parity_bits(n_bits: int, k: int, seed: int) -> np.ndarray:
    """The ``k`` hidden bits (sorted feature positions) of ``sparse_parity`` with ``seed``.

    Examples
    --------
    >>> parity_bits(30, 3, 0).tolist() == sorted(parity_bits(30, 3, 0).tolist())
    True
    """
    rng = np.random.default_rng([seed, 1])  # a stream of its own: examples use [seed, 0]
    return np.sort(rng.choice(n_bits, size=k, replace=False))


def _distinct_sign_rows(n_bits: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct rows of ``n_bits`` values in ``{-1, +1}`` ``(count, n_bits)``."""
    if n_bits <= ENUMERATED_BITS:  # small spaces: draw codes without replacement
        codes = rng.choice(2**n_bits, size=count, replace=False)
        bits = (codes[:, None] >> np.arange(n_bits)) & 1  # (count, n_bits)
    else:  # large spaces: repeats are rare, so redraw until enough distinct rows
        bits = rng.integers(0, 2, size=(count, n_bits), dtype=np.int8)
        while True:
            _, first = np.unique(bits, axis=0, return_index=True)
            bits = bits[np.sort(first)]
            if len(bits) >= count:
                break
            extra = rng.integers(0, 2, size=(count - len(bits), n_bits), dtype=np.int8)
            bits = np.concatenate([bits, extra])
        bits = bits[:count]
    return (1 - 2 * bits).astype(np.float32)  # bit 1 -> -1


@dataset(
    "sparse_parity",
    description="parity of k hidden bits among n_bits uniform +-1 features (hidden progress)",
    modality="tabular",
    options=SparseParityOptions,
)
def build_sparse_parity(path: Path | None, options: SparseParityOptions) -> RawData:
    """Distinct uniform ``{-1, +1}`` vectors labelled by the parity of ``k`` hidden bits.

    The hidden bits are :func:`parity_bits` (a seeded choice, not the first ``k``, so nothing
    about a feature's position gives them away). The label is ``odd`` (1) when the product of
    the hidden features is ``-1``, i.e. an odd number of them are ``-1``, else ``even`` (0).

    Examples
    --------
    >>> options = SparseParityOptions(n_bits=8, k=2, train_size=6, test_size=4)
    >>> raw = build_sparse_parity(None, options)
    >>> raw.x_train.shape, raw.class_names
    ((6, 8), ('even', 'odd'))
    >>> hidden = parity_bits(8, 2, 0)
    >>> bool((raw.y_train == (raw.x_train[:, hidden].prod(1) < 0)).all())
    True
    """
    rng = np.random.default_rng([options.seed, 0])
    n = options.train_size + options.test_size
    x = _distinct_sign_rows(options.n_bits, n, rng)  # (n, n_bits)
    hidden = parity_bits(options.n_bits, options.k, options.seed)
    y = (x[:, hidden].prod(axis=1) < 0).astype(np.int64)
    split = options.train_size
    return RawData(
        modality="tabular",
        class_names=PARITY_CLASSES,
        x_train=x[:split],
        y_train=y[:split],
        x_test=x[split:],
        y_test=y[split:],
        index_train=np.arange(split),
        index_test=np.arange(split, n),
        feature_names=tuple(f"x{i}" for i in range(options.n_bits)),
    )
