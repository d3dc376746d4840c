"""Tests of the text members of the zoo: token-id inputs, padding, attention, TF-IDF.

The synthetic task plants the truth: every text holds one keyword id of its class among random
filler ids, with random lengths and right padding, so a family that reads its tokens must reach
(near) perfect accuracy, and one that reads padding gives different outputs for longer padding.
"""

from __future__ import annotations

import collections
import math
import typing

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from polyculture.data.task import PAD_ID, UNKNOWN_ID, Split
from polyculture.errors import ConfigError
from polyculture.train.loop import fit
from polyculture.train.spec import TrainSpec
from polyculture.zoo import (
    FAMILIES,
    ClassicalModel,
    ModelSpec,
    ZooModel,
    create_model,
    resolve_knobs,
)
from polyculture.zoo.classical import NgramCounts
from polyculture.zoo.cnn import CNNKnobs
from polyculture.zoo.common import AttentionPool, masked_max, masked_mean, token_mask
from polyculture.zoo.linear import LinearKnobs
from polyculture.zoo.mlp import MLPKnobs
from polyculture.zoo.rnn import RNNKnobs
from polyculture.zoo.transformer import SelfAttention, Transformer

VOCAB = 40
LENGTH = 24
CLASSES = 3
#: Two keyword ids per class (2..7); fillers are the ids after them.
FIRST_FILLER = 2 + 2 * CLASSES

#: The from-scratch torch text families (pretrained encoders have tests of their own).
TORCH_TEXT = ["cnn", "gru", "linear", "lstm", "mlp", "transformer"]
#: Torch text families and variants with other pooling / readouts.
VARIANTS: list[tuple[str, dict[str, typing.Any]]] = [
    *[(name, {}) for name in TORCH_TEXT],
    ("cnn", {"pool": "attention"}),
    ("cnn", {"pool": "mean"}),
    ("gru", {"readout": "attention", "depth": 2}),
    ("lstm", {"readout": "last", "depth": 2}),
    ("gru", {"readout": "last", "bidirectional": False}),
    ("transformer", {"depth": 1, "dropout": 0.1}),
]


def _label(case: tuple[str, dict[str, typing.Any]]) -> str:
    name, params = case
    return name + "".join(f"-{k}={v}" for k, v in sorted(params.items()))


def keyword_task(n: int, seed: int, length: int = LENGTH) -> Split:
    """Random filler ids with one keyword of the label's class; lengths 3..length, right-padded.

    Some fillers are ``UNKNOWN_ID``, as out-of-vocabulary words would be.
    """
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % CLASSES  # (n,)
    lengths = torch.randint(3, length + 1, (n,), generator=gen)  # (n,)
    x = torch.randint(FIRST_FILLER, VOCAB, (n, length), generator=gen)  # (n, L)
    x[torch.rand(n, length, generator=gen) < 0.05] = UNKNOWN_ID
    keyword = 2 + 2 * y + torch.randint(0, 2, (n,), generator=gen)  # (n,)
    where = (torch.rand(n, generator=gen) * lengths).long()  # (n,) a position inside the text
    x[torch.arange(n), where] = keyword
    x[torch.arange(length) >= lengths[:, None]] = PAD_ID
    return Split(x, y)


def random_texts(n: int, length: int, seed: int) -> torch.Tensor:
    """Random ids ``(n, length)`` with lengths 0..length (one empty and one full text)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(UNKNOWN_ID, VOCAB, (n, length), generator=gen)
    lengths = torch.randint(1, length, (n,), generator=gen)
    lengths[0], lengths[1] = 0, length
    x[torch.arange(length) >= lengths[:, None]] = PAD_ID
    return x


def build(name: str, params: dict[str, typing.Any], length: int = LENGTH) -> ZooModel:
    torch.manual_seed(0)
    model = create_model(
        ModelSpec(family=name, params=params), (length,), CLASSES, "text", vocab_size=VOCAB
    )
    assert isinstance(model, ZooModel)
    return model


def test_text_families_are_registered() -> None:
    text_families = {n for n in FAMILIES.names() if "text" in FAMILIES.get(n).modalities}
    assert {*TORCH_TEXT, "tfidf_logreg"} <= text_families
    assert FAMILIES.get("tfidf_logreg").modalities == {"text"}


# ------------------------------------------------------------------------------------------
# Contract: shapes, representations, the embedding-space protocol.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", VARIANTS, ids=_label)
def test_torch_text_contract(case: tuple[str, dict[str, typing.Any]]) -> None:
    model = build(*case).eval()
    x = random_texts(6, LENGTH, seed=1)
    with torch.no_grad():
        logits = model(x)
        reps = model.representations(x)
        embedded = model.embed_inputs(x)
        via_embedding = model.forward_embedded(embedded, x)
    assert logits.shape == (6, CLASSES) and torch.isfinite(logits).all()
    assert list(reps)[-1] == "logits"
    assert next(iter(reps)) == "embedding"
    assert all(v.dim() == 2 and v.shape[0] == 6 and torch.isfinite(v).all() for v in reps.values())
    torch.testing.assert_close(reps["logits"], logits)
    assert embedded.dim() == 3 and embedded.shape[:2] == (6, LENGTH)
    torch.testing.assert_close(via_embedding, logits, rtol=0, atol=0)
    # The "embedding" representation is the mean token vector over the text's tokens.
    mask = token_mask(x)
    expected = (embedded * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(reps["embedding"], expected)


@pytest.mark.parametrize("case", VARIANTS, ids=_label)
def test_more_right_padding_changes_nothing(case: tuple[str, dict[str, typing.Any]]) -> None:
    model = build(*case, length=LENGTH + 7).eval()
    x = random_texts(6, LENGTH, seed=2)
    longer = torch.cat([x, torch.zeros(6, 7, dtype=torch.long)], dim=1)  # (6, LENGTH + 7)
    with torch.no_grad():
        short_reps, long_reps = model.representations(x), model.representations(longer)
        # Each text alone, cut to its own length: no padding at all (empty texts keep one pad).
        alone = [model(row[: max(1, int((row != PAD_ID).sum()))][None]) for row in x]
    for key in short_reps:
        torch.testing.assert_close(long_reps[key], short_reps[key], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(alone), short_reps["logits"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", VARIANTS, ids=_label)
def test_embedding_space_ignores_padding(case: tuple[str, dict[str, typing.Any]]) -> None:
    model = build(*case).eval()
    x = random_texts(6, LENGTH, seed=3)
    x[0, 0] = 5  # no empty text here: its lone padding position counts as a token
    embedded = model.embed_inputs(x).detach()
    pad = (x == PAD_ID)[..., None]  # (n, L, 1)
    noise = torch.randn(embedded.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = model.forward_embedded(embedded, x)
        padding_moved = model.forward_embedded(embedded + noise * pad, x)
        tokens_moved = model.forward_embedded(embedded + noise * ~pad, x)
    # An attack that perturbs padding vectors achieves nothing; perturbing tokens does.
    torch.testing.assert_close(padding_moved, clean, atol=1e-5, rtol=1e-5)
    assert (tokens_moved - clean).abs().amax(dim=1).min() > 1e-4
    # Gradients in embedding space reach the tokens and never the padding.
    leaf = embedded.clone().requires_grad_(True)
    model.forward_embedded(leaf, x).sum().backward()
    assert leaf.grad is not None
    assert torch.all(leaf.grad[pad.expand_as(leaf.grad)] == 0)
    assert leaf.grad[~pad.expand_as(leaf.grad)].abs().sum() > 0


# ------------------------------------------------------------------------------------------
# Learning: every text family solves the planted keyword task.
# ------------------------------------------------------------------------------------------

LEARNING = [
    *[(name, {}) for name in TORCH_TEXT],
    ("cnn", {"pool": "attention"}),
    ("gru", {"readout": "attention"}),
]


@pytest.mark.parametrize("case", LEARNING, ids=_label)
def test_torch_text_family_learns_keywords(case: tuple[str, dict[str, typing.Any]]) -> None:
    torch.set_num_threads(1)
    train, test = keyword_task(480, seed=0), keyword_task(300, seed=1)
    model = build(*case)
    spec = TrainSpec(epochs=5, batch_size=32, lr=1e-2)
    fit(model, train, test, "text", spec, seed=0, device=torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        accuracy = (model(test.x).argmax(1) == test.y).float().mean().item()
    assert accuracy >= 0.9, accuracy


def test_tfidf_logreg_learns_keywords() -> None:
    train, test = keyword_task(480, seed=0), keyword_task(300, seed=1)
    model = create_model(ModelSpec(family="tfidf_logreg"), (LENGTH,), CLASSES, "text")
    assert isinstance(model, ClassicalModel)
    # The run passes inputs flattened to numpy (floats for the other modalities).
    model.fit(train.x.numpy().astype(np.float64), train.y.numpy(), seed=0)
    proba = model.predict_proba(test.x.numpy())
    assert (proba.argmax(1) == test.y.numpy()).mean() >= 0.9


# ------------------------------------------------------------------------------------------
# Attention pooling and attention maps.
# ------------------------------------------------------------------------------------------


def test_attention_pool_matches_a_direct_computation() -> None:
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(4, 6, 5, generator=gen)
    mask = torch.arange(6) < torch.tensor([6, 3, 1, 4])[:, None]  # (4, 6)
    pool = AttentionPool(5)
    with torch.no_grad():
        pool.query.copy_(torch.randn(5, generator=gen))
    pooled, weights = pool(h, mask)
    for i in range(4):
        n_tok = int(mask[i].sum())
        scores = h[i, :n_tok] @ pool.query / math.sqrt(5)
        expected = torch.softmax(scores, 0)
        torch.testing.assert_close(weights[i, :n_tok], expected)
        assert torch.all(weights[i, n_tok:] == 0)
        torch.testing.assert_close(pooled[i], expected @ h[i, :n_tok])
    # A fresh pool (zero query) is a plain masked mean.
    pooled, _ = AttentionPool(5)(h, mask)
    torch.testing.assert_close(pooled, masked_mean(h, mask))


def test_masked_max_ignores_padding() -> None:
    h = torch.tensor([[[1.0, -5.0], [2.0, -7.0], [9.0, 9.0]]])  # (1, 3, 2)
    mask = torch.tensor([[True, True, False]])
    assert masked_max(h, mask).tolist() == [[2.0, -5.0]]


ATTENTION_CASES = [
    ("cnn", {"pool": "attention"}, "text", (LENGTH,), LENGTH),
    ("cnn", {"pool": "attention"}, "sequence", (1, 40), 5),  # three stride-2 blocks: 40 -> 5
    ("cnn", {"pool": "attention"}, "image", (1, 28, 28), 9),  # 28 -> 14 -> 7 -> 3: 3 x 3 pixels
    ("gru", {"readout": "attention"}, "text", (LENGTH,), LENGTH),
    ("lstm", {"readout": "attention"}, "sequence", (1, 40), 40),
    ("gru", {"readout": "attention"}, "image", (1, 12, 12), 12),  # one step per row
]


@pytest.mark.parametrize(
    ("name", "params", "modality", "shape", "positions"),
    ATTENTION_CASES,
    ids=[f"{c[0]}-{c[2]}" for c in ATTENTION_CASES],
)
def test_attention_weights(
    name: str,
    params: dict[str, typing.Any],
    modality: str,
    shape: tuple[int, ...],
    positions: int,
) -> None:
    torch.manual_seed(0)
    model = create_model(
        ModelSpec(family=name, params=params),
        shape,
        CLASSES,
        modality,
        vocab_size=VOCAB,  # type: ignore[arg-type]
    )
    x = random_texts(5, LENGTH, seed=4) if modality == "text" else torch.randn(5, *shape)
    attention = model.attention  # type: ignore[union-attr]
    assert isinstance(attention, AttentionPool)
    with torch.no_grad():
        attention.query.normal_()  # not the uniform start
    model.train()  # attention_weights switches to eval mode itself and back
    weights = model.attention_weights(x)  # type: ignore[union-attr,operator]
    assert model.training
    assert weights.shape == (5, positions)
    torch.testing.assert_close(weights.sum(1), torch.ones(5))
    assert torch.all(weights >= 0)
    if modality == "text":
        assert torch.all(weights[~token_mask(x)] == 0)
        assert torch.all(weights[token_mask(x)] > 0)
    else:
        assert weights.std(dim=1).min() > 0  # learned query: not uniform
    reps = model.representations(x)  # type: ignore[operator]
    assert "attention_pool" in reps and "hidden" not in reps


def test_attention_weights_need_attention_pooling() -> None:
    for name, params in (("cnn", {}), ("gru", {"readout": "last"})):
        model = build(name, params)
        with pytest.raises(ConfigError, match="attention"):
            model.attention_weights(random_texts(2, LENGTH, seed=0))  # type: ignore[operator]


def test_trained_attention_finds_the_keyword() -> None:
    torch.set_num_threads(1)
    train, test = keyword_task(480, seed=0), keyword_task(200, seed=1)
    model = build("cnn", {"pool": "attention", "depth": 1, "kernel_size": 1})
    fit(
        model,
        train,
        test,
        "text",
        TrainSpec(epochs=5, batch_size=32, lr=1e-2),
        0,
        torch.device("cpu"),
    )
    weights = model.attention_weights(test.x)  # type: ignore[operator]
    is_keyword = (test.x >= 2) & (test.x < FIRST_FILLER)  # (n, L) the planted position
    found = is_keyword[torch.arange(len(test)), weights.argmax(1)]
    assert found.float().mean() >= 0.9


def test_transformer_attention_maps() -> None:
    model = build("transformer", {"depth": 2, "heads": 4})
    assert isinstance(model, Transformer)
    x = random_texts(5, LENGTH, seed=5)
    model.train()
    maps = model.attention_maps(x)
    assert model.training
    assert maps.shape == (5, 2, 4, LENGTH + 1, LENGTH + 1)
    torch.testing.assert_close(maps.sum(-1), torch.ones(5, 2, 4, LENGTH + 1))
    keys = torch.cat([torch.ones(5, 1, dtype=torch.bool), token_mask(x)], dim=1)  # CLS first
    by_key = maps.permute(0, 4, 1, 2, 3)  # (n, keys, depth, heads, queries)
    assert torch.all(by_key[~keys] == 0)  # padded keys get nothing, in every block/head/query
    assert torch.all(maps[:, :, :, :, 0] > 0)  # every token sees CLS
    # Block 1 recomputed by hand from the model's own parameters: [CLS] + tokens + positions.
    with torch.no_grad():
        h = torch.cat([model.cls.expand(5, -1, -1), model.embed_inputs(x)], 1) + model.pos
        block = model.blocks[0]
        q, k, _ = block.attn.qkv(block.norm1(h)).split(64, dim=-1)
        q, k = (t.reshape(5, LENGTH + 1, 4, 16).transpose(1, 2) for t in (q, k))
        scores = (q @ k.transpose(-2, -1) / 4.0).masked_fill(~keys[:, None, None, :], -math.inf)
    torch.testing.assert_close(maps[:, 0], torch.softmax(scores, -1))


def test_transformer_attention_maps_other_modalities() -> None:
    torch.manual_seed(0)
    model = create_model(ModelSpec(family="transformer"), (1, 40), CLASSES, "sequence")
    maps = model.attention_maps(torch.randn(3, 1, 40))  # type: ignore[operator]
    assert maps.shape == (3, 2, 4, 11, 11)  # 40 / patch 4 = 10 tokens + CLS
    torch.testing.assert_close(maps.sum(-1), torch.ones(3, 2, 4, 11))


def test_explicit_attention_equals_the_fused_kernel() -> None:
    torch.manual_seed(0)
    attn = SelfAttention(16, 2, dropout=0.0)
    x = torch.randn(3, 7, 16)
    mask = torch.arange(7) < torch.tensor([7, 4, 1])[:, None]
    maps: list[torch.Tensor] = []
    torch.testing.assert_close(attn(x, mask, maps), attn(x, mask))
    assert maps[0].shape == (3, 2, 7, 7)
    torch.testing.assert_close(attn(x), attn(x, None, []))


def test_transformer_rejects_texts_longer_than_its_positions() -> None:
    model = build("transformer", {}, length=8)
    with pytest.raises(ValueError, match="longer"):
        model(random_texts(2, 9, seed=0))


# ------------------------------------------------------------------------------------------
# Knobs.
# ------------------------------------------------------------------------------------------


def test_text_knobs() -> None:
    with pytest.raises(ConfigError, match="embed_dim"):
        resolve_knobs(ModelSpec(family="mlp", params={"embed_dim": 0}))
    with pytest.raises(ConfigError, match="flatten"):
        build("cnn", {"pool": "flatten"})
    with pytest.raises(ConfigError, match="vocabulary"):
        create_model(ModelSpec(family="gru"), (LENGTH,), CLASSES, "text")
    with pytest.raises(ConfigError, match="text"):
        create_model(ModelSpec(family="tfidf_logreg"), (7,), CLASSES, "tabular")
    with pytest.raises(ConfigError, match="ngram_max"):
        resolve_knobs(ModelSpec(family="tfidf_logreg", params={"ngram_max": 4}))
    small = build("mlp", {"embed_dim": 8})
    assert small.embed_inputs(random_texts(2, LENGTH, seed=0)).shape == (2, LENGTH, 8)


def test_new_knobs_leave_old_member_ids_alone() -> None:
    # Member ids hash the knob dump: at their defaults the new knobs are left out of it.
    assert CNNKnobs().model_dump() == {"width": 32, "depth": 3, "kernel_size": 5, "dropout": 0.0}
    assert RNNKnobs().model_dump() == {
        "width": 32,
        "depth": 1,
        "bidirectional": True,
        "readout": "all",
    }
    assert MLPKnobs().model_dump() == {"width": 100, "depth": 2, "dropout": 0.0}
    assert LinearKnobs().model_dump() == {}
    changed = CNNKnobs(pool="attention", embed_dim=16)
    assert changed.model_dump()["pool"] == "attention"
    assert CNNKnobs.model_validate(changed.model_dump()) == changed


# ------------------------------------------------------------------------------------------
# TF-IDF + logistic regression.
# ------------------------------------------------------------------------------------------


def _reference_counts(rows: list[list[int]], ngram_max: int) -> list[collections.Counter[tuple]]:
    """N-gram counts of each text's non-padding tokens, with Python tuples."""
    out = []
    for row in rows:
        tokens = [t for t in row if t != PAD_ID]
        grams: collections.Counter[tuple] = collections.Counter()
        for order in range(1, ngram_max + 1):
            grams.update(tuple(tokens[i : i + order]) for i in range(len(tokens) - order + 1))
        out.append(grams)
    return out


@settings(max_examples=30, deadline=None)
@given(
    rows=st.lists(st.lists(st.integers(1, 6), min_size=0, max_size=6), min_size=2, max_size=8),
    ngram_max=st.integers(1, 3),
)
def test_ngram_counts_match_python_counters(rows: list[list[int]], ngram_max: int) -> None:
    width = max(1, *(len(r) for r in rows))
    padded = [r + [PAD_ID] * (width - len(r)) for r in rows]
    fit_rows = padded[: len(padded) // 2]
    counter = NgramCounts(ngram_max, vocab_size=7).fit(np.array(fit_rows, dtype=np.float64))
    counts = counter.transform(np.array(padded)).toarray()  # (n, seen n-grams)
    reference = _reference_counts(padded, ngram_max)
    seen = set().union(*_reference_counts(fit_rows, ngram_max))
    assert counts.shape[1] == len(seen)
    # One column per n-gram seen in fitting (in some order); n-grams only in new texts drop out.
    expected = np.array([[grams[g] for g in sorted(seen)] for grams in reference])
    assert sorted(map(tuple, counts.T)) == sorted(map(tuple, expected.T))


def test_ngram_counts_min_df_and_unknown_ids() -> None:
    x = np.array([[5, 6, 5, 0], [6, 5, 0, 0]])
    assert NgramCounts(2).fit(x).transform(x).shape == (2, 4)  # 5, 6, (5,6), (6,5)
    assert NgramCounts(2, min_df=2).fit(x).transform(x).shape == (2, 3)  # (5,6) in one text
    # Ids beyond the vocabulary read as the unknown word.
    counter = NgramCounts(1, vocab_size=7).fit(np.array([[UNKNOWN_ID, 3]]))
    assert counter.transform(np.array([[50, 0]])).toarray().tolist() == [[1.0, 0.0]]


def test_tfidf_logreg_details() -> None:
    train = keyword_task(90, seed=0)
    keep = train.y != 1  # class 1 never seen in training
    model = create_model(
        ModelSpec(family="tfidf_logreg", params={"ngram_max": 1}),
        (LENGTH,),
        CLASSES,
        "text",
        vocab_size=VOCAB,
    )
    assert isinstance(model, ClassicalModel)
    x, y = train.x[keep].numpy(), train.y[keep].numpy()
    model.fit(x, y, seed=0)
    reps = model.representations(x)
    assert list(reps) == ["logits", "proba"]
    assert reps["proba"].shape == (len(y), CLASSES)
    assert np.all(reps["proba"][:, 1] == 0)
    np.testing.assert_allclose(reps["proba"].sum(1), 1.0)
    # Binary: one coefficient per seen unigram plus the intercept.
    n_unigrams = len(np.unique(x[x != PAD_ID]))
    assert model.n_parameters == n_unigrams + 1
    again = create_model(ModelSpec(family="tfidf_logreg"), (LENGTH,), CLASSES, "text")
    assert isinstance(again, ClassicalModel)
    first = again.fit(x, y, seed=3).predict_proba(x)
    np.testing.assert_array_equal(first, again.fit(x, y, seed=3).predict_proba(x))
