"""Contrastive pretraining: the NT-Xent loss, the sequence views, the loop, and the tuned recipe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from polyculture.data import DataSpec, Task, build_task
from polyculture.errors import ConfigError
from polyculture.train.loop import DivergenceError
from polyculture.train.pretrain import (
    PretrainSpec,
    SequenceViews,
    linear_probe_accuracy,
    make_view,
    nt_xent_loss,
    pretrain_contrastive,
    sequence_view,
)
from polyculture.zoo import ModelSpec, ZooModel, create_model

CPU = torch.device("cpu")
#: Every view augmentation off; tests switch on one at a time.
NO_VIEWS = SequenceViews(crop=0, shift=0, scale=0, shear=0, noise=0, corr_noise=0)


def naive_nt_xent(z1: np.ndarray, z2: np.ndarray, temperature: float) -> float:
    """NT-Xent written out per anchor as in Chen et al. (2020), Algorithm 1, in float64."""
    views = [*z1, *z2]
    n = len(z1)

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    total = 0.0
    for i, anchor in enumerate(views):
        partner = (i + n) % (2 * n)
        denominator = sum(
            math.exp(cosine(anchor, other) / temperature) for k, other in enumerate(views) if k != i
        )
        total += -math.log(math.exp(cosine(anchor, views[partner]) / temperature) / denominator)
    return total / (2 * n)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 6),
    d=st.integers(1, 5),
    temperature=st.floats(0.05, 2.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_nt_xent_matches_naive_reference(n: int, d: int, temperature: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    z1, z2 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    z1[np.linalg.norm(z1, axis=1) < 1e-3] += 1.0  # cosine similarity needs non-zero vectors
    z2[np.linalg.norm(z2, axis=1) < 1e-3] += 1.0
    got = nt_xent_loss(torch.tensor(z1), torch.tensor(z2), temperature)
    assert float(got) == pytest.approx(naive_nt_xent(z1, z2, temperature), rel=1e-6, abs=1e-9)


def test_nt_xent_closed_form_for_orthonormal_views() -> None:
    # Positives have similarity 1, the 2N - 2 negatives similarity 0.
    n, t = 5, 0.3
    z = torch.eye(n) * 3.0  # scale must not matter: the loss uses cosine similarity
    expected = -1 / t + math.log(math.exp(1 / t) + 2 * n - 2)
    assert float(nt_xent_loss(z, z, t)) == pytest.approx(expected, rel=1e-5)


def views_for(seed: int, x: torch.Tensor, spec: PretrainSpec) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return make_view(x, "sequence", spec, generator), make_view(x, "sequence", spec, generator)


def test_views_are_deterministic_and_differ() -> None:
    x = torch.randn(16, 1, 40, generator=torch.Generator().manual_seed(3))
    spec = PretrainSpec()
    a1, a2 = views_for(0, x, spec)
    b1, b2 = views_for(0, x, spec)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.allclose(a1, a2, atol=1e-3)
    assert not torch.allclose(views_for(1, x, spec)[0], a1, atol=1e-3)
    assert not torch.equal(a1, x) and a1.shape == x.shape


def test_each_sequence_view_does_what_it_says() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 2, 40, generator=g)
    assert torch.equal(sequence_view(x, NO_VIEWS, g), x)

    # Circular shift: each row is a rotation of itself, the same for every channel.
    shifted = sequence_view(x, NO_VIEWS.model_copy(update={"shift": 5}), g)
    for row, out in zip(x, shifted, strict=True):
        matches = [k for k in range(-5, 6) if torch.equal(torch.roll(row, k, -1), out)]
        assert len(matches) == 1

    # Zero-fill shift: the values that remain are a contiguous run of the original.
    zero_fill = NO_VIEWS.model_copy(update={"shift": 5, "circular": False})
    out = sequence_view(x, zero_fill, g)
    for row, view in zip(x, out, strict=True):
        k = next(
            k
            for k in range(-5, 6)
            if torch.equal(view[:, max(k, 0) : 40 + min(k, 0)], row[:, max(-k, 0) : 40 - max(k, 0)])
        )
        assert torch.all(view[:, : max(k, 0)] == 0) and torch.all(view[:, 40 + min(k, 0) :] == 0)

    # Amplitude: one factor per example within [1 - s, 1 + s].
    ratio = sequence_view(x, NO_VIEWS.model_copy(update={"scale": 0.3}), g) / x
    assert torch.allclose(ratio, ratio[:, :1, :1].expand_as(ratio), atol=1e-5)
    assert ratio.min() >= 0.7 - 1e-6 and ratio.max() <= 1.3 + 1e-6

    # Shear: the added part is a straight line through zero at the centre, slope <= shear.
    added = sequence_view(x, NO_VIEWS.model_copy(update={"shear": 0.5}), g) - x
    slope = added[:, :, -1] - added[:, :, 0]  # (n, C)
    line = slope.unsqueeze(-1) * torch.linspace(-0.5, 0.5, 40)
    assert torch.allclose(added, line, atol=1e-5) and slope.abs().max() <= 0.5 + 1e-6

    # Crop-and-resize: a constant stays constant, and a ramp stays monotone and in range.
    crop = NO_VIEWS.model_copy(update={"crop": 0.5})
    ramp = torch.linspace(0, 1, 40).expand(32, 1, 40)
    stretched = sequence_view(ramp, crop, g)
    assert torch.all(stretched.diff(dim=-1) > 0)
    span = stretched[..., -1] - stretched[..., 0]
    assert span.min() >= 0.5 - 1e-5 and span.max() <= 1 + 1e-5
    assert torch.allclose(sequence_view(torch.ones(4, 1, 40), crop, g), torch.ones(4, 1, 40))

    # Correlated noise: the right scale, and neighbours correlated unlike i.i.d. noise.
    zeros = torch.zeros(400, 1, 40)
    noise = sequence_view(zeros, NO_VIEWS.model_copy(update={"corr_noise": 0.4}), g)
    assert float(noise.std()) == pytest.approx(0.4, rel=0.05)
    lag1 = float(
        torch.corrcoef(torch.stack([noise[..., :-1].flatten(), noise[..., 1:].flatten()]))[0, 1]
    )
    assert lag1 > 0.8
    iid = sequence_view(zeros, NO_VIEWS.model_copy(update={"noise": 0.4}), g)
    assert float(iid.std()) == pytest.approx(0.4, rel=0.05)


def test_text_inputs_have_no_views() -> None:
    with pytest.raises(ConfigError, match="text"):
        make_view(torch.zeros(2, 5, dtype=torch.long), "text", PretrainSpec(), torch.Generator())


@pytest.fixture(scope="module")
def small_mnist1d() -> Task:
    return build_task(DataSpec(name="mnist1d", options={"num_samples": 400}))


def small_cnn(seed: int) -> ZooModel:
    torch.manual_seed(seed)
    model = create_model(
        ModelSpec(family="cnn", params={"width": 32, "depth": 3}), (1, 40), 10, "sequence"
    )
    assert isinstance(model, ZooModel)
    return model


def test_loss_decreases_and_training_is_deterministic(small_mnist1d: Task) -> None:
    spec = PretrainSpec(epochs=8, batch_size=64)
    x = small_mnist1d.train.x  # (288, 1, 40): labels are never used
    rows: list[dict[str, float]] = []
    first = small_cnn(0)
    outcome = pretrain_contrastive(first, x, "sequence", spec, 0, CPU, on_epoch=rows.append)
    losses = outcome.history["loss"].to_numpy()
    assert list(outcome.history["epoch"]) == list(range(1, 9)) and len(rows) == 8
    assert outcome.layer == "hidden" and outcome.steps == 8 * (len(x) // 64)
    assert losses[-1] < losses[0] - 0.3
    # Chance level of NT-Xent is log(2b - 1); a trained head must beat it clearly.
    assert losses[-1] < math.log(2 * 64 - 1) - 0.5

    second = small_cnn(0)
    again = pretrain_contrastive(second, x, "sequence", spec, 0, CPU)
    np.testing.assert_array_equal(again.history["loss"].to_numpy(), losses)
    state, state_again = first.state_dict(), second.state_dict()
    assert all(torch.equal(state[k], state_again[k]) for k in state)
    other_seed = pretrain_contrastive(small_cnn(0), x, "sequence", spec, 1, CPU)
    assert not np.array_equal(other_seed.history["loss"].to_numpy(), losses)


def test_layer_choice_and_errors() -> None:
    x = torch.randn(32, 1, 40, generator=torch.Generator().manual_seed(0))
    spec = PretrainSpec(epochs=1, batch_size=16, layer="block2")
    model = small_cnn(0)
    before = model.state_dict()["blocks.2.0.weight"].clone()
    out = pretrain_contrastive(model, x, "sequence", spec, 0, CPU)
    assert out.layer == "block2"
    # Layers after the feature get no gradient, so they keep their initial weights.
    assert torch.equal(model.state_dict()["blocks.2.0.weight"], before)
    with pytest.raises(ConfigError, match="nope"):
        pretrain_contrastive(small_cnn(0), x, "sequence", PretrainSpec(layer="nope"), 0, CPU)
    bad = x.clone()
    bad[0, 0, 0] = math.nan
    with pytest.raises(DivergenceError, match="epoch 1"):
        pretrain_contrastive(
            small_cnn(0), bad, "sequence", spec.model_copy(update={"layer": None}), 0, CPU
        )


def test_image_and_tabular_views_pretrain() -> None:
    g = torch.Generator().manual_seed(0)
    for family, shape, modality in (
        ("cnn", (1, 8, 8), "image"),
        ("mlp", (6,), "tabular"),
    ):
        x = torch.randn(32, *shape, generator=g)
        torch.manual_seed(0)
        model = create_model(ModelSpec(family=family), shape, 3, modality)
        assert isinstance(model, ZooModel)
        spec = PretrainSpec(epochs=2, batch_size=16)
        view = make_view(x, modality, spec, torch.Generator().manual_seed(0))
        assert view.shape == x.shape and not torch.equal(view, x)
        out = pretrain_contrastive(model, x, modality, spec, 0, CPU)
        assert np.isfinite(out.history["loss"]).all()


@pytest.mark.slow
def test_tuned_recipe_reaches_published_linear_probe_accuracy() -> None:
    task = build_task(DataSpec(name="mnist1d"))
    spec = ModelSpec(family="cnn", params={"width": 64, "depth": 3})
    torch.manual_seed(0)
    model = create_model(spec, task.input_shape, task.num_classes, task.modality)
    assert isinstance(model, ZooModel)
    outcome = pretrain_contrastive(model, task.train.x, task.modality, PretrainSpec(), 0, CPU)
    pretrained = linear_probe_accuracy(model, outcome.layer, task.train, task.test, CPU)

    torch.manual_seed(0)
    untrained = create_model(spec, task.input_shape, task.num_classes, task.modality)
    assert isinstance(untrained, ZooModel)
    baseline = linear_probe_accuracy(untrained, outcome.layer, task.train, task.test, CPU)
    # Measured: 0.898 pretrained vs 0.572 random (seed 0).
    assert pretrained >= 0.80
    assert baseline <= pretrained - 0.15
