"""Adversarial attacks, robust accuracy and adversarial training.

The headline test trains a standard and an adversarially trained CNN on sklearn's digits and shows
that PGD breaks the first and that adversarial training buys robustness at the same radius.
"""

from __future__ import annotations

import pydantic
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from polyculture.data import DataSpec, Split, Task, build_task
from polyculture.errors import ConfigError
from polyculture.train.adversarial import fgsm, input_scale, pgd, robust_accuracy
from polyculture.train.loop import evaluate_loss, fit
from polyculture.train.spec import AdversarialSpec, TrainSpec
from polyculture.zoo import ModelSpec, ZooModel, create_model

CPU = torch.device("cpu")
EPSILON = 0.3  # relative radius of the twin test: 0.3 standard deviations of the pixels
CNN = ModelSpec(family="cnn", params={"width": 32, "depth": 2})
TWIN_TRAIN = TrainSpec(epochs=20, batch_size=64, lr=3e-3)


@pytest.fixture(scope="module")
def digits() -> Task:
    return build_task(DataSpec(name="digits"))


def train_cnn(task: Task, spec: TrainSpec, seed: int = 0) -> ZooModel:
    torch.manual_seed(seed)
    model = create_model(CNN, task.input_shape, task.num_classes, task.modality)
    assert isinstance(model, ZooModel)
    fit(model, task.train, task.val, task.modality, spec, seed, CPU)
    return model


@pytest.fixture(scope="module")
def standard_cnn(digits: Task) -> ZooModel:
    return train_cnn(digits, TWIN_TRAIN)


@pytest.fixture(scope="module")
def robust_cnn(digits: Task) -> ZooModel:
    adversarial = AdversarialSpec(method="pgd", epsilon=EPSILON, steps=3)
    return train_cnn(digits, TWIN_TRAIN.model_copy(update={"adversarial": adversarial}))


def test_adversarial_training_buys_robustness(
    digits: Task, standard_cnn: ZooModel, robust_cnn: ZooModel
) -> None:
    # Both models are attacked at the same absolute radius: the training pixels' scale.
    scale = input_scale(standard_cnn, digits.train.x)
    clean_std, robust_std = robust_accuracy(
        standard_cnn, digits.test, EPSILON, device=CPU, scale=scale
    )
    clean_adv, robust_adv = robust_accuracy(
        robust_cnn, digits.test, EPSILON, device=CPU, scale=scale
    )
    # Measured: standard 0.980 clean / 0.247 robust, adversarial 0.958 clean / 0.664 robust.
    assert clean_std > 0.9 and clean_adv > 0.85
    assert robust_std < clean_std - 0.4
    assert robust_adv > robust_std + 0.25


def test_robust_accuracy_agrees_with_reference(digits: Task, standard_cnn: ZooModel) -> None:
    _, reference_clean = evaluate_loss(standard_cnn, digits.test, CPU)
    clean, robust = robust_accuracy(standard_cnn, digits.test, EPSILON, device=CPU, seed=3)
    assert clean == pytest.approx(reference_clean)
    assert robust <= clean
    assert robust_accuracy(standard_cnn, digits.test, EPSILON, device=CPU, seed=3) == (
        clean,
        robust,
    )
    # A radius 1000 times smaller cannot flip more than a handful of predictions.
    _, barely = robust_accuracy(standard_cnn, digits.test, EPSILON / 1000, device=CPU)
    assert barely >= clean - 0.01
    # A larger radius breaks more.
    _, broken = robust_accuracy(standard_cnn, digits.test, 3 * EPSILON, device=CPU, seed=3)
    assert broken < robust


def test_pgd_beats_clean_and_random_noise(digits: Task, standard_cnn: ZooModel) -> None:
    standard_cnn.eval()
    x, y = digits.test.x[:256], digits.test.y[:256]
    epsilon = EPSILON * input_scale(standard_cnn, digits.train.x)
    generator = torch.Generator().manual_seed(0)
    adversarial = pgd(standard_cnn, x, y, epsilon, 10, 2.5 * epsilon / 10, generator)
    noise = epsilon * torch.sign(torch.randn(x.shape, generator=generator))
    with torch.no_grad():
        clean_loss = F.cross_entropy(standard_cnn(x), y)
        noise_loss = F.cross_entropy(standard_cnn(x + noise), y)
        pgd_loss = F.cross_entropy(standard_cnn.forward_embedded(adversarial, x), y)
        fgsm_loss = F.cross_entropy(standard_cnn(fgsm(standard_cnn, x, y, epsilon)), y)
    assert pgd_loss > noise_loss and pgd_loss > clean_loss
    assert fgsm_loss > clean_loss
    assert pgd_loss >= fgsm_loss


def tiny_model(seed: int = 0) -> ZooModel:
    torch.manual_seed(seed)
    model = create_model(ModelSpec(family="mlp", params={"width": 16}), (1, 6), 3, "sequence")
    assert isinstance(model, ZooModel)
    return model


@settings(max_examples=25, deadline=None)
@given(
    epsilon=st.floats(1e-3, 2.0),
    steps=st.integers(1, 4),
    step_ratio=st.floats(0.1, 3.0),
    seed=st.integers(0, 2**16),
)
def test_attacks_stay_in_the_ball(epsilon: float, steps: int, step_ratio: float, seed: int) -> None:
    model = tiny_model()
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 1, 6, generator=generator)
    y = torch.randint(0, 3, (8,), generator=generator)
    adversarial = pgd(model, x, y, epsilon, steps, step_ratio * epsilon, generator)
    assert adversarial.shape == x.shape
    # float32 rounding of x + delta is the only slack.
    assert (adversarial - x).abs().max() <= epsilon + 1e-5
    step = fgsm(model, x, y, epsilon) - x
    # FGSM moves every coordinate with a non-zero gradient by exactly epsilon.
    assert torch.allclose(step.abs()[step != 0], torch.tensor(epsilon), rtol=1e-5, atol=1e-5)


def test_fgsm_matches_the_analytic_gradient_of_a_linear_model() -> None:
    torch.manual_seed(0)
    model = create_model(ModelSpec(family="linear"), (1, 6), 3, "sequence")
    assert isinstance(model, ZooModel)
    linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
    x = torch.randn(5, 1, 6)
    y = torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        probabilities = torch.softmax(model(x), dim=1)  # (n, classes)
        # d CE / d x = W^T (softmax - onehot) for logits W x + b.
        gradient = (probabilities - F.one_hot(y, 3)) @ linear.weight  # (n, 6)
    expected = x + 0.1 * gradient.sign().reshape(x.shape)
    assert torch.allclose(fgsm(model, x, y, 0.1), expected)


def test_attacks_leave_parameters_grads_and_mode_alone() -> None:
    model = tiny_model()
    x, y = torch.randn(8, 1, 6), torch.randint(0, 3, (8,))
    parameters = list(model.parameters())
    parameters[0].grad = torch.full_like(parameters[0], 7.0)  # an earlier step's gradient
    before = [p.detach().clone() for p in parameters]
    model.train()
    pgd(model, x, y, 0.3, 3, 0.2, torch.Generator().manual_seed(0))
    fgsm(model, x, y, 0.3)
    assert model.training
    model.eval()
    robust_accuracy(model, Split(x, y), 0.5, device=CPU)
    assert not model.training
    model.train()
    robust_accuracy(model, Split(x, y), 0.5, device=CPU)
    assert model.training
    assert all(torch.equal(p, b) for p, b in zip(parameters, before, strict=True))
    assert torch.equal(parameters[0].grad, torch.full_like(parameters[0], 7.0))
    assert all(p.grad is None for p in parameters[1:])


def test_same_seed_same_adversarial_examples() -> None:
    model = tiny_model()
    x, y = torch.randn(16, 1, 6), torch.randint(0, 3, (16,))

    def attack(seed: int) -> torch.Tensor:
        return pgd(model, x, y, 0.5, 3, 0.1, torch.Generator().manual_seed(seed))

    assert torch.equal(attack(4), attack(4))
    assert not torch.equal(attack(4), attack(5))


def test_input_scale_matches_torch_std() -> None:
    model = tiny_model()
    x = 2.5 * torch.randn(3000, 1, 6) + 1.0
    assert input_scale(model, x, batch_size=700) == pytest.approx(float(x.double().std()), 1e-9)


class BagOfEmbeddings(ZooModel):
    """A text-like model: token embeddings, mean over the real tokens, a linear head."""

    def __init__(self, vocab_size: int, dim: int, num_classes: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.head = nn.Linear(dim, num_classes)

    def embed_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x)  # (n, L, dim)

    def forward_embedded(self, embedded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mask = (x != 0).unsqueeze(-1).to(embedded.dtype)  # (n, L, 1)
        pooled = (embedded * mask).sum(1) / mask.sum(1).clamp(min=1)  # (n, dim)
        return self.head(pooled)

    def representations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.forward_embedded(self.embed_inputs(x), x)}


def token_batch(
    n: int, length: int, vocab_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(2, vocab_size, (n, length), generator=generator)
    lengths = torch.randint(1, length + 1, (n,), generator=generator)
    x[torch.arange(length) >= lengths.unsqueeze(1)] = 0  # right padding
    y = (x[:, 0] % 2).long()  # the class is in the first token
    return x, y


def test_text_is_attacked_in_embedding_space() -> None:
    torch.manual_seed(0)
    model = BagOfEmbeddings(vocab_size=30, dim=8, num_classes=2)
    x, y = token_batch(64, 10, 30, seed=0)
    ids_before = x.clone()
    padding = x == 0
    assert padding.any() and (~padding).any()
    clean = model.embed_inputs(x).detach()  # (n, L, dim)

    scale = input_scale(model, x)
    real_tokens = clean[~padding]  # (tokens, dim): padding embeds to zeros and is left out
    assert scale == pytest.approx(float(real_tokens.double().std()), rel=1e-9)

    epsilon = 0.5 * scale
    adversarial = pgd(model, x, y, epsilon, 5, 0.25 * scale, torch.Generator().manual_seed(0))
    assert adversarial.shape == clean.shape == (64, 10, 8)
    assert torch.equal(x, ids_before)
    assert torch.equal(adversarial[padding], clean[padding])
    assert (adversarial - clean).abs().max() <= epsilon * (1 + 1e-6)
    assert (adversarial - clean)[~padding].abs().amax() > 0.9 * epsilon
    assert torch.equal(fgsm(model, x, y, epsilon)[padding], clean[padding])
    with torch.no_grad():
        clean_loss = F.cross_entropy(model.forward_embedded(clean, x), y)
        attacked_loss = F.cross_entropy(model.forward_embedded(adversarial, x), y)
    assert attacked_loss > clean_loss

    clean_accuracy, robust = robust_accuracy(model, Split(x, y), 0.5, device=CPU)
    assert robust <= clean_accuracy


def test_fit_trains_a_text_model_adversarially() -> None:
    x, y = token_batch(256, 10, 30, seed=1)
    split = Split(x, y)
    spec = TrainSpec(
        epochs=3, batch_size=32, lr=1e-2, adversarial=AdversarialSpec(epsilon=0.2, weight=0.5)
    )

    def train(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = BagOfEmbeddings(vocab_size=30, dim=8, num_classes=2)
        outcome = fit(model, split, split, "text", spec, seed, CPU)
        assert len(outcome.history) == 3
        return model.state_dict()

    first, again, other = train(0), train(0), train(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_fit_with_fgsm_is_deterministic_and_differs_from_clean(digits: Task) -> None:
    small = Split(digits.train.x[:256], digits.train.y[:256])
    clean_spec = TrainSpec(epochs=2, batch_size=64, lr=3e-3)
    fgsm_spec = clean_spec.model_copy(
        update={"adversarial": AdversarialSpec(method="fgsm", epsilon=0.3)}
    )

    def train(spec: TrainSpec) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = create_model(CNN, digits.input_shape, 10, "image")
        fit(model, small, small, "image", spec, 0, CPU)
        return model.state_dict()

    first, again, clean = train(fgsm_spec), train(fgsm_spec), train(clean_spec)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], clean[k]) for k in first)


def test_fit_refuses_adversarial_training_of_a_plain_module() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 2))
    split = Split(torch.randn(16, 1, 6), torch.randint(0, 2, (16,)))
    spec = TrainSpec(epochs=1, adversarial=AdversarialSpec(epsilon=0.1))
    with pytest.raises(ConfigError, match="zoo model"):
        fit(model, split, split, "sequence", spec, 0, CPU)


@pytest.mark.parametrize(
    "bad",
    [
        {"epsilon": 0.0},
        {"epsilon": -0.1},
        {"epsilon": 0.1, "weight": 0.0},
        {"epsilon": 0.1, "weight": 1.5},
        {"epsilon": 0.1, "steps": 0},
        {"epsilon": 0.1, "step_size": 0.0},
        {"epsilon": 0.1, "method": "cw"},
        {"epsilon": 0.1, "radius": 1},
        {},
    ],
)
def test_adversarial_spec_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        AdversarialSpec.model_validate(bad)


def test_adversarial_spec_defaults_and_train_spec_dump() -> None:
    spec = AdversarialSpec(epsilon=0.2, steps=5)
    assert spec.method == "pgd" and spec.weight == 1.0
    assert spec.resolved_step_size() == pytest.approx(0.1)
    assert AdversarialSpec(epsilon=0.2, step_size=0.05).resolved_step_size() == 0.05
    # Member ids hash the dump: switched off, the key is absent, as before it existed.
    assert "adversarial" not in TrainSpec().model_dump(mode="json")
    on = TrainSpec(adversarial={"epsilon": 0.2})
    assert on.model_dump(mode="json")["adversarial"]["epsilon"] == 0.2
    assert TrainSpec.model_validate(on.model_dump()) == on
    with pytest.raises(pydantic.ValidationError):
        TrainSpec(adversarial={"epsilon": -1.0})
