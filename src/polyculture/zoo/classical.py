"""Classical (scikit-learn) families: ``logreg``, ``random_forest``, ``hist_gbm``, ``knn`` and
``tfidf_logreg``.

All are one wrapper, :class:`SklearnModel`, over a scikit-learn estimator. Inputs of any
modality are flattened to ``(n, d)``. Probabilities always have one column per class of the task,
in class-index order, even when a class is absent from the training labels (its column is 0).

``tfidf_logreg`` is the classical text baseline: the token ids of each text (right-padded with
``PAD_ID``) become counts of their n-grams (:class:`NgramCounts`, unigrams and bigrams of
consecutive tokens by default), weighted by sublinear TF-IDF, then a logistic regression.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from pydantic import Field, PositiveInt
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from polyculture.data.task import PAD_ID, UNKNOWN_ID, Modality
from polyculture.errors import ConfigError, DataError
from polyculture.zoo.base import ClassicalModel, Knobs, family
from polyculture.zoo.common import StableKnobs, check_input_shape

#: How far below a row's smallest score an absent class's logit is put (softmax weight ~2e-9).
ABSENT_CLASS_MARGIN = 20.0


def _flat(x: Any) -> np.ndarray:
    """Inputs ``(n, *input_shape)`` (numpy or torch) as a float array ``(n, d)``."""
    arr = np.asarray(x, dtype=np.float64)
    return arr.reshape(arr.shape[0], -1)


def _n_logreg(est: Any) -> int:
    """Coefficients plus intercepts of the final logistic regression."""
    lr = est[-1]
    return int(lr.coef_.size + lr.intercept_.size)


def _n_forest(est: Any) -> int:
    """Total number of nodes over all trees."""
    return int(sum(tree.tree_.node_count for tree in est.estimators_))


class SklearnModel(ClassicalModel):
    """A scikit-learn classifier behind the :class:`ClassicalModel` interface.

    Parameters
    ----------
    make_estimator
        Returns a fresh, unfitted estimator (a classifier or a pipeline ending with one).
    num_classes
        Number of classes of the task.
    count
        Number of learned values of the fitted estimator; ``None`` counts stored training values
        (``n * d``, for instance-based models such as k-NN).
    has_logits
        Whether the estimator has a ``decision_function`` to expose as ``"logits"``.
    min_samples
        Fewest training examples the estimator can use (``k`` for k-NN).

    Examples
    --------
    >>> model = SklearnModel(lambda: make_pipeline(StandardScaler(), LogisticRegression()), 3)
    >>> x = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> model.fit(x, np.array([0, 0, 2, 2]), seed=0).predict_proba(x).shape
    (4, 3)
    """

    def __init__(
        self,
        make_estimator: Callable[[], Any],
        num_classes: int,
        count: Callable[[Any], int] | None = None,
        has_logits: bool = False,
        min_samples: int = 1,
    ) -> None:
        self.make_estimator = make_estimator
        self.num_classes = num_classes
        self.count = count
        self.has_logits = has_logits
        self.min_samples = min_samples
        self.estimator: Any = None
        self.classes_: np.ndarray = np.zeros(0, dtype=np.int64)
        self._n_train_values = 0

    def fit(self, x: Any, y: Any, seed: int) -> SklearnModel:
        """Fit a fresh estimator on ``x`` ``(n, ...)`` and class indices ``y`` ``(n,)``.

        Raises
        ------
        DataError
            Labels outside ``0..num_classes-1``, fewer than two classes present, or fewer
            than ``min_samples`` examples.
        """
        xf = _flat(x)  # (n, d)
        yi = np.asarray(y).astype(np.int64).reshape(-1)  # (n,)
        if yi.size and (yi.min() < 0 or yi.max() >= self.num_classes):
            raise DataError(
                f"class labels must lie in 0..{self.num_classes - 1}, got {yi.min()}..{yi.max()}",
                hint="check the task's class names and labels",
            )
        if np.unique(yi).size < 2:
            raise DataError(
                "cannot fit a classifier on fewer than two classes",
                hint="use a larger training split",
            )
        if yi.size < self.min_samples:
            raise DataError(
                f"this model needs at least {self.min_samples} training examples, got {yi.size}",
                hint="use a larger training split or a smaller k",
            )
        est = self.make_estimator()
        # Seed every random_state (also inside pipelines) so that a run is reproducible.
        seeded = {k: seed for k in est.get_params() if k.split("__")[-1] == "random_state"}
        est.set_params(**seeded)
        with warnings.catch_warnings():
            # max_iter is a knob; hitting it is a choice, not something to print per run.
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(xf, yi)
        self.estimator = est
        self.classes_ = np.asarray(est.classes_, dtype=np.int64)
        self._n_train_values = xf.size
        return self

    def _fitted(self) -> Any:
        if self.estimator is None:
            raise RuntimeError("call fit() before predicting")
        return self.estimator

    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities ``(n, num_classes)``; classes absent in training get 0."""
        present = self._fitted().predict_proba(_flat(x))  # (n, classes seen in fit)
        proba = np.zeros((present.shape[0], self.num_classes))  # (n, num_classes)
        proba[:, self.classes_] = present
        return proba

    def _logits(self, x: np.ndarray) -> np.ndarray:
        """Decision scores ``(n, num_classes)`` whose softmax is ``predict_proba``."""
        scores = np.asarray(self._fitted().decision_function(x), dtype=np.float64)
        if scores.ndim == 1:
            # Binary problems give one score d with p(second class) = sigmoid(d);
            # softmax([-d/2, d/2]) is the same probability.
            scores = np.stack([-scores / 2, scores / 2], axis=1)  # (n, 2)
        # Absent classes get a finite, very low score: -inf would poison later arithmetic.
        floor = scores.min(axis=1, keepdims=True) - ABSENT_CLASS_MARGIN  # (n, 1)
        logits = np.repeat(floor, self.num_classes, axis=1)  # (n, num_classes)
        logits[:, self.classes_] = scores
        return logits

    def representations(self, x: Any) -> dict[str, np.ndarray]:
        """``{"logits", "proba"}`` for models with decision scores, else ``{"proba"}``."""
        xf = _flat(x)
        reps: dict[str, np.ndarray] = {}
        if self.has_logits:
            reps["logits"] = self._logits(xf)
        reps["proba"] = self.predict_proba(xf)
        return reps

    @property
    def n_parameters(self) -> int:
        """Learned values of the fitted estimator (0 before :meth:`fit`)."""
        if self.estimator is None:
            return 0
        if self.count is None:
            return self._n_train_values
        return self.count(self.estimator)


class LogRegKnobs(StableKnobs):
    """Knobs of ``logreg``: inverse regularisation strength ``C``, ``max_iter``, and whether to
    ``standardize`` features first (turn it off for features that already share one scale, such
    as unit-norm sentence embeddings, where standardizing inflates noise dimensions).
    """

    added_knobs: ClassVar[tuple[str, ...]] = ("standardize",)

    C: float = Field(1.0, gt=0.0, description="inverse L2 regularisation strength")
    max_iter: PositiveInt = Field(1000, description="maximum solver iterations")
    standardize: bool = Field(True, description="standardize each feature before fitting")


class RandomForestKnobs(Knobs):
    """Knobs of ``random_forest``."""

    n_estimators: PositiveInt = Field(100, description="number of trees")
    max_depth: PositiveInt | None = Field(None, description="maximum tree depth (None: unlimited)")
    min_samples_leaf: PositiveInt = Field(1, description="minimum samples per leaf")


def _n_boosted(est: Any) -> int:
    """Total number of nodes over all boosted trees (one tree per class and iteration)."""
    return int(sum(tree.nodes.size for trees in est._predictors for tree in trees))


class HistGBMKnobs(Knobs):
    """Knobs of ``hist_gbm`` (histogram gradient boosting, as LightGBM does it)."""

    max_iter: PositiveInt = Field(100, description="boosting iterations (trees per class)")
    learning_rate: float = Field(0.1, gt=0.0, le=1.0, description="shrinkage of each tree")
    max_leaf_nodes: PositiveInt = Field(31, ge=2, description="leaves per tree")
    min_samples_leaf: PositiveInt = Field(20, description="minimum samples per leaf")
    l2_regularization: float = Field(0.0, ge=0.0, description="L2 penalty on leaf values")


class KNNKnobs(Knobs):
    """Knobs of ``knn``: the number of neighbours ``k``."""

    k: PositiveInt = Field(5, description="number of neighbours")


@family(
    "logreg",
    kind="sklearn",
    modalities=("sequence", "image", "tabular"),
    knobs=LogRegKnobs,
    description="standardise (unless standardize=false), then multinomial logistic regression "
    "(scikit-learn)",
)
def build_logreg(
    knobs: LogRegKnobs, input_shape: tuple[int, ...], num_classes: int, modality: Modality
) -> SklearnModel:
    """Build a logistic-regression :class:`SklearnModel`."""
    check_input_shape("logreg", input_shape, modality)

    def make() -> Pipeline:
        steps = [StandardScaler()] if knobs.standardize else []
        return make_pipeline(*steps, LogisticRegression(C=knobs.C, max_iter=knobs.max_iter))

    return SklearnModel(make, num_classes, count=_n_logreg, has_logits=True)


@family(
    "random_forest",
    kind="sklearn",
    modalities=("sequence", "image", "tabular"),
    knobs=RandomForestKnobs,
    description="random forest of decision trees (scikit-learn)",
)
def build_random_forest(
    knobs: RandomForestKnobs, input_shape: tuple[int, ...], num_classes: int, modality: Modality
) -> SklearnModel:
    """Build a random-forest :class:`SklearnModel` (seeded by ``fit``)."""
    check_input_shape("random_forest", input_shape, modality)

    def make() -> ClassifierMixin:
        return RandomForestClassifier(
            n_estimators=knobs.n_estimators,
            max_depth=knobs.max_depth,
            min_samples_leaf=knobs.min_samples_leaf,
            n_jobs=1,  # parallelism belongs to the run scheduler, not to one model
        )

    return SklearnModel(make, num_classes, count=_n_forest)


@family(
    "hist_gbm",
    kind="sklearn",
    modalities=("sequence", "image", "tabular"),
    knobs=HistGBMKnobs,
    description="histogram gradient boosting of decision trees (scikit-learn)",
)
def build_hist_gbm(
    knobs: HistGBMKnobs, input_shape: tuple[int, ...], num_classes: int, modality: Modality
) -> SklearnModel:
    """Build a histogram-gradient-boosting :class:`SklearnModel` (seeded by ``fit``).

    Examples
    --------
    >>> model = build_hist_gbm(HistGBMKnobs(max_iter=5), (1,), 2, "tabular")
    >>> x = np.array([[0.0], [1.0], [2.0], [3.0]] * 10)
    >>> model.fit(x, np.array([0, 0, 1, 1] * 10), seed=0).predict_proba(x[:4]).argmax(1).tolist()
    [0, 0, 1, 1]
    """
    check_input_shape("hist_gbm", input_shape, modality)

    def make() -> ClassifierMixin:
        return HistGradientBoostingClassifier(
            max_iter=knobs.max_iter,
            learning_rate=knobs.learning_rate,
            max_leaf_nodes=knobs.max_leaf_nodes,
            min_samples_leaf=knobs.min_samples_leaf,
            l2_regularization=knobs.l2_regularization,
            # No early stopping: its validation split would make max_iter a moving target.
            early_stopping=False,
        )

    return SklearnModel(make, num_classes, count=_n_boosted)


@family(
    "knn",
    kind="sklearn",
    modalities=("sequence", "image", "tabular"),
    knobs=KNNKnobs,
    description="standardise, then k-nearest-neighbours vote (scikit-learn)",
)
def build_knn(
    knobs: KNNKnobs, input_shape: tuple[int, ...], num_classes: int, modality: Modality
) -> SklearnModel:
    """Build a k-NN :class:`SklearnModel`; its parameters are the stored training values."""
    check_input_shape("knn", input_shape, modality)

    def make() -> Pipeline:
        return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=knobs.k))

    return SklearnModel(make, num_classes, count=None, min_samples=knobs.k)


#: Longest n-gram ``tfidf_logreg`` counts: an n-gram is packed into one int64 key (base vocab).
MAX_NGRAM = 3


class NgramCounts(TransformerMixin, BaseEstimator):
    """Token ids ``(n, L)`` to a sparse document-term matrix of n-gram counts.

    Token ids are right-padded with ``PAD_ID``; n-grams run over consecutive non-padding ids
    (an n-gram never spans padding). Columns are the n-grams seen by :meth:`fit`, unigrams
    first; n-grams never seen in training are dropped at :meth:`transform`, like scikit-learn's
    ``CountVectorizer`` does with unseen words.

    Parameters
    ----------
    ngram_max
        Longest n-gram counted (1: unigrams only), at most :data:`MAX_NGRAM`.
    vocab_size
        Number of token ids; ``0`` takes the largest id seen in training plus one. Ids at or
        above it are read as ``UNKNOWN_ID``.
    min_df
        Keep only n-grams that occur in at least this many training texts.

    Examples
    --------
    >>> ids = np.array([[5, 6, 5, 0], [6, 5, 0, 0]])
    >>> counts = NgramCounts(ngram_max=2).fit_transform(ids)
    >>> counts.shape, counts.toarray()[0].tolist()
    ((2, 4), [2.0, 1.0, 1.0, 1.0])
    """

    def __init__(self, ngram_max: int = 2, vocab_size: int = 0, min_df: int = 1) -> None:
        self.ngram_max = ngram_max
        self.vocab_size = vocab_size
        self.min_df = min_df

    def _keys(self, x: Any, base: int) -> tuple[np.ndarray, np.ndarray]:
        """Row index and int64 key of every n-gram occurrence in ``x`` (ids ``(n, L)``)."""
        ids = np.asarray(x).astype(np.int64)  # (n, L); float ids from _flat are integral
        ids = ids.reshape(ids.shape[0], -1)
        ids = np.where(ids >= base, UNKNOWN_ID, ids)
        token = ids != PAD_ID  # (n, L)
        rows, keys = [], []
        offset = 0  # keys of n-grams of different orders never collide
        for order in range(1, self.ngram_max + 1):
            width = ids.shape[1] - order + 1
            if width <= 0:
                break
            key = np.zeros((ids.shape[0], width), dtype=np.int64)  # (n, L-order+1)
            valid = np.ones((ids.shape[0], width), dtype=bool)
            for j in range(order):
                key = key * base + ids[:, j : j + width]
                valid &= token[:, j : j + width]
            r, c = np.nonzero(valid)
            rows.append(r)
            keys.append(key[r, c] + offset)
            offset += base**order
        return np.concatenate(rows), np.concatenate(keys)

    def fit(self, x: Any, y: Any = None) -> NgramCounts:
        """Learn the n-grams of the training texts ``x`` ``(n, L)``."""
        if not 1 <= self.ngram_max <= MAX_NGRAM:
            raise ConfigError(
                f"ngram_max must lie in 1..{MAX_NGRAM}, got {self.ngram_max}",
                hint="use unigrams, bigrams or trigrams",
            )
        ids = np.asarray(x)
        seen = int(ids.max()) + 1 if ids.size else UNKNOWN_ID + 1
        self.base_ = max(self.vocab_size if self.vocab_size > 0 else seen, UNKNOWN_ID + 1)
        if self.base_**self.ngram_max * self.ngram_max >= 2**63:
            raise ConfigError(
                f"a vocabulary of {self.base_} tokens is too large for {self.ngram_max}-grams",
                hint="lower ngram_max",
            )
        rows, keys = self._keys(ids, self.base_)
        # Document frequency: count each (text, n-gram) pair once.
        per_text = np.unique(np.stack([keys, rows]), axis=1)[0]  # (distinct pairs,) sorted keys
        ngrams, texts = np.unique(per_text, return_counts=True)
        self.ngrams_ = ngrams[texts >= self.min_df]  # sorted: unigrams, then bigrams, ...
        return self

    def transform(self, x: Any) -> sp.csr_matrix:
        """Counts ``(n, n_ngrams)`` of the n-grams learned by :meth:`fit`."""
        ids = np.asarray(x)
        shape = (ids.shape[0], self.ngrams_.size)
        if self.ngrams_.size == 0:
            return sp.csr_matrix(shape)
        rows, keys = self._keys(ids, self.base_)
        cols = np.searchsorted(self.ngrams_, keys)  # (occurrences,)
        cols = np.minimum(cols, self.ngrams_.size - 1)
        known = self.ngrams_[cols] == keys  # unseen n-grams are dropped
        rows, cols = rows[known], cols[known]
        data = np.ones(rows.size, dtype=np.float64)
        # Duplicate (row, column) pairs add up when converted: counts.
        return sp.coo_matrix((data, (rows, cols)), shape=shape).tocsr()


class TfidfLogRegKnobs(Knobs):
    """Knobs of ``tfidf_logreg``.

    Attributes
    ----------
    ngram_max
        Longest n-gram of consecutive tokens counted (1: unigrams; 2: plus bigrams; at most 3).
    min_df
        Keep only n-grams that occur in at least this many training texts.
    C
        Inverse L2 regularisation strength of the logistic regression.
    max_iter
        Maximum solver iterations.
    """

    ngram_max: PositiveInt = Field(2, le=MAX_NGRAM, description="longest n-gram counted (1..3)")
    min_df: PositiveInt = Field(1, description="keep n-grams found in at least this many texts")
    C: float = Field(10.0, gt=0.0, description="inverse L2 regularisation strength")
    max_iter: PositiveInt = Field(2000, description="maximum solver iterations")


@family(
    "tfidf_logreg",
    kind="sklearn",
    modalities=("text",),
    knobs=TfidfLogRegKnobs,
    description="n-gram counts of token ids, sublinear TF-IDF, logistic regression (scikit-learn)",
)
def build_tfidf_logreg(
    knobs: TfidfLogRegKnobs,
    input_shape: tuple[int, ...],
    num_classes: int,
    modality: Modality,
    *,
    vocab_size: int = 0,
) -> SklearnModel:
    """Build a TF-IDF + logistic-regression :class:`SklearnModel` for token-id inputs.

    Examples
    --------
    >>> model = build_tfidf_logreg(TfidfLogRegKnobs(), (3,), 2, "text", vocab_size=6)
    >>> x = np.array([[2, 3, 0], [2, 0, 0], [4, 5, 3], [5, 4, 0]])
    >>> model.fit(x, np.array([0, 0, 1, 1]), seed=0).predict_proba(x).argmax(1).tolist()
    [0, 0, 1, 1]
    """
    check_input_shape("tfidf_logreg", input_shape, modality)

    def make() -> Pipeline:
        return make_pipeline(
            NgramCounts(knobs.ngram_max, vocab_size, knobs.min_df),
            TfidfTransformer(sublinear_tf=True),
            LogisticRegression(C=knobs.C, max_iter=knobs.max_iter),
        )

    return SklearnModel(make, num_classes, count=_n_logreg, has_logits=True)
