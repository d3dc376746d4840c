"""Representational similarity of two members' activations on the same instances.

Every function takes ``X`` ``(n, d1)`` and ``Y`` ``(n, d2)``, where row ``i`` of both is the
representation of instance ``i`` (the feature counts may differ), and returns a Python float.
Inputs may be NumPy arrays or torch tensors on any device: the work runs with torch on the inputs'
device (CUDA tensors on the GPU), NumPy arrays become CPU tensors without a copy where possible,
float32 stays float32 for the large matrix products (float64 stays float64; integers and booleans
become float64, float16 and bfloat16 become float32), and the small final reductions run in
float64.

Every function checks its inputs the same way and raises
:class:`~polyculture.errors.MeasureInputError` for: arrays that are not 2-D, row counts that
differ, too few rows, NaN or infinite values, non-numeric dtypes, and a representation that is
constant as a whole (every column has zero variance), for which none of these measures is defined.

What each measure is invariant to, applied to either side (``Q`` orthogonal, ``c`` a non-zero
number, ``A`` invertible):

============================  =========  ============  ==========  ======================
measure                       symmetric  ``X Q``       ``c X``     ``X A``
============================  =========  ============  ==========  ======================
:func:`linear_cka`            yes        yes           yes         no
:class:`StreamingCKA`         yes        yes           yes         no
:func:`rbf_cka`               yes        yes           yes         no
:func:`svcca`                 yes        yes           yes         only ``keep=1``
:func:`pwcca`                 no         other side    yes         other side
:func:`procrustes_distance`   yes        yes           yes         no
:func:`rsa`                   yes        euclidean     yes         no
:func:`mutual_knn`            yes        yes           yes         no
============================  =========  ============  ==========  ======================

All but :func:`mutual_knn` and correlation-RSA are also invariant to adding a constant vector to
every row (they center the features first).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from typing import Literal, TypeAlias

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from polyculture.errors import MeasureInputError

Array: TypeAlias = np.ndarray | Tensor
"""What the measures accept: a NumPy array or a torch tensor, ``(n, d)``."""

__all__ = [
    "StreamingCKA",
    "linear_cka",
    "mutual_knn",
    "procrustes_distance",
    "pwcca",
    "rbf_cka",
    "rsa",
    "svcca",
]

_SAME_ROWS_HINT = "pass representations of the same instances, in the same order"


# --------------------------------------------------------------------------------------------
# Input checks shared by every measure
# --------------------------------------------------------------------------------------------


def _as_tensor(A: Array, name: str) -> Tensor:
    """``A`` as a floating 2-D tensor (no copy for float32/float64 NumPy or torch input)."""
    if isinstance(A, Tensor):
        t = A.detach()  # measures are never differentiated through
        if t.is_complex():
            raise MeasureInputError(
                f"{name} has complex dtype {t.dtype}", hint="pass real-valued activations"
            )
        if not t.is_floating_point():
            t = t.to(torch.float64)
    else:
        arr = np.asarray(A)
        if arr.dtype.kind not in "biuf":
            raise MeasureInputError(
                f"{name} has dtype {arr.dtype}, which is not a real number type",
                hint="pass a numeric array of activations (float32 or float64)",
            )
        if arr.dtype.kind in "biu" or arr.dtype.itemsize > 8:
            arr = arr.astype(np.float64)
        elif not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        with warnings.catch_warnings():
            # A read-only array is fine: we never write into the input.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            try:
                t = torch.from_numpy(arr)
            except ValueError:  # negative strides (e.g. arr[::-1]) need a copy
                t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dtype in (torch.float16, torch.bfloat16):
        # Half-precision sums of squares lose too much; float32 keeps the GEMMs fast.
        t = t.to(torch.float32)
    if t.ndim != 2:
        raise MeasureInputError(
            f"{name} must be 2-D (instances x features); got shape {tuple(t.shape)}",
            hint="flatten each instance's features, e.g. X.reshape(len(X), -1)",
        )
    if t.shape[1] == 0:
        raise MeasureInputError(
            f"{name} has no features (shape {tuple(t.shape)})",
            hint="pass at least one feature column",
        )
    return t


def _constant_columns(t: Tensor) -> Tensor:
    """Boolean mask ``(d,)`` of columns whose values are all equal (exactly)."""
    # A constant column must agree on rows 0 and 1: only those candidates need a full pass, so
    # typical activations cost O(d) here rather than another sweep over the data.
    if t.shape[0] < 2:
        return torch.ones(t.shape[1], dtype=torch.bool, device=t.device)
    mask = torch.zeros(t.shape[1], dtype=torch.bool, device=t.device)  # (d,)
    candidates = torch.nonzero(t[0] == t[1]).flatten()
    if candidates.numel():
        mask[candidates] = (t[:, candidates] == t[0, candidates]).all(0)
    return mask


@dataclass(frozen=True)
class _Pair:
    """Validated inputs: same device, same floating dtype, same number of rows."""

    x: Tensor  # (n, d1)
    y: Tensor  # (n, d2)
    mean_x: Tensor  # (d1,); exactly the column's value for constant columns
    mean_y: Tensor  # (d2,)
    constant_x: Tensor  # (d1,) bool
    constant_y: Tensor  # (d2,) bool

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def centered(self) -> tuple[Tensor, Tensor]:
        """Column-centered copies; constant columns come out exactly zero."""
        return self.x - self.mean_x, self.y - self.mean_y  # (n, d1), (n, d2)


def _column_mean(t: Tensor, name: str, constant: Tensor) -> Tensor:
    """Column means ``(d,)``; raises if ``t`` holds NaN or infinite values."""
    total = t.sum(0)  # (d,)
    # A NaN or inf anywhere makes its column sum non-finite, so this check costs nothing beyond
    # the sum that centering needs anyway; only on failure do we count the bad values.
    if not bool(torch.isfinite(total).all()):
        nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
        if nan or inf:
            kinds = " and ".join(
                f"{count} {kind}" for count, kind in ((nan, "NaN"), (inf, "infinite")) if count
            )
            rows = torch.nonzero(~torch.isfinite(t).all(1)).flatten()
            shown = ", ".join(str(int(r)) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise MeasureInputError(
                f"{name} holds {kinds} values (in {len(rows)} of its {t.shape[0]} rows: {shown})",
                hint="drop or impute those instances in both X and Y before measuring",
            )
        raise MeasureInputError(
            f"{name}'s column sums overflow {t.dtype} (values up to {float(t.abs().max()):.3g})",
            hint="rescale the activations or pass float64",
        )
    mean = total / t.shape[0]
    # Centering a constant column with a rounded mean leaves a small constant residue that would
    # pollute the measures (large-magnitude constant features in float32); use the exact value.
    return torch.where(constant, t[0], mean) if bool(constant.any()) else mean


def _check_pair(
    X: Array,
    Y: Array,
    *,
    measure: str,
    min_n: int = 2,
    allow_constant: bool = False,
) -> _Pair:
    """The one validation of every measure's inputs (see the module docstring)."""
    x, y = _as_tensor(X, "X"), _as_tensor(Y, "Y")
    if x.device != y.device:
        if isinstance(X, Tensor) and isinstance(Y, Tensor):
            raise MeasureInputError(
                f"X is on {x.device} but Y is on {y.device}",
                hint="move both to the same device, e.g. Y.to(X.device)",
            )
        # One was a NumPy array (CPU): follow the tensor's device.
        x, y = (x, y.to(x.device)) if isinstance(X, Tensor) else (x.to(y.device), y)
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(dtype)
    if x.shape[0] != y.shape[0]:
        raise MeasureInputError(
            f"X has {x.shape[0]} rows but Y has {y.shape[0]}", hint=_SAME_ROWS_HINT
        )
    n = x.shape[0]
    if n < min_n:
        raise MeasureInputError(
            f"{measure} needs at least {min_n} instances; got {n}",
            hint="pass more instances (rows)",
        )
    constant_x, constant_y = _constant_columns(x), _constant_columns(y)
    mean_x = _column_mean(x, "X", constant_x)
    mean_y = _column_mean(y, "Y", constant_y)
    if not allow_constant:
        for name, constant in (("X", constant_x), ("Y", constant_y)):
            if bool(constant.all()):
                raise MeasureInputError(
                    f"{name} is constant (all {constant.numel()} columns have zero variance), "
                    f"so {measure} is undefined",
                    hint="check that the layer's activations were captured (all zero? dead units?)",
                )
    return _Pair(x, y, mean_x, mean_y, constant_x, constant_y)


def _check_positive_int(value: int, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise MeasureInputError(f"{name} must be an integer >= {low}; got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# Linear CKA: one-shot and streaming share the same sufficient statistics
# --------------------------------------------------------------------------------------------


@dataclass
class _Moments:
    """Sums over rows of (shifted) ``x`` ``(d1,)`` and ``y`` ``(d2,)``, all float64.

    Enough for biased and unbiased linear HSIC without any n x n matrix: with ``K = X Xᵀ``,
    ``a_i = ||x_i||²`` (so ``a = diag K``) and the same for ``Y``/``L``/``b``, every term of both
    estimators is a polynomial in these sums (see :func:`_hsic_unbiased`).
    """

    n: int
    sx: Tensor  # (d1,)  Σ x_i
    sy: Tensor  # (d2,)  Σ y_i
    xx: Tensor  # (d1, d1)  Σ x_i x_iᵀ
    yy: Tensor  # (d2, d2)
    xy: Tensor  # (d1, d2)  Σ x_i y_iᵀ
    # Only for the unbiased estimator (left empty when not needed):
    xa: Tensor  # (d1,)  Σ a_i x_i
    xb: Tensor  # (d1,)  Σ b_i x_i
    ya: Tensor  # (d2,)
    yb: Tensor  # (d2,)
    abc: Tensor  # (5,) [Σ a, Σ b, Σ a², Σ b², Σ a b]

    def add(self, other: _Moments) -> None:
        self.n += other.n
        for field in fields(self)[1:]:
            getattr(self, field.name).add_(getattr(other, field.name))


def _moments(xs: Tensor, ys: Tensor, *, unbiased_terms: bool) -> _Moments:
    """Sums over rows ``xs`` ``(b, d1)`` and ``ys`` ``(b, d2)``; the GEMMs run in their dtype."""
    f64 = torch.float64
    # The three GEMMs: all the O(n d²) work of linear CKA.
    xx = (xs.T @ xs).to(f64)  # (d1, d1)
    yy = (ys.T @ ys).to(f64)  # (d2, d2)
    xy = (xs.T @ ys).to(f64)  # (d1, d2)
    sx, sy = xs.sum(0).to(f64), ys.sum(0).to(f64)  # (d1,), (d2,)
    if unbiased_terms:
        # Squared row norms, the diagonals of K and L (a fused norm: no (b, d) temporary).
        a = torch.linalg.vector_norm(xs, dim=1).square()  # (b,)
        b = torch.linalg.vector_norm(ys, dim=1).square()  # (b,)
        xa, xb = (xs.T @ a).to(f64), (xs.T @ b).to(f64)  # (d1,)
        ya, yb = (ys.T @ a).to(f64), (ys.T @ b).to(f64)  # (d2,)
        a64, b64 = a.to(f64), b.to(f64)
        abc = torch.stack([a64.sum(), b64.sum(), a64 @ a64, b64 @ b64, a64 @ b64])  # (5,)
    else:
        empty = xx.new_zeros(0)
        xa = xb = ya = yb = abc = empty
    return _Moments(int(xs.shape[0]), sx, sy, xx, yy, xy, xa, xb, ya, yb, abc)


def _cka_biased(m: _Moments) -> float:
    """``||C_xy||²_F / (||C_xx||_F ||C_yy||_F)`` with ``C`` the centered cross-products."""
    n = m.n
    # Σ (x - x̄)(y - ȳ)ᵀ = Σ x yᵀ - sx syᵀ / n: exact centering of shifted sums.
    cxy = m.xy - torch.outer(m.sx, m.sy) / n  # (d1, d2)
    cxx = m.xx - torch.outer(m.sx, m.sx) / n  # (d1, d1)
    cyy = m.yy - torch.outer(m.sy, m.sy) / n  # (d2, d2)
    denominator = float(torch.linalg.matrix_norm(cxx) * torch.linalg.matrix_norm(cyy))
    if denominator <= 0.0:
        raise MeasureInputError(
            "a representation has zero variance in floating point, so CKA is undefined",
            hint="rescale the activations or pass float64",
        )
    return float(cxy.square().sum()) / denominator


def _hsic_unbiased(
    n: int,
    cross_sq: Tensor,
    ab: Tensor,
    ones_k_ones: Tensor,
    ones_l_ones: Tensor,
    ones_kl_ones: Tensor,
) -> float:
    """Song et al. (2012) unbiased HSIC from its three traces; ``K̃`` and ``L̃`` have zero diagonals.

    ``HSIC₁ = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n-1)(n-2)) - 2/(n-2) 1ᵀK̃L̃1] / (n(n-3))``, with
    ``tr(K̃L̃) = ||XᵀY||²_F - aᵀb`` (``cross_sq - ab``).
    """
    trace = float(cross_sq - ab)
    value = (
        trace
        + float(ones_k_ones * ones_l_ones) / ((n - 1) * (n - 2))
        - 2.0 * float(ones_kl_ones) / (n - 2)
    )
    return value / (n * (n - 3))


def _cka_unbiased(m: _Moments) -> float:
    """Debiased CKA: ``HSIC₁(K, L) / sqrt(HSIC₁(K, K) HSIC₁(L, L))`` in feature space.

    With ``K̃ = XXᵀ - diag(a)``: ``1ᵀK̃1 = ||sx||² - Σa`` and ``K̃1 = X sx - a``, so
    ``1ᵀK̃L̃1 = (X sx - a)ᵀ(Y sy - b) = sxᵀ(XᵀY)sy - sxᵀ(Xᵀb) - (Yᵀa)ᵀsy + aᵀb``.
    The estimator is unchanged by shifting every row by the same vector (it U-centers ``K``:
    the off-diagonal terms ``f(i) + g(j)`` a shift adds cancel), so the sums may be of shifted rows.
    """
    n = m.n
    sum_a, sum_b, aa, bb, ab = m.abc
    k1 = m.sx @ m.sx - sum_a  # 1ᵀK̃1
    l1 = m.sy @ m.sy - sum_b  # 1ᵀL̃1
    kl = m.sx @ m.xy @ m.sy - m.sx @ m.xb - m.ya @ m.sy + ab  # 1ᵀK̃L̃1
    kk = m.sx @ m.xx @ m.sx - 2 * (m.sx @ m.xa) + aa  # 1ᵀK̃K̃1
    ll = m.sy @ m.yy @ m.sy - 2 * (m.sy @ m.yb) + bb  # 1ᵀL̃L̃1
    hsic_xy = _hsic_unbiased(n, m.xy.square().sum(), ab, k1, l1, kl)
    hsic_xx = _hsic_unbiased(n, m.xx.square().sum(), aa, k1, k1, kk)
    hsic_yy = _hsic_unbiased(n, m.yy.square().sum(), bb, l1, l1, ll)
    if hsic_xx <= 0.0 or hsic_yy <= 0.0:
        raise MeasureInputError(
            f"the unbiased HSIC of a representation with itself is not positive "
            f"({hsic_xx:.3g}, {hsic_yy:.3g}), so debiased CKA is undefined",
            hint="pass more instances, or use debiased=False",
        )
    return hsic_xy / math.sqrt(hsic_xx * hsic_yy)


def linear_cka(X: Array, Y: Array, *, debiased: bool = False) -> float:
    """Linear centered kernel alignment (Kornblith et al. 2019), in feature space.

    After centering the columns, ``CKA = ||YᵀX||²_F / (||XᵀX||_F ||YᵀY||_F)``: exactly three
    GEMMs (``O(n (d1 + d2)²)`` time, ``d1² + d2² + d1 d2`` floats of memory) and never an n x n
    Gram matrix. With ``debiased=True`` the three HSIC values are the unbiased estimator of Song
    et al. (2012) (``HSIC₁`` of Nguyen, Raghu & Kornblith 2021), also computed in feature space
    from the same GEMMs plus row norms; it needs ``n >= 4`` and may be slightly negative for
    unrelated representations.

    In ``[0, 1]`` (biased), 1 for ``X`` vs itself. Symmetric; invariant to orthogonal transforms
    and isotropic scaling of either side and to adding a constant row vector; not invariant to
    general invertible linear maps. Constant columns are allowed (they contribute nothing).

    Parameters
    ----------
    X, Y
        Representations ``(n, d1)`` and ``(n, d2)`` of the same ``n`` instances.
    debiased
        Use the unbiased HSIC estimator (less sensitive to ``d >> n``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 5))
    >>> Q = np.linalg.qr(rng.normal(size=(5, 5)))[0]
    >>> round(linear_cka(X, 3 * X @ Q), 6), round(linear_cka(X, X, debiased=True), 6)
    (1.0, 1.0)
    """
    pair = _check_pair(
        X, Y, measure="debiased CKA" if debiased else "CKA", min_n=4 if debiased else 2
    )
    xc, yc = pair.centered()  # (n, d1), (n, d2)
    moments = _moments(xc, yc, unbiased_terms=debiased)
    return _cka_unbiased(moments) if debiased else _cka_biased(moments)


class StreamingCKA:
    """Linear CKA (biased or debiased) accumulated over minibatches of the same instances.

    Feed row-aligned batches of ``X`` and ``Y`` with :meth:`update`, then call :meth:`result`.
    Memory is ``O(d1² + d2² + d1 d2)``, independent of ``n``; the result equals one-shot
    :func:`linear_cka` on the concatenated batches (biased and debiased) up to floating point:
    the estimators are exact polynomials of the accumulated sums, not a minibatch average.

    Sums are kept in float64. For numerical stability every row is shifted by the first batch's
    column means before accumulating (a column constant within the first batch is shifted by its
    exact value, so globally constant columns contribute exactly zero); both estimators are
    unchanged by such a shift (see :func:`_cka_unbiased`).

    Parameters
    ----------
    d1, d2
        Feature counts of ``X`` and ``Y``.
    device
        Where to accumulate; ``None`` uses the first batch's device.
    dtype
        Dtype of the per-batch GEMMs (float64 by default; float32 is faster, and the sums stay
        float64 either way).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.normal(size=(300, 6)), rng.normal(size=(300, 4))
    >>> stream = StreamingCKA(6, 4)
    >>> for rows in np.array_split(np.arange(300), 7):
    ...     stream.update(X[rows], Y[rows])
    >>> abs(stream.result() - linear_cka(X, Y)) < 1e-12
    True
    """

    def __init__(
        self,
        d1: int,
        d2: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.d1 = _check_positive_int(d1, "d1")
        self.d2 = _check_positive_int(d2, "d2")
        if not dtype.is_floating_point:
            raise MeasureInputError(f"dtype must be a floating dtype; got {dtype}")
        self.device = torch.device(device) if device is not None else None
        self.dtype = dtype
        self._shift_x: Tensor | None = None  # (d1,)
        self._shift_y: Tensor | None = None  # (d2,)
        self._sums: _Moments | None = None

    @property
    def n(self) -> int:
        """Instances seen so far."""
        return self._sums.n if self._sums is not None else 0

    def update(self, X_batch: Array, Y_batch: Array) -> None:
        """Add the rows of one batch: ``X_batch`` ``(b, d1)`` and ``Y_batch`` ``(b, d2)``.

        Examples
        --------
        >>> stream = StreamingCKA(2, 2)
        >>> stream.update(np.eye(2), np.eye(2))
        >>> stream.n
        2
        """
        pair = _check_pair(X_batch, Y_batch, measure="update", min_n=1, allow_constant=True)
        for name, t, d in (("X_batch", pair.x, self.d1), ("Y_batch", pair.y, self.d2)):
            if t.shape[1] != d:
                raise MeasureInputError(
                    f"{name} has {t.shape[1]} columns but this StreamingCKA expects {d}",
                    hint="feed batches of the same layers the accumulator was created for",
                )
        if self.device is None:
            self.device = pair.x.device
        if self._shift_x is None or self._shift_y is None:
            self._shift_x = pair.mean_x.to(self.device, self.dtype)
            self._shift_y = pair.mean_y.to(self.device, self.dtype)
        xs = self._shifted(pair.x, self._shift_x)  # (b, d1)
        ys = self._shifted(pair.y, self._shift_y)  # (b, d2)
        batch = _moments(xs, ys, unbiased_terms=True)
        if self._sums is None:
            self._sums = batch
        else:
            self._sums.add(batch)

    def _shifted(self, t: Tensor, shift: Tensor) -> Tensor:
        t = t.to(self.device)
        # Subtract in place when the dtype conversion already made a private copy (one fewer
        # batch-sized temporary); never write into the caller's tensor.
        return t - shift if t.dtype == self.dtype else t.to(self.dtype).sub_(shift)

    def result(self, *, debiased: bool = False) -> float:
        """Linear CKA of everything fed so far (see :func:`linear_cka`).

        Examples
        --------
        >>> stream = StreamingCKA(2, 2)
        >>> stream.update(np.arange(8.0).reshape(4, 2) ** 2, np.arange(8.0).reshape(4, 2) ** 2)
        >>> round(stream.result(debiased=True), 6)
        1.0
        """
        min_n = 4 if debiased else 2
        if self._sums is None or self._sums.n < min_n:
            raise MeasureInputError(
                f"{'debiased ' if debiased else ''}CKA needs at least {min_n} instances; "
                f"got {self.n}",
                hint="call update() with more batches before result()",
            )
        m = self._sums
        # Shifted values of a globally constant column are exactly zero (see class docstring),
        # so its diagonal sum of squares is exactly zero.
        for name, gram in (("X", m.xx), ("Y", m.yy)):
            if bool((torch.diagonal(gram) == 0).all()):
                raise MeasureInputError(
                    f"{name} is constant (all {gram.shape[0]} columns have zero variance), "
                    "so CKA is undefined",
                    hint="check that the layer's activations were captured (all zero? dead units?)",
                )
        return _cka_unbiased(m) if debiased else _cka_biased(m)


# --------------------------------------------------------------------------------------------
# RBF CKA
# --------------------------------------------------------------------------------------------


def _squared_distances(t: Tensor) -> Tensor:
    """Pairwise squared euclidean distances ``(n, n)`` via one GEMM; exact zeros on the diagonal."""
    # Distances are shift-invariant. Subtracting one instance (rather than the rounded mean)
    # removes a large common offset, which shrinks the cancellation in ||a||² + ||b||² - 2 a·b,
    # and keeps integer-valued data exact, so equal distances stay exactly tied (Spearman RSA).
    tc = t - t[0]  # (n, d)
    d2 = tc @ tc.T  # (n, n)
    sq = torch.diagonal(d2).clone()  # (n,) from the same GEMM: duplicate rows get distance 0
    d2.mul_(-2).add_(sq[:, None]).add_(sq[None, :]).clamp_(min=0)
    return d2.fill_diagonal_(0)


def _median_pair_distance(d2: Tensor) -> float:
    """Median of the ``n(n-1)/2`` distances over distinct pairs, from squared distances ``(n, n)``.

    The diagonal zeros are the ``n`` smallest entries and every pair appears twice, so the ``j``-th
    smallest pair is entry ``n + 2j`` of the sorted matrix: no index arrays of size n² needed.
    """
    n = d2.shape[0]
    pairs = n * (n - 1) // 2
    flat = d2.reshape(-1)

    def pair_value(j: int) -> float:  # j-th smallest pair distance, 1-based
        return math.sqrt(max(float(torch.kthvalue(flat, n + 2 * j).values), 0.0))

    if pairs % 2:
        return pair_value((pairs + 1) // 2)
    return 0.5 * (pair_value(pairs // 2) + pair_value(pairs // 2 + 1))


def _centered_rbf_gram(t: Tensor, sigma: float, name: str) -> Tensor:
    """``H K H`` ``(n, n)`` for the RBF kernel with bandwidth ``sigma x median distance``."""
    k = _squared_distances(t)  # (n, n); becomes the kernel in place to save n² floats
    median = _median_pair_distance(k)
    if median == 0.0:
        raise MeasureInputError(
            f"the median distance between instances of {name} is 0 (over half the pairs are "
            "identical), so the RBF bandwidth is undefined",
            hint="remove duplicate instances or use linear_cka",
        )
    k.mul_(-1.0 / (2.0 * (sigma * median) ** 2)).exp_()
    # Double centering H K H in place: K is symmetric, so row means equal column means.
    k.sub_(k.mean(0, keepdim=True))
    return k.sub_(k.mean(1, keepdim=True))


def _frobenius_dot(A: Tensor, B: Tensor, block: int = 1024) -> float:
    """``Σ A ∘ B`` over ``(n, n)`` matrices, in row blocks (bounded temporaries), float64 total."""
    total = 0.0
    for start in range(0, A.shape[0], block):
        rows = slice(start, start + block)
        total += float((A[rows] * B[rows]).sum(1).to(torch.float64).sum())
    return total


def rbf_cka(X: Array, Y: Array, *, sigma: float = 0.8, max_n: int = 20000) -> float:
    """CKA with Gaussian (RBF) kernels (Kornblith et al. 2019), biased HSIC.

    ``K_ij = exp(-||x_i - x_j||² / (2 (sigma m)²))`` with ``m`` the median distance between
    distinct instances of ``X`` (likewise for ``Y``); then ``CKA = <HKH, HLH>_F / (||HKH||_F
    ||HLH||_F)``. Kornblith et al.'s reference code takes the median over all n² squared
    distances including the zero diagonal, which gives a slightly smaller bandwidth for small n.
    As ``sigma`` grows, RBF CKA tends to :func:`linear_cka`.

    Memory: this needs n x n matrices: about ``3 n²`` values of the input dtype at peak (two
    kernels and one temporary for the median; n = 20000 in float32 is about 4.8 GB), hence
    ``max_n``. Time ``O(n² (d1 + d2))``.

    Symmetric; invariant to orthogonal transforms, isotropic scaling (the bandwidth scales with
    the data) and translation of either side.

    Parameters
    ----------
    X, Y
        Representations ``(n, d1)`` and ``(n, d2)`` of the same instances.
    sigma
        Bandwidth as a fraction of the median pairwise distance.
    max_n
        Refuse larger ``n`` (memory grows as n²).

    Examples
    --------
    >>> X = np.random.default_rng(0).normal(size=(50, 4))
    >>> round(rbf_cka(X, 2 * X + 1), 6)
    1.0
    """
    if not sigma > 0 or not math.isfinite(sigma):
        raise MeasureInputError(f"sigma must be a positive number; got {sigma!r}")
    max_n = _check_positive_int(max_n, "max_n", low=2)
    pair = _check_pair(X, Y, measure="RBF CKA")
    if pair.n > max_n:
        raise MeasureInputError(
            f"rbf_cka needs n x n matrices and n = {pair.n} exceeds max_n = {max_n} "
            f"(about {3 * pair.n**2 * pair.x.element_size() / 1e9:.1f} GB)",
            hint="subsample the instances, raise max_n if memory allows, or use linear_cka",
        )
    gram_x = _centered_rbf_gram(pair.x, sigma, "X")  # (n, n)
    gram_y = _centered_rbf_gram(pair.y, sigma, "Y")  # (n, n)
    denominator = math.sqrt(_frobenius_dot(gram_x, gram_x) * _frobenius_dot(gram_y, gram_y))
    if denominator == 0.0:
        raise MeasureInputError(
            "a centered RBF kernel is zero (sigma too small: every instance is isolated)",
            hint="raise sigma",
        )
    return _frobenius_dot(gram_x, gram_y) / denominator


# --------------------------------------------------------------------------------------------
# SVCCA and PWCCA
# --------------------------------------------------------------------------------------------


def _principal_subspace(tc: Tensor, keep: float) -> tuple[Tensor, Tensor, Tensor]:
    """Top principal directions of centered ``tc`` ``(n, d)`` holding ``keep`` of the variance.

    Returns ``U_k`` ``(n, k)`` (orthonormal), ``S_k`` ``(k,)`` and ``V_kᵀ`` ``(k, d)``; directions
    with numerically zero variance are never kept.
    """
    u, s, vh = torch.linalg.svd(tc, full_matrices=False)  # (n, r), (r,), (r, d)
    s64 = s.to(torch.float64)
    tolerance = float(s64[0]) * max(tc.shape) * torch.finfo(tc.dtype).eps
    rank = max(int((s64 > tolerance).sum()), 1)
    variance = s64[:rank].square()
    explained = torch.cumsum(variance, 0) / variance.sum()
    k = min(rank, int((explained < keep).sum()) + 1)
    return u[:, :k], s[:k], vh[:k]


def _cca_subspaces(
    pair: _Pair, keep: float, measure: str
) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]:
    xc, yc = pair.centered()  # constant columns come out exactly zero: dropped by the SVD
    sub_x, sub_y = _principal_subspace(xc, keep), _principal_subspace(yc, keep)
    kx, ky = sub_x[0].shape[1], sub_y[0].shape[1]
    # Centered data live in an (n-1)-dim space: two subspaces of dims kx + ky > n - 1 must share
    # directions, which would give canonical correlations of 1 whatever the data.
    if kx + ky > pair.n - 1:
        raise MeasureInputError(
            f"{measure} needs more instances than the kept dimensions of X and Y together "
            f"({kx} + {ky} >= n = {pair.n}); CCA would report spurious correlations of 1",
            hint="pass more instances (ideally many times the dimensions) or reduce dimensions",
        )
    return sub_x, sub_y


def svcca(X: Array, Y: Array, *, keep: float = 0.99) -> float:
    """SVCCA (Raghu et al. 2017): mean canonical correlation of the top principal subspaces.

    Each side is centered, reduced by SVD to the fewest directions that explain ``keep`` of its
    variance, and the canonical correlations between the two reduced subspaces (the singular values
    of ``U_xᵀ U_y``) are averaged over ``min(k_x, k_y)``. Constant columns are dropped (they carry
    no variance). Needs ``k_x + k_y < n``; CCA overfits unless ``n`` is many times larger.

    In ``[0, 1]``. Symmetric; invariant to orthogonal transforms, isotropic scaling and
    translation of either side. With ``keep=1`` it is invariant to any invertible linear map;
    with ``keep < 1`` only approximately, since such a map changes which directions hold the
    variance.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4))
    >>> round(svcca(X, X @ rng.normal(size=(4, 4)), keep=1.0), 6)
    1.0
    """
    if not 0.0 < keep <= 1.0:
        raise MeasureInputError(f"keep must lie in (0, 1]; got {keep!r}")
    pair = _check_pair(X, Y, measure="SVCCA", min_n=3)
    (ux, _, _), (uy, _, _) = _cca_subspaces(pair, keep, "SVCCA")
    rho = torch.linalg.svdvals(ux.T @ uy).to(torch.float64).clamp(0.0, 1.0)  # (min(kx, ky),)
    return float(rho.mean())


def pwcca(X: Array, Y: Array) -> float:
    """Projection-weighted CCA (Morcos et al. 2018): canonical correlations weighted by importance.

    Both sides are centered (constant columns dropped) and CCA is run on their full column spaces.
    On the side with fewer dimensions (``X`` on a tie, as in the authors' code), each canonical
    variate ``h_i`` gets weight ``α_i = Σ_j |<h_i, x_j>|`` over that side's centered neuron
    vectors ``x_j``, and the result is ``Σ α_i ρ_i / Σ α_i``. Directions that account for more of
    the neurons' activity count more, so noise directions that CCA correlates by chance count less.
    Needs ``rank X + rank Y < n``.

    In ``[0, 1]``, 1 when ``Y`` is an invertible linear map of ``X``. Not symmetric in general
    (the weights come from one side). Invariant to isotropic scaling and translation of either
    side and to any invertible linear map of the side that is not weighted; on the weighted side
    only to permutations and sign flips of neurons (the weights sum absolute values over them).
    When several canonical correlations are equal (a shared subspace, where they are all 1) the
    variates within that block, hence the weights, are not unique and the result may depend on
    rounding; it is exactly 1 whenever all correlations are 1.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4))
    >>> round(pwcca(X, X @ rng.normal(size=(4, 4)) + 1), 6)
    1.0
    """
    pair = _check_pair(X, Y, measure="PWCCA", min_n=3)
    (ux, sx, vhx), (uy, sy, vhy) = _cca_subspaces(pair, 1.0, "PWCCA")
    p, rho, qh = torch.linalg.svd(ux.T @ uy, full_matrices=False)  # (kx, r), (r,), (r, ky)
    if ux.shape[1] <= uy.shape[1]:
        # Variates H = U_x P, so Hᵀ X_c = Pᵀ U_xᵀ U_x S Vᵀ = Pᵀ S Vᵀ: no n-sized work needed.
        projections = p.T @ (sx[:, None] * vhx)  # (r, d1)
    else:
        projections = qh @ (sy[:, None] * vhy)  # (r, d2)
    weights = projections.abs().sum(1).to(torch.float64)  # (r,)
    rho64 = rho.to(torch.float64).clamp(0.0, 1.0)
    return float((weights * rho64).sum() / weights.sum())


# --------------------------------------------------------------------------------------------
# Procrustes distance
# --------------------------------------------------------------------------------------------


def procrustes_distance(X: Array, Y: Array) -> float:
    """Orthogonal Procrustes distance between centered, unit-Frobenius-norm representations.

    ``d = sqrt(max(0, 2 - 2 ||X̂ᵀŶ||_*))`` with ``X̂ = X_c / ||X_c||_F`` (likewise ``Ŷ``) and
    ``||·||_*`` the nuclear norm: the smallest ``||X̂ - Ŷ Q||_F`` over orthogonal ``Q`` (the
    narrower side padded with zero columns when ``d1 != d2``). A metric on representations up to
    translation, isotropic scaling and orthogonal transforms (Williams et al. 2021): symmetric,
    zero for a rotated, scaled, shifted copy, obeys the triangle inequality. In ``[0, sqrt(2)]``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 3))
    >>> Q = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    >>> procrustes_distance(X, 2 * X @ Q + 1) < 1e-6
    True
    """
    pair = _check_pair(X, Y, measure="Procrustes distance")
    xc, yc = pair.centered()  # (n, d1), (n, d2)
    scale = torch.linalg.vector_norm(xc).to(torch.float64) * torch.linalg.vector_norm(yc).to(
        torch.float64
    )
    cross = (xc.T @ yc).to(torch.float64) / scale  # (d1, d2)
    nuclear = float(torch.linalg.svdvals(cross).sum())
    return math.sqrt(max(0.0, 2.0 - 2.0 * nuclear))


# --------------------------------------------------------------------------------------------
# RSA
# --------------------------------------------------------------------------------------------


def _rdm_upper(t: Tensor, metric: str, name: str) -> Tensor:
    """Upper triangle ``(n(n-1)/2,)`` of the representational dissimilarity matrix of ``t``."""
    n = t.shape[0]
    if metric == "correlation":
        flat_rows = (t == t[:, :1]).all(1)  # (n,) rows with no variation across features
        if bool(flat_rows.any()):
            raise MeasureInputError(
                f"{int(flat_rows.sum())} rows of {name} are constant across features, so their "
                "correlation distance is undefined",
                hint="use metric='euclidean' (always for single-feature representations)",
            )
        z = t - t.mean(1, keepdim=True)  # (n, d) each instance centered over its features
        z = z / torch.linalg.vector_norm(z, dim=1, keepdim=True)
        rdm = 1.0 - z @ z.T  # (n, n) 1 - Pearson correlation between instances
    else:
        rdm = _squared_distances(t).sqrt_()  # (n, n)
    upper = torch.ones(n, n, dtype=torch.bool, device=t.device).triu_(1)  # (n, n)
    return rdm[upper].to(torch.float64)


def _average_ranks(v: Tensor) -> Tensor:
    """1-based ranks of ``v`` ``(m,)``, ties sharing their average rank (as scipy's rankdata)."""
    order = torch.argsort(v)
    ordered = v[order]
    starts_group = torch.ones_like(ordered, dtype=torch.bool)
    starts_group[1:] = ordered[1:] != ordered[:-1]
    group = torch.cumsum(starts_group, 0) - 1  # (m,) group of each sorted position
    first = torch.nonzero(starts_group).flatten()  # (groups,) first sorted position of each
    last = torch.cat([first[1:], first.new_tensor([v.numel()])]) - 1
    ranks = torch.empty_like(v, dtype=torch.float64)
    ranks[order] = ((first + last).to(torch.float64) / 2 + 1)[group]
    return ranks


def _pearson(a: Tensor, b: Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = float(torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b))
    if denominator == 0.0:
        which = "X" if float(torch.linalg.vector_norm(a)) == 0.0 else "Y"
        raise MeasureInputError(
            f"the dissimilarity matrix of {which} is constant (all instances equally far apart), "
            "so its correlation with the other is undefined",
            hint="use the other metric, or check the representation",
        )
    return float(a @ b) / denominator


def rsa(
    X: Array,
    Y: Array,
    *,
    metric: Literal["correlation", "euclidean"] = "correlation",
    compare: Literal["spearman", "pearson"] = "spearman",
    max_n: int = 5000,
    seed: int = 0,
) -> float:
    """Representational similarity analysis (Kriegeskorte et al. 2008): correlation of RDMs.

    Each side's representational dissimilarity matrix holds ``1 - Pearson(x_i, x_j)`` between
    instances (``metric="correlation"``) or their euclidean distance; the two upper triangles are
    compared by Spearman (ties get average ranks) or Pearson correlation. Memory and time grow as
    n², so for ``n > max_n`` a random subsample of ``max_n`` instances (the same rows of both,
    drawn with ``seed``) is used instead.

    In ``[-1, 1]``, 1 for ``Y = a X + b`` with ``a > 0``. Symmetric. Invariant to isotropic
    scaling and translation (euclidean) of either side, and to orthogonal transforms with
    ``metric="euclidean"``; correlation distance is instead invariant to scaling and shifting
    each instance's feature vector.

    Examples
    --------
    >>> X = np.random.default_rng(0).normal(size=(30, 5))
    >>> round(rsa(X, 2 * X + 1), 6)
    1.0
    """
    if metric not in ("correlation", "euclidean"):
        raise MeasureInputError(
            f"unknown metric {metric!r}", hint="use 'correlation' or 'euclidean'"
        )
    if compare not in ("spearman", "pearson"):
        raise MeasureInputError(f"unknown compare {compare!r}", hint="use 'spearman' or 'pearson'")
    max_n = _check_positive_int(max_n, "max_n", low=3)
    pair = _check_pair(X, Y, measure="RSA", min_n=3)
    x, y = pair.x, pair.y
    if pair.n > max_n:
        rows = np.sort(np.random.default_rng(seed).choice(pair.n, size=max_n, replace=False))
        index = torch.from_numpy(rows).to(x.device)
        x, y = x[index], y[index]  # (max_n, d1), (max_n, d2)
    rdm_x, rdm_y = _rdm_upper(x, metric, "X"), _rdm_upper(y, metric, "Y")
    if compare == "spearman":
        rdm_x, rdm_y = _average_ranks(rdm_x), _average_ranks(rdm_y)
    return _pearson(rdm_x, rdm_y)


# --------------------------------------------------------------------------------------------
# Mutual k-nearest neighbours
# --------------------------------------------------------------------------------------------


def _knn_cosine(t: Tensor, k: int, block: int) -> Tensor:
    """Indices ``(n, k)`` of each row's k most cosine-similar other rows, in row blocks."""
    n = t.shape[0]
    z = F.normalize(t, dim=1)  # (n, d) unit rows; an all-zero row stays zero (similarity 0)
    neighbours = torch.empty(n, k, dtype=torch.long, device=t.device)
    for start in range(0, n, block):
        stop = min(start + block, n)
        sim = z[start:stop] @ z.T  # (b, n): only this block's rows are ever held
        own = torch.arange(stop - start, device=t.device)
        sim[own, own + start] = -math.inf  # an instance is never its own neighbour
        neighbours[start:stop] = sim.topk(k, dim=1, sorted=False).indices
    return neighbours


def mutual_knn(X: Array, Y: Array, *, k: int = 10, block: int = 1024) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024, "The Platonic Representation ...").

    For each instance, its ``k`` nearest other instances by cosine similarity (rows
    L2-normalised, as the authors do; no centering) in ``X`` and in ``Y``; the score is the mean
    over instances of ``|N_X(i) ∩ N_Y(i)| / k``. Computed in blocks of ``block`` rows (one GEMM and
    a top-k each), so memory is ``O(block x n)``, never n x n; time ``O(n² (d1 + d2))``. Ties in
    similarity are broken arbitrarily. The authors also clip outlier activations first; do that
    beforehand if wanted.

    In ``[0, 1]``: 1 when both sides rank neighbours alike, about ``k / (n - 1)`` for unrelated
    representations. Symmetric; invariant to orthogonal transforms and scaling of either side
    (and to positive scaling of each row); not to translation.

    Examples
    --------
    >>> X = np.random.default_rng(0).normal(size=(40, 5))
    >>> mutual_knn(X, 3 * X, k=5)
    1.0
    """
    pair = _check_pair(X, Y, measure="mutual k-NN", min_n=2)
    k = _check_positive_int(k, "k")
    block = _check_positive_int(block, "block")
    if k > pair.n - 1:
        raise MeasureInputError(
            f"k = {k} neighbours asked for but there are only {pair.n - 1} other instances",
            hint="lower k or pass more instances",
        )
    nx = _knn_cosine(pair.x, k, block)  # (n, k)
    ny = _knn_cosine(pair.y, k, block)  # (n, k)
    shared = (nx[:, :, None] == ny[:, None, :]).any(2).sum(1)  # (n,) |N_X(i) ∩ N_Y(i)|
    return float(shared.to(torch.float64).mean()) / k
