"""Pieces shared by the torch families: knob types, input-shape checks and a two-path base class.

Every torch family computes its logits and its representations with one private method,
:meth:`StagedModel._run`, so that ``forward`` (which skips collecting) and ``representations``
cannot drift apart: both run the very same modules in the very same order.

Text layout
-----------
A text task's inputs are int64 token ids ``(n, max_length)``, right-padded with
:data:`~polyculture.data.task.PAD_ID` (``0``); :data:`~polyculture.data.task.UNKNOWN_ID` (``1``)
stands for words outside the vocabulary. Text families start with a :class:`TokenEmbedding`
(``(n, L)`` ids to ``(n, L, embed_dim)`` vectors, the padding vector fixed at zero) and derive
a padding mask ``(n, L)`` from the ids with :func:`token_mask`; every pooling step over positions
(:func:`masked_mean`, :func:`masked_max`, :class:`AttentionPool`) ignores padded positions, so
adding more right padding leaves a member's outputs unchanged. Inputs may be shorter than the
task's ``max_length`` (trailing padding cut); the transformer, whose positions are learned, takes
none longer. A row of padding only (an empty text) is read as if its first position held a
token, so that every pooled vector is defined.

Text families derive from :class:`EmbeddingStagedModel`, which implements the embedding-space
protocol of adversarial attacks (``embed_inputs`` / ``forward_embedded``) on top of one method,
``_run_embedded``, again shared by ``forward`` and ``representations``.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, SerializerFunctionWrapHandler, model_serializer
from torch import nn

from polyculture.data.task import PAD_ID, Modality
from polyculture.errors import ConfigError
from polyculture.zoo.base import Knobs, ZooModel

#: A width (units, channels, d_model): a positive integer.
Width = Annotated[int, Field(gt=0, description="units / channels / model dimension per layer")]
#: A depth (number of layers or blocks): at least one.
Depth = Annotated[int, Field(ge=1, description="number of hidden layers / blocks")]
#: A dropout probability in [0, 1); 1 would zero every activation.
DropoutP = Annotated[float, Field(ge=0.0, lt=1.0, description="dropout probability")]
#: Size of the token embeddings of text inputs (ignored for other modalities).
EmbedDim = Annotated[
    int, Field(gt=0, description="token embedding size (text inputs only; ignored otherwise)")
]


class StableKnobs(Knobs):
    """Knobs whose dump leaves out knobs added later while they hold their default value.

    Member ids hash the knob dump; leaving a newly added knob out at its default keeps the ids
    (and cached results) of members planned before it existed, as ``TrainSpec`` does for
    ``adversarial``. Subclasses list such knobs in ``added_knobs``.

    Examples
    --------
    >>> class Toy(StableKnobs):
    ...     added_knobs: ClassVar[tuple[str, ...]] = ("embed_dim",)
    ...     width: int = 8
    ...     embed_dim: int = 64
    >>> Toy().model_dump(), Toy(embed_dim=32).model_dump()
    ({'width': 8}, {'width': 8, 'embed_dim': 32})
    """

    added_knobs: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_added_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        dumped: dict[str, Any] = handler(self)
        fields = type(self).model_fields
        for name in self.added_knobs:
            if name in dumped and getattr(self, name) == fields[name].default:
                del dumped[name]
        return dumped


#: Number of dimensions of one example, by modality (see ``polyculture.data.task``).
_RANKS: dict[str, int] = {"sequence": 2, "image": 3, "tabular": 1, "text": 1}

#: Representations are kept small so that probes and similarity measures stay cheap.
MAX_SEQUENCE_POSITIONS = 64
MAX_IMAGE_SIDE = 4


def check_input_shape(name: str, input_shape: tuple[int, ...], modality: Modality) -> None:
    """Raise :class:`ConfigError` unless ``input_shape`` is a valid layout for ``modality``.

    Parameters
    ----------
    name
        Family name, for the message.
    input_shape
        Shape of one example, without the batch dimension.
    modality
        ``sequence`` ``(C, L)``, ``image`` ``(C, H, W)`` or ``tabular`` ``(F,)``.

    Examples
    --------
    >>> check_input_shape("mlp", (1, 40), "sequence")
    >>> check_input_shape("mlp", (40,), "sequence")
    Traceback (most recent call last):
    ...
    polyculture.errors.ConfigError: model 'mlp' got sequence input shape (40,); ...
    """
    rank = _RANKS[modality]
    if len(input_shape) != rank or any(int(s) < 1 for s in input_shape):
        layout = {
            "sequence": "(channels, length)",
            "image": "(channels, height, width)",
            "text": "(max_length,)",
        }
        raise ConfigError(
            f"model '{name}' got {modality} input shape {tuple(input_shape)}",
            hint=f"{modality} inputs must be {layout.get(modality, '(features,)')} "
            "with every size >= 1",
        )


def flat_dim(input_shape: tuple[int, ...]) -> int:
    """Number of values in one example (the input size of a flattening model)."""
    return math.prod(input_shape)


def pool_representation(h: torch.Tensor) -> torch.Tensor:
    """Flatten a convolutional feature map to ``(n, d)``, average-pooling large ones first.

    Sequences longer than :data:`MAX_SEQUENCE_POSITIONS` and images larger than
    :data:`MAX_IMAGE_SIDE` per side are adaptive-average-pooled so that a representation has at
    most ``channels * 64`` or ``channels * 16`` dimensions.

    Parameters
    ----------
    h
        Feature map ``(n, C, L)`` or ``(n, C, H, W)``.

    Returns
    -------
    torch.Tensor
        ``(n, d)``.
    """
    if h.dim() == 3 and h.shape[-1] > MAX_SEQUENCE_POSITIONS:
        h = F.adaptive_avg_pool1d(h, MAX_SEQUENCE_POSITIONS)  # (n, C, 64)
    elif h.dim() == 4 and (h.shape[-2] > MAX_IMAGE_SIDE or h.shape[-1] > MAX_IMAGE_SIDE):
        side = (min(h.shape[-2], MAX_IMAGE_SIDE), min(h.shape[-1], MAX_IMAGE_SIDE))
        h = F.adaptive_avg_pool2d(h, side)  # (n, C, <=4, <=4)
    return h.flatten(1)  # (n, d)


class StagedModel(ZooModel):
    """A :class:`ZooModel` whose logits and representations come from one method, ``_run``."""

    @abstractmethod
    def _run(self, x: torch.Tensor, collect: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Compute logits ``(n, classes)`` and, when ``collect``, the representations before them.

        Parameters
        ----------
        x
            Inputs ``(n, *input_shape)``.
        collect
            Whether to fill the returned dict; ``False`` skips the (pooling) work.

        Returns
        -------
        tuple
            Logits and a dict of ``(n, d)`` representations in network order (without
            ``"logits"``; empty when ``collect`` is false).
        """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, classes)`` for inputs ``(n, *input_shape)``."""
        return self._run(x, collect=False)[0]

    def representations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named representations of ``x``, each ``(n, d)``, in network order, ending with logits."""
        logits, reps = self._run(x, collect=True)
        reps["logits"] = logits  # inserted last, so "logits" is always the final key
        return reps


# --------------------------------------------------------------------------------------------
# Text inputs: embedding stem, padding mask, masked pooling.
# --------------------------------------------------------------------------------------------


def check_vocab_size(name: str, vocab_size: int) -> None:
    """Raise :class:`ConfigError` unless ``vocab_size`` can hold padding, unknown and a word.

    Examples
    --------
    >>> check_vocab_size("cnn", 100)
    >>> check_vocab_size("cnn", 0)
    Traceback (most recent call last):
    ...
    polyculture.errors.ConfigError: model 'cnn' got a text vocabulary of 0 tokens; ...
    """
    if vocab_size < 3:
        raise ConfigError(
            f"model '{name}' got a text vocabulary of {vocab_size} tokens",
            hint="pass vocab_size=len(task.vocabulary) (padding, unknown and at least one word)",
        )


def text_lengths(ids: torch.Tensor) -> torch.Tensor:
    """Length of each row of right-padded token ids ``(n, L)``: int64 ``(n,)``, at least 1.

    The length runs up to the last non-padding token; a row of padding only gets length 1, so
    that every row has a position to pool over (and packed recurrent networks accept it).

    Examples
    --------
    >>> text_lengths(torch.tensor([[5, 7, 0], [0, 0, 0], [4, 0, 9]]))
    tensor([2, 1, 3])
    """
    positions = torch.arange(1, ids.shape[1] + 1, device=ids.device)  # (L,)
    last = torch.where(ids != PAD_ID, positions, 0).amax(dim=1)  # (n,)
    return last.clamp_min(1)


def token_mask(ids: torch.Tensor) -> torch.Tensor:
    """Which positions of right-padded token ids ``(n, L)`` hold text: bool ``(n, L)``.

    Positions before :func:`text_lengths` (a row of padding only keeps its first position).

    Examples
    --------
    >>> token_mask(torch.tensor([[5, 7, 0], [0, 0, 0]]))
    tensor([[ True,  True, False],
            [ True, False, False]])
    """
    positions = torch.arange(ids.shape[1], device=ids.device)  # (L,)
    return positions < text_lengths(ids).unsqueeze(1)  # (n, L)


def masked_mean(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``h`` ``(n, L, d)`` over the positions where ``mask`` ``(n, L)`` is true.

    ``mask=None`` averages over every position.

    Examples
    --------
    >>> h = torch.tensor([[[1.0], [3.0], [100.0]]])
    >>> masked_mean(h, torch.tensor([[True, True, False]]))
    tensor([[2.]])
    """
    if mask is None:
        return h.mean(dim=1)  # (n, d)
    weights = mask.to(h.dtype).unsqueeze(-1)  # (n, L, 1)
    return (h * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)  # (n, d)


def masked_max(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Maximum of ``h`` ``(n, L, d)`` over the positions where ``mask`` ``(n, L)`` is true.

    Examples
    --------
    >>> h = torch.tensor([[[1.0], [3.0], [100.0]]])
    >>> masked_max(h, torch.tensor([[True, True, False]]))
    tensor([[3.]])
    """
    if mask is None:
        return h.amax(dim=1)  # (n, d)
    return h.masked_fill(~mask.unsqueeze(-1), -math.inf).amax(dim=1)  # (n, d)


class TokenEmbedding(nn.Module):
    """Token ids ``(n, L)`` to vectors ``(n, L, embed_dim)``; padding maps to the zero vector.

    Parameters
    ----------
    vocab_size
        Number of token ids (``len(task.vocabulary)``); ids ``>= vocab_size`` are errors.
    embed_dim
        Size of each token vector.

    Examples
    --------
    >>> stem = TokenEmbedding(10, 4)
    >>> stem(torch.tensor([[3, 0]])).shape, bool(stem(torch.tensor([[0]])).abs().sum() == 0)
    (torch.Size([1, 2, 4]), True)
    """

    def __init__(self, vocab_size: int, embed_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)

    @property
    def embed_dim(self) -> int:
        """Size of each token vector."""
        return int(self.embed.embedding_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Vectors ``(n, L, embed_dim)`` of the ids ``(n, L)`` (any integer or integral float)."""
        return self.embed(ids.long())  # (n, L, embed_dim)


class AttentionPool(nn.Module):
    """Attention pooling with one learned query: a weighted mean over positions.

    ``scores = h . q / sqrt(d)``, masked positions get ``-inf``, ``weights = softmax(scores)``
    over positions and the pooled vector is ``sum_t weights_t h_t``. The query starts at zero, so
    a fresh pool is a plain (masked) mean.

    Parameters
    ----------
    dim
        Size ``d`` of each position's vector.

    Examples
    --------
    >>> pool = AttentionPool(3)
    >>> pooled, weights = pool(torch.ones(2, 5, 3), torch.tensor([[1, 1, 0, 0, 0]] * 2).bool())
    >>> pooled.shape, weights[0].tolist()
    (torch.Size([2, 3]), [0.5, 0.5, 0.0, 0.0, 0.0])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(dim))

    def forward(
        self, h: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool ``h`` ``(n, L, d)`` over positions where ``mask`` ``(n, L)`` (``None``: all).

        Returns
        -------
        tuple
            The pooled vectors ``(n, d)`` and the weights ``(n, L)`` (rows sum to 1, exactly 0
            on masked positions).
        """
        scores = h @ self.query / math.sqrt(h.shape[-1])  # (n, L)
        if mask is not None:
            scores = scores.masked_fill(~mask, -math.inf)
        weights = torch.softmax(scores, dim=1)  # (n, L)
        return torch.einsum("nl,nld->nd", weights, h), weights  # (n, d), (n, L)


@contextmanager
def inspecting(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode without gradients, restoring its mode afterwards.

    For inspection methods (attention weights and maps), which should not depend on dropout.

    Examples
    --------
    >>> net = nn.Dropout(0.5)
    >>> with inspecting(net):
    ...     net.training, torch.is_grad_enabled()
    (False, False)
    >>> net.training
    True
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


class EmbeddingStagedModel(StagedModel):
    """A :class:`StagedModel` that may read text through a :class:`TokenEmbedding`.

    Subclasses set ``self.embedding`` (``None`` for continuous inputs) and implement
    :meth:`_run_embedded`. For text, :meth:`embed_inputs` gives the token embeddings
    ``(n, L, embed_dim)`` and :meth:`forward_embedded` runs the rest of the network on them
    with the padding mask of the ids; for other modalities both act on the inputs themselves.
    """

    embedding: TokenEmbedding | None

    @abstractmethod
    def _run_embedded(
        self, h: torch.Tensor, x: torch.Tensor, collect: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Like :meth:`StagedModel._run`, from ``h = embed_inputs(x)``.

        Parameters
        ----------
        h
            Token embeddings ``(n, L, embed_dim)`` for text, else the inputs ``x`` themselves
            (maybe perturbed).
        x
            The original inputs; text models read the padding mask from them.
        collect
            Whether to fill the representation dict.
        """

    def text_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """Padding mask ``(n, L)`` of text inputs (:func:`token_mask`); ``None`` otherwise."""
        return token_mask(x) if self.embedding is not None else None

    def embed_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(n, L, embed_dim)`` for text, else ``x`` itself."""
        return self.embedding(x) if self.embedding is not None else x

    def forward_embedded(self, embedded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, classes)`` from ``embedded`` (see :meth:`embed_inputs`) and ids ``x``."""
        return self._run_embedded(embedded, x, collect=False)[0]

    def _run(self, x: torch.Tensor, collect: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self._run_embedded(self.embed_inputs(x), x, collect)
