"""The training loop: determinism, early stopping, best-weight restore, divergence handling."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from polyculture.data import DataSpec, Split, Task, build_task
from polyculture.train import TrainSpec, evaluate_loss, fit, train_member
from polyculture.zoo import ModelSpec, create_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits() -> Task:
    return build_task(DataSpec(name="digits"))


def train_once(
    task: Task, seed: int, spec: TrainSpec
) -> tuple[dict[str, torch.Tensor], pd.DataFrame]:
    torch.manual_seed(seed)
    model = create_model(
        ModelSpec(family="mlp", params={"width": 32}), task.input_shape, 10, "image"
    )
    outcome = fit(model, task.train, task.val, "image", spec, seed, CPU)
    return model.state_dict(), outcome.history


def test_same_seed_same_weights(digits: Task) -> None:
    spec = TrainSpec(epochs=3, batch_size=64, lr=0.01, augment={"noise": 0.1, "translate": 1})
    a_state, a_hist = train_once(digits, 7, spec)
    b_state, b_hist = train_once(digits, 7, spec)
    assert all(torch.equal(a_state[k], b_state[k]) for k in a_state)
    columns = ["train_loss", "val_loss", "val_accuracy", "lr"]
    pd.testing.assert_frame_equal(a_hist[columns], b_hist[columns])
    c_state, _ = train_once(digits, 8, spec)
    assert not all(torch.equal(a_state[k], c_state[k]) for k in a_state)


def test_best_epoch_weights_are_restored(digits: Task) -> None:
    torch.manual_seed(0)
    model = create_model(
        ModelSpec(family="mlp", params={"width": 64}), digits.input_shape, 10, "image"
    )
    spec = TrainSpec(epochs=12, batch_size=32, lr=0.05, schedule="constant")
    outcome = fit(model, digits.train, digits.val, "image", spec, 0, CPU)
    history = outcome.history
    assert outcome.best_epoch == int(history.loc[history["val_loss"].idxmin(), "epoch"])
    val_loss, _ = evaluate_loss(model, digits.val, CPU)
    assert val_loss == pytest.approx(history["val_loss"].min(), rel=1e-5)


def test_early_stopping_and_max_steps(digits: Task) -> None:
    torch.manual_seed(0)
    model = create_model(ModelSpec(family="mlp"), digits.input_shape, 10, "image")
    spec = TrainSpec(
        epochs=40, batch_size=32, lr=0.3, schedule="constant", patience=2, optimizer="sgd"
    )
    outcome = fit(model, digits.train, digits.val, "image", spec, 0, CPU)
    assert outcome.stopped_early and len(outcome.history) < 40
    stale = outcome.history["epoch"].iloc[-1] - outcome.best_epoch
    assert stale == 2
    capped = fit(model, digits.train, digits.val, "image", TrainSpec(epochs=5, max_steps=7), 0, CPU)
    assert capped.steps == 7


def exploding_task() -> Task:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, generator=g) * 3e38  # finite inputs whose activations overflow
    y = torch.arange(64) % 2
    split = Split(x, y)
    return Task("boom", "sequence", ("a", "b"), split, split, split)


def test_divergence_is_a_failed_member_not_a_crash() -> None:
    result = train_member(exploding_task(), ModelSpec(family="mlp"), TrainSpec(epochs=2), seed=0)
    assert result.status == "failed"
    assert "lower train.lr" in result.reason or "non-finite" in result.reason
    assert result.weights is None and result.representations == {}


def test_member_outputs(digits: Task) -> None:
    result = train_member(
        digits,
        ModelSpec(family="cnn", params={"width": 8, "depth": 2}),
        TrainSpec(epochs=2),
        seed=0,
        probe_size=50,
    )
    assert result.status == "ok"
    assert set(result.probabilities) == {
        "val",
        "test",
        "test_noise",
        "test_translate",
        "test_rotate",
    }
    for name, proba in result.probabilities.items():
        split = dict(digits.eval_splits())[name]
        assert proba.shape == (len(split), 10)
        assert abs(proba.sum(1) - 1).max() < 1e-5
    assert list(result.representations)[-1] == "logits"
    assert all(v.shape[0] == 50 for v in result.representations.values())
    assert result.n_parameters > 0 and result.weights is not None and len(result.history) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_trains_on_gpu_when_present(digits: Task) -> None:
    result = train_member(
        digits, ModelSpec(family="mlp"), TrainSpec(epochs=1), seed=0, device="cuda"
    )
    assert result.status == "ok" and result.probabilities["test"].shape == (450, 10)
