"""Tests of the model zoo: every registered family against the one interface (timm style)."""

from __future__ import annotations

import types
import typing

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from polyculture.errors import ConfigError, DataError, RegistryError
from polyculture.zoo import (
    FAMILIES,
    ClassicalModel,
    ModelSpec,
    ZooModel,
    count_parameters,
    create_model,
    resolve_knobs,
)
from polyculture.zoo.seed_cnn import SeedCNN

NUM_CLASSES = 4
SHAPES: dict[str, list[tuple[int, ...]]] = {
    "sequence": [(1, 40)],
    "image": [(1, 12, 12), (1, 28, 28)],
    "tabular": [(7,)],
}
# The small shape per modality, for tests that train.
SMALL: dict[str, tuple[int, ...]] = {"sequence": (1, 40), "image": (1, 12, 12), "tabular": (7,)}


def _cases(kind: str | None = None, shapes: str = "all") -> list[typing.Any]:
    """(family, modality, input_shape) for every family x modality it declares."""
    cases = []
    for name in FAMILIES.names():
        fam = FAMILIES.get(name)
        if kind is not None and fam.kind != kind:
            continue
        for modality in sorted(fam.modalities):
            if modality not in SHAPES:
                continue  # text takes token ids and a vocabulary: tests/test_zoo_text.py
            chosen = SHAPES[modality] if shapes == "all" else [SMALL[modality]]
            for shape in chosen:
                label = f"{name}-{modality}-{'x'.join(map(str, shape))}"
                cases.append(pytest.param(name, modality, shape, id=label))
    return cases


def _int_knobs(name: str) -> list[str]:
    """Knobs of ``name`` whose type is ``int`` or ``int | None``."""
    out = []
    for knob, info in FAMILIES.get(name).knobs.model_fields.items():
        ann = info.annotation
        args = typing.get_args(ann) if isinstance(ann, types.UnionType) else (ann,)
        if int in args and bool not in args:
            out.append(knob)
    return out


def _separable(
    shape: tuple[int, ...], n: int = 32, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes whose inputs differ by a constant offset: trivially separable."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2  # (n,)
    offset = (2.0 * y - 1.0).view(n, *([1] * len(shape)))  # (n, 1, ...)
    x = 0.3 * torch.randn(n, *shape, generator=gen) + offset  # (n, *shape)
    return x, y


def _data_with_missing_class(shape: tuple[int, ...], n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs with labels 0, 1, 3: class 2 never appears in training."""
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 3])[np.arange(n) % 3]
    x = rng.normal(size=(n, *shape)).astype(np.float32) + y.reshape(n, *([1] * len(shape)))
    return x, y


def test_registry_holds_the_built_in_families() -> None:
    expected = {"linear", "mlp", "cnn", "lstm", "gru", "transformer", "seed_cnn"}
    expected |= {"logreg", "random_forest", "knn"}
    assert expected <= set(FAMILIES.names())


@pytest.mark.parametrize(("name", "modality", "shape"), _cases())
def test_family_contract(name: str, modality: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = create_model(ModelSpec(family=name), shape, NUM_CLASSES, modality)  # type: ignore[arg-type]
    n = 5
    if FAMILIES.get(name).kind == "torch":
        assert isinstance(model, ZooModel)
        assert count_parameters(model) > 0  # known right after construction
        model.eval()
        x = torch.randn(n, *shape)
        with torch.no_grad():
            logits = model(x)
            reps = model.representations(x)
        assert logits.shape == (n, NUM_CLASSES)
        assert logits.dtype == torch.float32
        assert torch.isfinite(logits).all()
        assert list(reps)[-1] == "logits"
        assert all(v.dim() == 2 and v.shape[0] == n for v in reps.values()), {
            k: tuple(v.shape) for k, v in reps.items()
        }
        torch.testing.assert_close(reps["logits"], logits)
        blocks = [k for k in reps if k.startswith("block")]
        assert blocks == [f"block{i}" for i in range(1, len(blocks) + 1)]
        assert set(reps) - set(blocks) <= {"hidden", "logits"}
    else:
        assert isinstance(model, ClassicalModel)
        x_train, y_train = _data_with_missing_class(shape)
        model.fit(x_train, y_train, seed=0)
        assert model.n_parameters > 0
        x_np = np.random.default_rng(1).normal(size=(n, *shape)).astype(np.float32)
        proba = model.predict_proba(x_np)
        assert proba.shape == (n, NUM_CLASSES)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
        assert np.all(proba[:, 2] == 0.0)  # the class never seen in training
        reps_np = model.representations(x_np)
        assert reps_np and all(v.ndim == 2 and v.shape[0] == n for v in reps_np.values())
        np.testing.assert_allclose(reps_np["proba"], proba)


@pytest.mark.parametrize("name", FAMILIES.names())
def test_knobs_defaults_unknown_and_negative(name: str) -> None:
    fam = FAMILIES.get(name)
    assert resolve_knobs(ModelSpec(family=name)) == fam.knobs()
    with pytest.raises(ConfigError, match="not_a_knob"):
        resolve_knobs(ModelSpec(family=name, params={"not_a_knob": 1}))
    for knob in _int_knobs(name):
        with pytest.raises(ConfigError, match=knob):
            resolve_knobs(ModelSpec(family=name, params={knob: -1}))
    if name in {"mlp", "cnn", "lstm", "gru", "transformer"}:
        assert {"width", "depth"} <= set(_int_knobs(name))
        with pytest.raises(ConfigError):
            resolve_knobs(ModelSpec(family=name, params={"width": 0}))


@pytest.mark.parametrize("name", FAMILIES.names())
def test_unsupported_modality_is_a_config_error(name: str) -> None:
    fam = FAMILIES.get(name)
    for modality in sorted(set(SMALL) - fam.modalities):
        with pytest.raises(ConfigError, match=name):
            create_model(ModelSpec(family=name), SMALL[modality], NUM_CLASSES, modality)  # type: ignore[arg-type]


def test_unknown_family_suggests_close_match() -> None:
    with pytest.raises(RegistryError, match="did you mean 'gru'"):
        create_model(ModelSpec(family="gruu"), (1, 40), NUM_CLASSES, "sequence")


def test_wrong_input_shape_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="input shape"):
        create_model(ModelSpec(family="cnn"), (40,), NUM_CLASSES, "sequence")
    with pytest.raises(ConfigError, match="4x4"):
        create_model(ModelSpec(family="seed_cnn"), (1, 3, 3), NUM_CLASSES, "image")


def test_transformer_width_must_divide_into_heads() -> None:
    with pytest.raises(ConfigError, match="divisible by heads"):
        resolve_knobs(ModelSpec(family="transformer", params={"width": 66, "heads": 4}))
    assert resolve_knobs(ModelSpec(family="transformer", params={"width": 66, "heads": 3}))


def test_cnn_kernel_must_be_odd() -> None:
    with pytest.raises(ConfigError, match="odd"):
        resolve_knobs(ModelSpec(family="cnn", params={"kernel_size": 4}))


@pytest.mark.parametrize(("name", "modality", "shape"), _cases(kind="torch", shapes="small"))
def test_few_steps_reduce_loss(name: str, modality: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = create_model(ModelSpec(family=name), shape, NUM_CLASSES, modality)  # type: ignore[arg-type]
    assert isinstance(model, nn.Module)
    x, y = _separable(shape)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_same_seed_same_weights() -> None:
    states = []
    for _ in range(2):
        torch.manual_seed(3)
        model = create_model(ModelSpec(family="transformer"), (7,), NUM_CLASSES, "tabular")
        assert isinstance(model, nn.Module)
        states.append(model.state_dict())
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key


def test_seed_cnn_structure() -> None:
    model = create_model(ModelSpec(family="seed_cnn"), (1, 28, 28), 10, "image")
    assert isinstance(model, SeedCNN)
    kinds = [type(m) for m in model.net]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    conv, pool, fc1, fc2 = model.net[0], model.net[2], model.net[4], model.net[6]
    assert isinstance(conv, nn.Conv2d) and isinstance(pool, nn.MaxPool2d)
    assert isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)
    assert (conv.in_channels, conv.out_channels) == (1, 32)
    assert conv.kernel_size == (3, 3) and conv.padding == (0, 0) and conv.stride == (1, 1)
    assert pool.kernel_size == 2
    assert (fc1.in_features, fc1.out_features) == (32 * 13 * 13, 64)
    assert (fc2.in_features, fc2.out_features) == (64, 10)
    reps = model.representations(torch.zeros(2, 1, 28, 28))
    assert {k: tuple(v.shape) for k, v in reps.items()} == {
        "block1": (2, 512),
        "hidden": (2, 64),
        "logits": (2, 10),
    }


def test_architecture_details() -> None:
    # MNIST-1D CNN: three stride-2 convolutions take length 40 to 5, so the head reads 32 * 5.
    cnn = create_model(ModelSpec(family="cnn"), (1, 40), 10, "sequence")
    assert cnn.head.in_features == 32 * 5  # type: ignore[union-attr]
    # Readout "last": the head reads the last layer's final state.
    gru = create_model(
        ModelSpec(family="gru", params={"depth": 2, "readout": "last"}), (1, 40), 10, "sequence"
    )
    assert isinstance(gru, ZooModel)
    reps = gru.representations(torch.randn(3, 1, 40))
    assert list(reps) == ["block1", "block2", "hidden", "logits"]
    torch.testing.assert_close(reps["hidden"], reps["block2"])
    assert reps["hidden"].shape == (3, 2 * 32)
    # Transformer: lengths / sides that are not multiples of the patch are zero-padded.
    for shape, modality in (((2, 41), "sequence"), ((3, 13, 10), "image")):
        tf = create_model(ModelSpec(family="transformer"), shape, 10, modality)  # type: ignore[arg-type]
        assert isinstance(tf, ZooModel)
        assert tf(torch.randn(2, *shape)).shape == (2, 10)


def test_classical_details() -> None:
    x, y = _data_with_missing_class((5,), n=30)
    logreg = create_model(ModelSpec(family="logreg"), (5,), NUM_CLASSES, "tabular")
    assert isinstance(logreg, ClassicalModel)
    logreg.fit(x, y, seed=0)
    reps = logreg.representations(x)
    assert list(reps) == ["logits", "proba"]
    # softmax of the logits gives the probabilities (absent classes get ~0).
    np.testing.assert_allclose(
        torch.softmax(torch.from_numpy(reps["logits"]), 1).numpy(), reps["proba"], atol=1e-6
    )
    assert logreg.n_parameters == 3 * 5 + 3  # coefficients + intercepts of the 3 seen classes
    knn = create_model(ModelSpec(family="knn"), (5,), NUM_CLASSES, "tabular")
    assert isinstance(knn, ClassicalModel)
    assert knn.fit(x, y, seed=0).n_parameters == 30 * 5
    forest = create_model(ModelSpec(family="random_forest"), (5,), NUM_CLASSES, "tabular")
    assert isinstance(forest, ClassicalModel)
    a = forest.fit(x, y, seed=7).predict_proba(x)
    np.testing.assert_array_equal(a, forest.fit(x, y, seed=7).predict_proba(x))
    with pytest.raises(DataError):
        forest.fit(x, np.zeros(30, dtype=np.int64), seed=0)  # one class only
    with pytest.raises(DataError):
        forest.fit(x, np.full(30, NUM_CLASSES), seed=0)  # label out of range
