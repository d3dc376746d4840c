"""Representational similarity measures against naive n x n references, plus their properties."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.distance import pdist
from scipy.stats import pearsonr, spearmanr

from polyculture.errors import MeasureInputError
from polyculture.measure.similarity import (
    StreamingCKA,
    linear_cka,
    mutual_knn,
    procrustes_distance,
    pwcca,
    rbf_cka,
    rsa,
    svcca,
)

FAST = settings(max_examples=25, deadline=None)


def related(
    seed: int, n: int = 120, d1: int = 7, d2: int = 5, noise: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """``X`` and a noisy linear read-out ``Y`` of it, with non-zero means."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d1)) * rng.uniform(0.5, 2.0, d1) + rng.normal(size=d1)
    Y = X @ rng.normal(size=(d1, d2)) + noise * rng.normal(size=(n, d2)) + 3.0
    return X, Y


def orthogonal(seed: int, d: int) -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))[0]


# ---- naive references, written directly from the definitions with n x n matrices -------------


def gram_hsic_biased(K: np.ndarray, L: np.ndarray) -> float:
    n = len(K)
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(K @ H @ L @ H)) / (n - 1) ** 2


def gram_hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012), eq. 5: the U-statistic with zeroed diagonals."""
    n = len(K)
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    value = (
        np.trace(Kt @ Lt)
        + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)
    )
    return float(value) / (n * (n - 3))


def gram_cka(K: np.ndarray, L: np.ndarray, debiased: bool) -> float:
    hsic = gram_hsic_unbiased if debiased else gram_hsic_biased
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def dense_mutual_knn(X: np.ndarray, Y: np.ndarray, k: int) -> float:
    def neighbours(A: np.ndarray) -> list[set[int]]:
        Z = A / np.linalg.norm(A, axis=1, keepdims=True)
        S = Z @ Z.T
        np.fill_diagonal(S, -np.inf)
        return [set(row[:k]) for row in np.argsort(-S, axis=1)]

    nx, ny = neighbours(X), neighbours(Y)
    return float(np.mean([len(a & b) / k for a, b in zip(nx, ny, strict=True)]))


# ---- linear CKA --------------------------------------------------------------------------------


@FAST
@given(
    seed=st.integers(0, 10**6), n=st.integers(5, 60), d=st.integers(1, 12), debiased=st.booleans()
)
def test_cka_of_a_representation_with_itself_is_one(seed: int, n: int, d: int, debiased: bool):
    X = np.random.default_rng(seed).normal(size=(n, d))
    assert linear_cka(X, X, debiased=debiased) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("shape", [(50, 6, 4), (200, 3, 9), (12, 30, 20)])
def test_linear_cka_matches_naive_gram_computation(shape: tuple[int, int, int], debiased: bool):
    n, d1, d2 = shape
    X, Y = related(sum(shape), n, d1, d2)
    expected = gram_cka(X @ X.T, Y @ Y.T, debiased)
    assert linear_cka(X, Y, debiased=debiased) == pytest.approx(expected, abs=1e-6)
    assert linear_cka(X, Y, debiased=debiased) == pytest.approx(expected, rel=1e-9)


@FAST
@given(
    seed=st.integers(0, 10**6),
    scale=st.floats(1e-3, 1e3),
    shift=st.floats(-100, 100),
    debiased=st.booleans(),
)
def test_linear_cka_invariant_to_orthogonal_maps_and_isotropic_scaling(
    seed: int, scale: float, shift: float, debiased: bool
):
    X, Y = related(seed, n=60)
    base = linear_cka(X, Y, debiased=debiased)
    Qx, Qy = orthogonal(seed + 1, X.shape[1]), orthogonal(seed + 2, Y.shape[1])
    assert linear_cka(X @ Qx, Y, debiased=debiased) == pytest.approx(base, abs=1e-9)
    assert linear_cka(X, Y @ Qy, debiased=debiased) == pytest.approx(base, abs=1e-9)
    assert linear_cka(scale * X, Y, debiased=debiased) == pytest.approx(base, abs=1e-9)
    assert linear_cka(X, scale * Y + shift, debiased=debiased) == pytest.approx(base, abs=1e-9)
    assert linear_cka(Y, X, debiased=debiased) == pytest.approx(base, abs=1e-12)  # symmetric


def test_linear_cka_is_not_invariant_to_general_linear_maps():
    X, Y = related(0)
    A = np.diag(np.linspace(0.1, 10, X.shape[1]))
    assert abs(linear_cka(X @ A, Y) - linear_cka(X, Y)) > 1e-3


def test_linear_cka_range_and_unrelated_data():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(2000, 10)), rng.normal(size=(2000, 10))
    assert 0.0 <= linear_cka(X, Y) < 0.05
    assert abs(linear_cka(X, Y, debiased=True)) < 0.01  # the bias d/n is removed


def test_constant_columns_do_not_change_cka_even_when_large_in_float32():
    X, Y = related(3, n=400)
    padded = np.c_[X, np.full(len(X), 1e6), np.zeros(len(X))].astype(np.float32)
    for debiased in (False, True):
        expected = linear_cka(X, Y, debiased=debiased)
        assert linear_cka(padded, Y, debiased=debiased) == pytest.approx(expected, abs=1e-5)


# ---- streaming ---------------------------------------------------------------------------------


def stream(X: np.ndarray, Y: np.ndarray, cuts: list[int], **kwargs) -> StreamingCKA:
    accumulator = StreamingCKA(X.shape[1], Y.shape[1], **kwargs)
    bounds = [0, *sorted(set(cuts)), len(X)]
    for start, stop in pairwise(bounds):
        if stop > start:
            accumulator.update(X[start:stop], Y[start:stop])
    return accumulator


@FAST
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(4, 80),
    cuts=st.lists(st.integers(1, 79), max_size=8),
    offset=st.sampled_from([0.0, 1e4]),
)
def test_streaming_equals_one_shot(seed: int, n: int, cuts: list[int], offset: float):
    X, Y = related(seed, n=n)
    X = X + offset  # large common means: the first-batch shift keeps the sums accurate
    accumulator = stream(X, Y, [c for c in cuts if c < n])
    assert accumulator.n == n
    for debiased in (False, True):
        expected = linear_cka(X, Y, debiased=debiased)
        assert accumulator.result(debiased=debiased) == pytest.approx(expected, abs=1e-9)


def test_streaming_with_float32_batches_and_constant_columns():
    X, Y = related(4, n=500)
    X = np.c_[X, np.full(len(X), 7.0)]  # a constant column, constant in every batch too
    accumulator = stream(X.astype(np.float32), Y.astype(np.float32), [1, 2, 100, 333])
    for debiased in (False, True):
        expected = linear_cka(X, Y, debiased=debiased)
        assert accumulator.result(debiased=debiased) == pytest.approx(expected, abs=1e-6)


def test_streaming_never_writes_into_the_callers_batches():
    X, Y = related(5, n=50)
    for dtype in (torch.float64, torch.float32):
        Xt, Yt = torch.from_numpy(X).to(dtype), torch.from_numpy(Y).to(dtype)
        before = Xt.clone(), Yt.clone()
        accumulator = StreamingCKA(X.shape[1], Y.shape[1])
        accumulator.update(Xt[:20], Yt[:20])
        accumulator.update(Xt[20:], Yt[20:])
        assert torch.equal(Xt, before[0]) and torch.equal(Yt, before[1])
        assert accumulator.result() == pytest.approx(linear_cka(Xt, Yt), abs=1e-6)


def test_streaming_errors():
    accumulator = StreamingCKA(3, 2)
    with pytest.raises(MeasureInputError, match="at least 2 instances"):
        accumulator.result()
    with pytest.raises(MeasureInputError, match="has 4 columns but this StreamingCKA expects 3"):
        accumulator.update(np.ones((5, 4)), np.ones((5, 2)))
    accumulator.update(np.ones((3, 3)), np.arange(6.0).reshape(3, 2))
    with pytest.raises(MeasureInputError, match="at least 4 instances"):
        accumulator.result(debiased=True)
    with pytest.raises(MeasureInputError, match="X is constant"):
        accumulator.result()
    with pytest.raises(MeasureInputError, match="NaN"):
        accumulator.update(np.full((2, 3), np.nan), np.ones((2, 2)))


# ---- RBF CKA -----------------------------------------------------------------------------------


def naive_rbf_cka(X: np.ndarray, Y: np.ndarray, sigma: float) -> float:
    def kernel(A: np.ndarray) -> np.ndarray:
        distances = pdist(A)
        D2 = ((A[:, None, :] - A[None, :, :]) ** 2).sum(-1)
        return np.exp(-D2 / (2 * (sigma * np.median(distances)) ** 2))

    return gram_cka(kernel(X), kernel(Y), debiased=False)


def test_rbf_cka_matches_naive_computation_and_properties():
    X, Y = related(5, n=81)  # odd number of pairs
    assert rbf_cka(X, Y) == pytest.approx(naive_rbf_cka(X, Y, 0.8), abs=1e-9)
    assert rbf_cka(X[:80], Y[:80], sigma=0.5) == pytest.approx(
        naive_rbf_cka(X[:80], Y[:80], 0.5), abs=1e-9
    )
    assert rbf_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert rbf_cka(Y, X) == pytest.approx(rbf_cka(X, Y), abs=1e-12)
    Q = orthogonal(5, X.shape[1])
    assert rbf_cka(3 * X @ Q + 1, Y) == pytest.approx(rbf_cka(X, Y), abs=1e-9)


def test_rbf_cka_tends_to_linear_cka_for_large_sigma():
    X, Y = related(6, n=60)
    assert rbf_cka(X, Y, sigma=1000.0) == pytest.approx(linear_cka(X, Y), abs=1e-5)


def test_rbf_cka_refuses_large_n():
    X, Y = related(7, n=30)
    with pytest.raises(MeasureInputError, match="exceeds max_n = 20"):
        rbf_cka(X, Y, max_n=20)


# ---- SVCCA and PWCCA ---------------------------------------------------------------------------


def naive_cca(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical correlations and the X-side canonical variates, via QR of the centered data."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Qx, Qy = np.linalg.qr(Xc)[0], np.linalg.qr(Yc)[0]
    P, rho, _ = np.linalg.svd(Qx.T @ Qy)
    return rho, Qx @ P[:, : len(rho)], Xc


def test_svcca_and_pwcca_match_naive_cca():
    X, Y = related(8, n=300, d1=4, d2=6, noise=3.0)
    rho, variates, Xc = naive_cca(X, Y)
    assert svcca(X, Y, keep=1.0) == pytest.approx(rho.mean(), abs=1e-9)
    weights = np.abs(variates.T @ Xc).sum(1)  # Morcos et al.: Σ_j |<h_i, x_j>|
    assert pwcca(X, Y) == pytest.approx((weights * rho).sum() / weights.sum(), abs=1e-9)


@pytest.mark.parametrize("measure", [svcca, pwcca])
def test_cca_of_an_invertible_linear_map_is_one_and_of_noise_is_low(measure: Callable):
    rng = np.random.default_rng(9)
    X = rng.normal(size=(2000, 8))
    A = rng.normal(size=(8, 8)) + 3 * np.eye(8)
    assert measure(X, X @ A + 5) == pytest.approx(1.0, abs=1e-6)
    assert 0.0 <= measure(X, rng.normal(size=(2000, 8))) < 0.15
    Q = orthogonal(9, 8)
    Y = X @ rng.normal(size=(8, 6)) + rng.normal(size=(2000, 6))
    assert 0.0 <= measure(X, Y) <= 1.0
    assert measure(2 * X @ Q, Y) == pytest.approx(measure(X, Y), abs=1e-9)


def test_svcca_keeps_the_top_directions_and_drops_constant_columns():
    rng = np.random.default_rng(10)
    X = rng.normal(size=(500, 6)) * np.array([10, 8, 6, 0.01, 0.01, 0.01])
    # Y shares X's high-variance directions; its own low-variance ones are unrelated noise.
    Y = np.c_[X[:, :3] @ rng.normal(size=(3, 3)), 0.01 * rng.normal(size=(500, 3))]
    assert svcca(X, Y, keep=0.99) == pytest.approx(1.0, abs=1e-6)
    assert svcca(X, Y, keep=1.0) < 0.9
    assert svcca(Y, X) == pytest.approx(svcca(X, Y), abs=1e-9)  # symmetric
    X, Y = related(10, n=300, noise=2.0)
    padded = np.c_[X, np.full(len(X), 3.0)]
    assert svcca(padded, Y) == pytest.approx(svcca(X, Y), abs=1e-9)
    assert pwcca(padded, Y) == pytest.approx(pwcca(X, Y), abs=1e-9)


def test_cca_refuses_too_few_instances():
    X, Y = related(11, n=10, d1=6, d2=5)
    with pytest.raises(MeasureInputError, match="needs more instances than the kept dimensions"):
        pwcca(X, Y)
    with pytest.raises(MeasureInputError, match="keep must lie in"):
        svcca(X, Y, keep=0.0)


# ---- Procrustes --------------------------------------------------------------------------------


def test_procrustes_matches_scipy_orthogonal_procrustes():
    X, Y = related(12, n=80, d1=5, d2=5)
    Xn = (X - X.mean(0)) / np.linalg.norm(X - X.mean(0))
    Yn = (Y - Y.mean(0)) / np.linalg.norm(Y - Y.mean(0))
    R, _ = orthogonal_procrustes(Yn, Xn)
    assert procrustes_distance(X, Y) == pytest.approx(np.linalg.norm(Xn - Yn @ R), abs=1e-9)


def test_procrustes_zero_for_rotated_scaled_shifted_copy():
    X, _ = related(13)
    Q = orthogonal(13, X.shape[1])
    assert procrustes_distance(X, 4 * X @ Q - 2) < 1e-6
    assert procrustes_distance(X, X[:, :3]) > 0.01  # d1 != d2 is defined


@FAST
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(3, 30),
    dims=st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
    mix=st.floats(0.0, 1.0),
)
def test_procrustes_is_a_metric(seed: int, n: int, dims: tuple[int, int, int], mix: float):
    rng = np.random.default_rng(seed)
    X, Y, Z = (rng.normal(size=(n, d)) for d in dims)
    if dims[0] == dims[1]:
        Y = mix * X + (1 - mix) * Y  # also nearly equal pairs, where rounding matters most
    d_xy, d_yz, d_xz = (
        procrustes_distance(X, Y),
        procrustes_distance(Y, Z),
        procrustes_distance(X, Z),
    )
    assert d_xz <= d_xy + d_yz + 1e-7
    assert d_xy <= d_xz + d_yz + 1e-7
    assert procrustes_distance(Y, X) == pytest.approx(d_xy, abs=1e-7)
    assert 0.0 <= d_xy <= np.sqrt(2) + 1e-12


# ---- RSA ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["correlation", "euclidean"])
@pytest.mark.parametrize("compare", ["spearman", "pearson"])
def test_rsa_matches_scipy(metric: str, compare: str):
    X, Y = related(14, n=50, noise=2.0)
    correlate = spearmanr if compare == "spearman" else pearsonr
    expected = correlate(pdist(X, metric), pdist(Y, metric))[0]
    assert rsa(X, Y, metric=metric, compare=compare) == pytest.approx(expected, abs=1e-9)
    assert rsa(X, 2 * X + 1, metric=metric, compare=compare) == pytest.approx(1.0, abs=1e-9)
    assert rsa(Y, X, metric=metric, compare=compare) == pytest.approx(expected, abs=1e-9)


def test_rsa_spearman_handles_ties_and_subsamples_large_n():
    X = np.random.default_rng(15).integers(0, 3, size=(40, 2)).astype(float)  # many tied distances
    Y = X + np.random.default_rng(16).normal(size=X.shape)
    expected = spearmanr(pdist(X, "euclidean"), pdist(Y, "euclidean"))[0]
    assert rsa(X, Y, metric="euclidean") == pytest.approx(expected, abs=1e-9)
    X, Y = related(17, n=300)
    rows = np.sort(np.random.default_rng(3).choice(300, size=100, replace=False))
    assert rsa(X, Y, max_n=100, seed=3) == pytest.approx(rsa(X[rows], Y[rows]), abs=1e-12)


def test_rsa_correlation_refuses_constant_rows():
    with pytest.raises(MeasureInputError, match="rows of X are constant across features"):
        rsa(np.arange(10.0)[:, None], np.random.default_rng(0).normal(size=(10, 3)))


# ---- mutual k-NN -------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [1, 7, 64, 1024])
def test_mutual_knn_blocked_equals_dense_reference(block: int):
    X, Y = related(18, n=150, noise=1.0)
    expected = dense_mutual_knn(X, Y, k=5)
    assert 0.1 < expected < 0.9  # a non-trivial case
    assert mutual_knn(X, Y, k=5, block=block) == pytest.approx(expected, abs=1e-12)


def test_mutual_knn_of_itself_is_one_and_symmetric():
    X, Y = related(19, n=100)
    assert mutual_knn(X, X) == 1.0
    assert mutual_knn(X, 3 * X @ orthogonal(19, X.shape[1])) == 1.0
    assert mutual_knn(Y, X) == mutual_knn(X, Y)


def test_mutual_knn_of_independent_data_is_near_chance():
    rng = np.random.default_rng(20)
    n, k = 1000, 10
    score = mutual_knn(rng.normal(size=(n, 20)), rng.normal(size=(n, 20)), k=k)
    # Each |N_X(i) ∩ N_Y(i)| has mean k²/(n-1) and variance below that; a 6-sd band on the mean
    # (doubled for the dependence between instances) around k/(n-1).
    chance = k / (n - 1)
    assert abs(score - chance) < 6 * np.sqrt(2 * k**2 / (n - 1) / n) / k


def test_mutual_knn_refuses_k_too_large():
    X, Y = related(21, n=5)
    with pytest.raises(MeasureInputError, match="only 4 other instances"):
        mutual_knn(X, Y, k=5)


# ---- input checks shared by every measure ------------------------------------------------------

MEASURES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "linear_cka": linear_cka,
    "debiased_cka": lambda X, Y: linear_cka(X, Y, debiased=True),
    "rbf_cka": rbf_cka,
    "svcca": svcca,
    "pwcca": pwcca,
    "procrustes": procrustes_distance,
    "rsa": rsa,
    "mutual_knn": lambda X, Y: mutual_knn(X, Y, k=3),
}


@pytest.fixture(params=sorted(MEASURES))
def measure(request: pytest.FixtureRequest) -> Callable[[np.ndarray, np.ndarray], float]:
    return MEASURES[request.param]


def test_row_count_mismatch(measure: Callable):
    X, Y = related(22, n=40)
    with pytest.raises(MeasureInputError, match="X has 40 rows but Y has 39") as info:
        measure(X, Y[:39])
    assert "same instances" in str(info.value)


def test_too_few_rows(measure: Callable):
    with pytest.raises(MeasureInputError, match="needs at least"):
        measure(np.ones((1, 3)), np.ones((1, 2)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf(measure: Callable, bad: float):
    X, Y = related(23, n=40)
    Y[[3, 7], 1] = bad
    kind = "NaN" if np.isnan(bad) else "infinite"
    with pytest.raises(
        MeasureInputError, match=rf"Y holds 2 {kind} values \(in 2 of its 40 rows: 3, 7\)"
    ):
        measure(X, Y)


def test_constant_representation(measure: Callable):
    X, Y = related(24, n=40)
    with pytest.raises(MeasureInputError, match="X is constant"):
        measure(np.full_like(X, 2.5), Y)


def test_one_dimensional_input(measure: Callable):
    X, Y = related(25, n=40)
    with pytest.raises(MeasureInputError, match=r"X must be 2-D .*got shape \(40,\)"):
        measure(X[:, 0], Y)


def test_non_numeric_input():
    with pytest.raises(MeasureInputError, match="not a real number type"):
        linear_cka(np.array([["a", "b"], ["c", "d"]]), np.ones((2, 2)))


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        linear_cka(np.ones((3, 2)), np.ones((4, 2)))


# ---- dtypes, torch inputs, devices -------------------------------------------------------------


def test_float32_float64_int_and_torch_inputs_agree(measure: Callable):
    X, Y = related(26, n=60, d1=4, d2=3)
    reference = measure(X, Y)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    assert measure(X32, Y32) == pytest.approx(reference, abs=1e-4)
    assert measure(torch.from_numpy(X), torch.from_numpy(Y)) == pytest.approx(reference, abs=1e-12)
    assert measure(torch.from_numpy(X32), Y) == pytest.approx(reference, abs=1e-4)  # promoted
    assert measure(X[::-1][::-1], np.asfortranarray(Y)) == pytest.approx(reference, abs=1e-12)
    Y_int = np.round(Y)
    assert measure(X, Y_int.astype(np.int64)) == pytest.approx(measure(X, Y_int), abs=1e-12)


def test_float32_stays_float32_for_speed_but_returns_a_float():
    X, Y = related(27, n=200)
    value = linear_cka(X.astype(np.float32), Y.astype(np.float32))
    assert isinstance(value, float)
    assert value == pytest.approx(linear_cka(X, Y), abs=1e-5)


def test_tensors_requiring_grad_are_accepted():
    X, Y = related(28)
    Xt = torch.from_numpy(X).requires_grad_()
    assert linear_cka(Xt, Y) == pytest.approx(linear_cka(X, Y), abs=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_tensors_run_on_the_gpu(measure: Callable):
    X, Y = related(29, n=60, d1=4, d2=3)
    reference = measure(X, Y)
    Xg, Yg = torch.from_numpy(X).cuda(), torch.from_numpy(Y).cuda()
    assert measure(Xg, Yg) == pytest.approx(reference, abs=1e-9)
    assert measure(Xg, Y) == pytest.approx(reference, abs=1e-9)  # NumPy follows the tensor
    accumulator = StreamingCKA(4, 3)
    accumulator.update(Xg[:30], Yg[:30])
    accumulator.update(Xg[30:], Yg[30:])
    assert accumulator.device == Xg.device
    assert accumulator.result(debiased=True) == pytest.approx(
        linear_cka(X, Y, debiased=True), abs=1e-9
    )
