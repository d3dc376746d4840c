"""Content-based recommenders: a zoo item-text encoder, a user profile, a ranking loss.

An item's embedding is computed from its text alone: a torch family of the zoo (``cnn``, ``gru``,
``lstm``, ``transformer``, ``linear``, ``mlp``) reads its token ids and its final representation
(the input of its output layer) is projected to ``dim``; ``tfidf`` projects the item's TF-IDF
vector; ``minilm`` projects the frozen all-MiniLM-L6-v2 sentence embedding (text extra);
``member`` projects the frozen final representation of a member trained in another run (any text
member of a classification run, read by :mod:`polyculture.run.predictor`; its features are
computed by :mod:`polyculture.run.recommend` and passed in). A user is
the mean embedding of the items they liked (the *profile*), optionally plus a learned user
embedding; an item's score for a user is the dot product.

Training is end to end on the training interactions with BPR (one uniformly drawn negative per
positive), a full softmax over the catalogue (the user's other training positives masked), or a
sampled softmax (the positive against ``negatives`` uniformly drawn items shared by the batch,
draws equal to the positive masked). When a training positive is scored, it is left out
of the user's profile, so the model cannot score an item by finding it in the profile. Seeded and
deterministic on CPU; the best epoch by a validation callback (e.g. NDCG@10) is kept; a non-finite
loss raises :class:`~polyculture.train.loop.DivergenceError`.

Baselines are plain functions of the data: :func:`popularity_scores` and :func:`random_scores`.

Examples
--------
>>> spec = RecommenderSpec(encoder="linear", dim=8, epochs=1)
>>> spec.label()
'linear(dim=8)'
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from polyculture.data.text import build_vocabulary, encode_texts
from polyculture.errors import ConfigError
from polyculture.train.loop import DivergenceError
from polyculture.zoo.base import ModelSpec, ZooModel, create_model, final_layer

TEXT_FEATURE_ENCODERS = ("tfidf", "minilm", "member")
"""Encoders whose item features are fixed vectors (only the projection learns)."""


class RecommenderSpec(BaseModel):
    """One recommender member: what it is and how it trains (a frozen value).

    ``kind`` is ``content`` (an item-text encoder), ``popularity`` or ``random``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = ""
    kind: Literal["content", "popularity", "random"] = "content"
    encoder: str = "cnn"
    params: dict[str, Any] = {}
    user_model: Literal["profile", "profile+embedding"] = "profile"
    loss: Literal["bpr", "softmax", "sampled_softmax"] = "bpr"
    negatives: int = Field(100, ge=1)
    dim: int = Field(64, ge=1)
    epochs: int = Field(8, ge=1)
    lr: float = Field(0.003, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(2048, ge=1)
    max_length: int = Field(32, ge=1)

    def label(self) -> str:
        """The display name: ``name`` when given, else the encoder and its knobs."""
        if self.name:
            return self.name
        if self.kind != "content":
            return self.kind
        knobs = {**self.params, "dim": self.dim}
        if self.user_model != "profile":
            knobs["user"] = "embedding"
        if self.loss != "bpr":
            knobs["loss"] = self.loss
        inner = ",".join(f"{k}={v}" for k, v in sorted(knobs.items()))
        return f"{self.encoder}({inner})"

    @property
    def family(self) -> str:
        """The zoo family of the item encoder (the baseline's kind for baselines)."""
        return self.encoder if self.kind == "content" else self.kind


@dataclass
class RecommendationData:
    """The split interactions as indices, ready for training and scoring.

    Attributes
    ----------
    item_texts
        ``(items,)`` the text of every catalogue item (its index is the item index).
    n_users
        Evaluated users (indices ``0..n_users-1``).
    train_users, train_items
        ``(m,)`` the training (liked) interactions.
    validation_items, test_items
        ``(n_users,)`` each user's held-out item.
    """

    item_texts: Sequence[str]
    n_users: int
    train_users: np.ndarray
    train_items: np.ndarray
    validation_items: np.ndarray
    test_items: np.ndarray

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return len(self.item_texts)

    def history(self, stage: Literal["validation", "test"]) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) of the interactions a user has before ``stage``.

        Validation sees the training interactions; test also sees the validation ones.
        """
        if stage == "validation":
            return self.train_users, self.train_items
        users = np.concatenate([self.train_users, np.arange(self.n_users)])
        items = np.concatenate([self.train_items, self.validation_items])
        return users, items

    def seen(self, stage: Literal["validation", "test"]) -> np.ndarray:
        """Boolean ``(n_users, n_items)``: items excluded from the ranking at ``stage``."""
        users, items = self.history(stage)
        mask = np.zeros((self.n_users, self.n_items), dtype=bool)
        mask[users, items] = True
        return mask


def popularity_scores(counts: np.ndarray, n_users: int) -> np.ndarray:
    """Every user gets the item's like count as its score: ``(n_users, items)`` float64.

    Examples
    --------
    >>> popularity_scores(np.array([3, 1]), 2).tolist()
    [[3.0, 1.0], [3.0, 1.0]]
    """
    counts = np.asarray(counts, dtype=np.float64)
    return np.broadcast_to(counts, (n_users, len(counts))).copy()


def random_scores(seed: int, users: np.ndarray, n_items: int, stage: int) -> np.ndarray:
    """Uniform random scores ``(len(users), n_items)``, one stream per (seed, stage, user).

    The same user gets the same scores whether scored alone or with others.

    Examples
    --------
    >>> a = random_scores(0, np.array([0, 1]), 5, stage=1)
    >>> bool(np.array_equal(a[1], random_scores(0, np.array([1]), 5, stage=1)[0]))
    True
    """
    rows = [np.random.default_rng([seed, stage, int(u)]).random(n_items) for u in users]
    return np.array(rows, dtype=np.float64).reshape(len(users), n_items)


# --- item features ---------------------------------------------------------------------------


@dataclass
class ItemFeatures:
    """The encoder's fixed input for every item: token ids or a feature matrix."""

    inputs: torch.Tensor  # (items, max_length) int64 tokens, or (items, d) float32 features
    vocabulary: tuple[str, ...] = ()


def item_features(spec: RecommenderSpec, texts: Sequence[str]) -> ItemFeatures:
    """Token ids (zoo torch families), a TF-IDF matrix or MiniLM embeddings of ``texts``.

    Raises
    ------
    ConfigError
        An unknown encoder, knobs it does not take, or MiniLM without the text extra.

    Examples
    --------
    >>> spec = RecommenderSpec(encoder="tfidf")
    >>> tuple(item_features(spec, ["a red apple", "a green apple", "a red car"]).inputs.shape)
    (3, 4)
    """
    if spec.encoder == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer

        knobs = {"ngram_max": 1, "min_df": 1, **spec.params}
        unknown = set(knobs) - {"ngram_max", "min_df"}
        if unknown:
            raise ConfigError(
                f"encoder 'tfidf' has no knob '{sorted(unknown)[0]}'",
                hint="knobs of 'tfidf' are: ngram_max, min_df",
            )
        # scikit-learn's own tokens (words of 2+ characters): punctuation and the ". "
        # separators of item_text would otherwise be shared features of every item.
        vectorizer = TfidfVectorizer(
            ngram_range=(1, int(knobs["ngram_max"])), min_df=int(knobs["min_df"])
        )
        matrix = vectorizer.fit_transform(list(texts)).toarray()  # (items, vocabulary)
        return ItemFeatures(torch.as_tensor(matrix, dtype=torch.float32))
    if spec.encoder == "minilm":
        if spec.params:
            raise ConfigError(
                "encoder 'minilm' takes no knobs (it is frozen; the projection learns)",
                hint="remove params from this member",
            )
        from polyculture.zoo.pretrained import sentence_embeddings

        embeddings = sentence_embeddings(list(texts))  # (items, 384)
        return ItemFeatures(torch.as_tensor(embeddings, dtype=torch.float32))
    if spec.encoder == "member":
        raise ConfigError(
            "encoder 'member' reads another run's member; its features come from the run stage",
            hint="train it through polyculture.run.recommend (polyculture run STUDY)",
        )
    vocabulary = build_vocabulary(texts, min_count=1)
    tokens = encode_texts(texts, vocabulary, spec.max_length)  # (items, max_length)
    return ItemFeatures(torch.as_tensor(tokens), vocabulary)


def _check_encoder(spec: RecommenderSpec) -> None:
    if spec.kind == "content" and spec.encoder == "member":
        if set(spec.params) != {"run", "member"} or not all(
            isinstance(value, str) for value in spec.params.values()
        ):
            raise ConfigError(
                f"encoder 'member' takes params {{run, member}}, got {sorted(spec.params)}",
                hint='e.g. params = { run = "runs/phrasebank", member = "cnn" }',
            )
        return
    if spec.kind != "content" or spec.encoder in TEXT_FEATURE_ENCODERS:
        return
    import polyculture.zoo as zoo  # registers the built-in families

    family = zoo.FAMILIES.get(spec.encoder)  # unknown names: RegistryError with close matches
    if family.kind != "torch" or "text" not in family.modalities or spec.encoder == "minilm":
        raise ConfigError(
            f"'{spec.encoder}' cannot be an item-text encoder",
            hint="use tfidf, minilm, member or a torch text family: cnn, gru, lstm, "
            "transformer, linear, mlp",
        )


def check_spec(spec: RecommenderSpec) -> None:
    """Validate the encoder and its knobs before anything trains (cheap: builds nothing big).

    Raises
    ------
    ConfigError, RegistryError
        An encoder that cannot read text, or knobs it does not take.

    Examples
    --------
    >>> check_spec(RecommenderSpec(encoder="logreg"))
    Traceback (most recent call last):
    ...
    polyculture.errors.ConfigError: 'logreg' cannot be an item-text encoder; ...
    """
    _check_encoder(spec)
    if spec.kind == "content" and spec.encoder not in TEXT_FEATURE_ENCODERS:
        from polyculture.zoo.base import resolve_knobs

        resolve_knobs(ModelSpec(family=spec.encoder, params=spec.params), "text")


class ContentRecommender(nn.Module):
    """Item tower (encoder + projection) and the user model (profile, optional embedding).

    ``encoder`` is a zoo model reading token ids, or ``None`` for fixed feature vectors.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        encoder: ZooModel | None,
        layer: str,
        width: int,
        dim: int,
        n_users: int,
        user_embedding: bool,
    ) -> None:
        super().__init__()
        self.register_buffer("inputs", inputs, persistent=False)
        self.encoder = encoder
        self.layer = layer
        self.projection = nn.Linear(width, dim)
        self.users = nn.Embedding(n_users, dim) if user_embedding else None
        if self.users is not None:
            nn.init.normal_(self.users.weight, std=0.01)

    def item_embeddings(self) -> torch.Tensor:
        """``(items, dim)`` embeddings of the whole catalogue."""
        inputs: torch.Tensor = self.inputs  # type: ignore[assignment]
        if self.encoder is None:
            features = inputs  # (items, d)
        else:
            features = self.encoder.representations(inputs)[self.layer]  # (items, width)
        return self.projection(features)  # (items, dim)


def build_recommender(
    spec: RecommenderSpec, features: ItemFeatures, n_users: int
) -> ContentRecommender:
    """An untrained :class:`ContentRecommender` (call ``torch.manual_seed`` first).

    Examples
    --------
    >>> spec = RecommenderSpec(encoder="cnn", params={"width": 8, "depth": 1}, dim=4)
    >>> model = build_recommender(spec, item_features(spec, ["red apple", "green car"]), 3)
    >>> tuple(model.item_embeddings().shape)
    (2, 4)
    """
    check_spec(spec)
    encoder: ZooModel | None = None
    layer = ""
    if spec.encoder in TEXT_FEATURE_ENCODERS:
        width = int(features.inputs.shape[1])
    else:
        model = create_model(
            ModelSpec(family=spec.encoder, params=spec.params),
            (spec.max_length,),
            2,  # the classifier head is unused: the item embedding is the layer before it
            "text",
            vocab_size=len(features.vocabulary),
        )
        assert isinstance(model, ZooModel)
        encoder = model
        with torch.no_grad():
            probe = encoder.representations(features.inputs[:2])
        layer = final_layer(list(probe))
        width = int(probe[layer].shape[1])
    return ContentRecommender(
        features.inputs, encoder, layer, width, spec.dim, n_users, spec.user_model != "profile"
    )


def _profile_matrix(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int
) -> torch.Tensor:
    """Sparse ``(n_users, n_items)`` matrix whose product with item embeddings sums histories."""
    indices = torch.as_tensor(np.vstack([users, items]), dtype=torch.int64)
    values = torch.ones(len(users), dtype=torch.float32)
    return torch.sparse_coo_tensor(
        indices, values, (n_users, n_items), check_invariants=False
    ).coalesce()


def user_vectors(
    model: ContentRecommender,
    items: torch.Tensor,
    users: np.ndarray,
    history_items: np.ndarray,
    n_users: int,
) -> torch.Tensor:
    """``(n_users, dim)``: mean embedding of each user's history (+ their learned embedding).

    A user with no history gets the zero profile.

    Examples
    --------
    >>> spec = RecommenderSpec(encoder="tfidf", dim=2)
    >>> model = build_recommender(spec, item_features(spec, ["red car", "red bus", "bus"]), 2)
    >>> items = torch.eye(3, 2)  # (items, dim)
    >>> user_vectors(model, items, np.array([0, 0]), np.array([0, 1]), 2).tolist()
    [[0.5, 0.5], [0.0, 0.0]]
    """
    sums = torch.sparse.mm(_profile_matrix(users, history_items, n_users, len(items)), items)
    counts = torch.as_tensor(np.bincount(users, minlength=n_users), dtype=torch.float32)
    vectors = sums / counts.clamp(min=1.0)[:, None]  # (n_users, dim)
    if model.users is not None:
        vectors = vectors + model.users.weight
    return vectors


def content_scores(
    model: ContentRecommender, data: RecommendationData, stage: Literal["validation", "test"]
) -> np.ndarray:
    """``(n_users, n_items)`` scores of every item for every user at ``stage``.

    Examples
    --------
    >>> data = RecommendationData(["red car", "red bus", "bus"], 1, np.array([0]), np.array([0]),
    ...                           np.array([1]), np.array([2]))
    >>> spec = RecommenderSpec(encoder="tfidf", dim=2)
    >>> content_scores(build_recommender(spec, item_features(spec, data.item_texts), 1), data,
    ...                "test").shape
    (1, 3)
    """
    model.eval()
    with torch.no_grad():
        items = model.item_embeddings()  # (items, dim)
        users, history = data.history(stage)
        vectors = user_vectors(model, items, users, history, data.n_users)  # (users, dim)
        return (vectors @ items.T).double().numpy()


@dataclass
class TrainedRecommender:
    """A trained content member: what to store and how it trained."""

    model: ContentRecommender
    history: pd.DataFrame
    best_epoch: int
    steps: int
    seconds: float
    n_parameters: int

    def arrays(self) -> dict[str, np.ndarray]:
        """Final item embeddings (``items``) and learned user embeddings (``users``, if any)."""
        with torch.no_grad():
            arrays = {"items": self.model.item_embeddings().numpy().astype(np.float32)}
            if self.model.users is not None:
                arrays["users"] = self.model.users.weight.numpy().astype(np.float32)
        return arrays


Validator = Callable[[np.ndarray], float]
"""``validate(scores)`` -> a number to maximise (e.g. NDCG@10 on the validation items)."""


def train_recommender(
    spec: RecommenderSpec,
    data: RecommendationData,
    seed: int,
    validate: Validator,
    features: ItemFeatures | None = None,
) -> TrainedRecommender:
    """Train one content member; keep the weights of its best validation epoch.

    Parameters
    ----------
    spec
        The member (``kind == "content"``).
    data
        Training interactions and held-out items.
    seed
        Seeds initialisation and the batch order / negatives.
    validate
        Called with the validation scores ``(n_users, n_items)`` after every epoch.
    features
        Precomputed :func:`item_features` (shared between members with one encoder input).

    Raises
    ------
    DivergenceError
        When the loss becomes non-finite.

    Examples
    --------
    >>> data = RecommendationData(["red apple", "red cherry", "blue car", "blue boat"], 2,
    ...                           np.array([0, 1]), np.array([0, 2]), np.array([1, 3]),
    ...                           np.array([1, 3]))
    >>> spec = RecommenderSpec(encoder="linear", params={"embed_dim": 8}, dim=4, epochs=2)
    >>> trained = train_recommender(spec, data, seed=0, validate=lambda scores: 0.0)
    >>> trained.history["epoch"].tolist(), trained.arrays()["items"].shape
    ([1, 2], (4, 4))
    """
    start = time.perf_counter()
    features = features or item_features(spec, data.item_texts)
    torch.manual_seed(seed)
    model = build_recommender(spec, features, data.n_users)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    users = torch.tensor(data.train_users, dtype=torch.int64)
    items = torch.tensor(data.train_items, dtype=torch.int64)
    profile = _profile_matrix(data.train_users, data.train_items, data.n_users, data.n_items)
    counts = torch.as_tensor(np.bincount(data.train_users, minlength=data.n_users))
    counts = counts.to(torch.float32)
    train_mask = torch.as_tensor(data.seen("validation")) if spec.loss == "softmax" else None
    rows: list[dict[str, float]] = []
    best = (-math.inf, 0, copy.deepcopy(model.state_dict()))
    steps = 0
    for epoch in range(1, spec.epochs + 1):
        model.train()
        order = torch.randperm(len(users), generator=generator)
        total, batches = 0.0, 0
        for begin in range(0, len(order), spec.batch_size):
            batch = order[begin : begin + spec.batch_size]
            u, i = users[batch], items[batch]  # (b,)
            embeddings = model.item_embeddings()  # (items, dim)
            sums = torch.sparse.mm(profile, embeddings)[u]  # (b, dim)
            # Leave the positive out of its own profile: the model must predict it, not find it.
            rest = (counts[u] - 1.0).clamp(min=1.0)[:, None]  # (b, 1)
            vectors = (sums - embeddings[i]) / rest  # (b, dim)
            if model.users is not None:
                vectors = vectors + model.users(u)
            if spec.loss == "bpr":
                j = torch.randint(0, data.n_items, (len(u),), generator=generator)  # (b,)
                margin = (vectors * (embeddings[i] - embeddings[j])).sum(1)  # (b,)
                loss = -F.logsigmoid(margin).mean()
            elif spec.loss == "sampled_softmax":
                drawn = torch.randint(0, data.n_items, (spec.negatives,), generator=generator)
                positive = (vectors * embeddings[i]).sum(1, keepdim=True)  # (b, 1)
                negative = vectors @ embeddings[drawn].T  # (b, negatives)
                negative = negative.masked_fill(drawn[None, :] == i[:, None], -1e9)
                logits = torch.cat([positive, negative], dim=1)  # (b, 1 + negatives)
                loss = F.cross_entropy(logits, torch.zeros(len(u), dtype=torch.int64))
            else:
                logits = vectors @ embeddings.T  # (b, items)
                assert train_mask is not None
                others = train_mask[u].clone()
                others[torch.arange(len(u)), i] = False  # the target stays a candidate
                loss = F.cross_entropy(logits.masked_fill(others, -1e9), i)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
            steps += 1
        train_loss = total / max(batches, 1)
        if not math.isfinite(train_loss):
            raise DivergenceError(
                f"diverged: non-finite training loss at epoch {epoch}", _history(rows)
            )
        value = validate(content_scores(model, data, "validation"))
        rows.append(
            {
                "epoch": epoch,
                "step": steps,
                "train_loss": train_loss,
                "val_score": value,
                "seconds": time.perf_counter() - start,
            }
        )
        if value > best[0]:
            best = (value, epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    model.eval()
    n_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return TrainedRecommender(
        model, _history(rows), best[1], steps, time.perf_counter() - start, n_parameters
    )


def _history(rows: list[dict[str, float]]) -> pd.DataFrame:
    columns = ["epoch", "step", "train_loss", "val_score", "seconds"]
    return pd.DataFrame(rows, columns=columns)
