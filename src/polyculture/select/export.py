"""Ship a member: a trained torch zoo model to an ONNX file, checked against PyTorch at export.

:func:`export_onnx` traces the network with the TorchScript-based ONNX exporter (opset
:data:`OPSET`, a dynamic batch axis), checks the file with ``onnx.checker``, runs it with
onnxruntime and compares its logits with eager PyTorch in float32 on the inputs it is given (a
task's first test rows, and the first of them alone, which exercises the batch axis); a largest
absolute difference above :data:`PARITY_TOLERANCE` is an :class:`ExportError` and no file is left
behind. :func:`quantize_onnx` makes a dynamically quantized int8 copy (weights stored as int8,
activations quantized on the fly) and measures the accuracy of both files on labelled inputs.

Inputs by modality: ``signal`` ``(batch, channels, length)``, ``image``
``(batch, channels, height, width)`` and ``features`` ``(batch, features)`` are float32;
``token_ids`` ``(batch, max_length)`` are int64 ids right-padded with 0, as in the task. The output
is ``logits`` ``(batch, classes)``.

Why the TorchScript exporter (``dynamo=False``) rather than torch's newer default: it exports
every torch family of the zoo, including recurrent networks over packed (variable-length) text,
which ``torch.export`` rejects, and needs only ``onnx`` and ``onnxruntime``. Two families are
traced through small adapters: text ``lstm``/``gru`` (the exporter needs the packed outputs in the
graph even when the head reads only the final states) and ``minilm`` (its eager forward trims
padding to the batch's longest text; the traced graph keeps the task's width and lets the
attention mask ignore padding, which gives the same logits).

Files are written to a temporary name beside the target and renamed only once every check
passed. ``onnx`` and ``onnxruntime`` come with the optional extra ``polyculture[export]`` and are
imported on first use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polyculture.data.task import Modality
from polyculture.errors import ConfigError, ExportError
from polyculture.zoo.base import ZooModel
from polyculture.zoo.pretrained import MiniLMClassifier
from polyculture.zoo.rnn import RecurrentNet

#: ONNX opset of exported files (the issue asks for 17 or later).
OPSET = 17
#: Largest absolute difference of float32 logits allowed between onnxruntime and PyTorch.
PARITY_TOLERANCE = 1e-4
#: How many inputs the parity check uses at most (the task's first test rows).
PARITY_ROWS = 256
#: Quantization schemes :func:`quantize_onnx` knows.
QUANTIZATIONS: tuple[str, ...] = ("int8",)
#: Name of the output of every exported model.
OUTPUT_NAME = "logits"
#: Name of the (batch) input of exported models, by modality.
INPUT_NAMES: dict[str, str] = {
    "sequence": "signal",
    "image": "image",
    "tabular": "features",
    "text": "token_ids",
}
_EXTRA_HINT = "install polyculture[export] (pip install 'polyculture[export]')"
_BATCH = "batch"
_AUXILIARY = "_auxiliary"


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote and checked.

    Attributes
    ----------
    path
        The ONNX file.
    opset
        Its ONNX opset.
    input_name, input_dtype, input_shape
        The model's input: name, ``float32`` or ``int64``, and shape with ``"batch"`` first.
    output_name
        The output (``logits``, ``(batch, classes)``).
    parity_rows
        Inputs the parity check ran on.
    max_abs_diff
        Largest absolute difference of logits between onnxruntime and PyTorch (float32).
    tolerance
        The largest difference allowed.
    size_bytes
        Size of the file.
    """

    path: Path
    opset: int
    input_name: str
    input_dtype: str
    input_shape: tuple[int | str, ...]
    output_name: str
    parity_rows: int
    max_abs_diff: float
    tolerance: float
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        out = asdict(self)
        out["path"] = str(self.path)
        out["input_shape"] = list(self.input_shape)
        return out


@dataclass(frozen=True)
class QuantizationReport:
    """What :func:`quantize_onnx` wrote and measured.

    Attributes
    ----------
    path
        The quantized ONNX file.
    scheme
        ``int8``: dynamic quantization (int8 weights, activations quantized at run time).
    size_bytes, float32_size_bytes
        Sizes of the quantized and the float32 file.
    rows
        Labelled inputs the accuracies were measured on.
    float32_accuracy, int8_accuracy
        Accuracy of the float32 and the int8 file (onnxruntime) on those inputs.
    agreement
        Share of inputs on which both files predict the same class.
    """

    path: Path
    scheme: str
    size_bytes: int
    float32_size_bytes: int
    rows: int
    float32_accuracy: float
    int8_accuracy: float
    agreement: float

    @property
    def accuracy_change(self) -> float:
        """int8 accuracy minus float32 accuracy (negative: quantization cost accuracy)."""
        return self.int8_accuracy - self.float32_accuracy

    @property
    def size_ratio(self) -> float:
        """int8 size over float32 size."""
        return self.size_bytes / self.float32_size_bytes

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, with the accuracy change and size ratio."""
        out = asdict(self)
        out["path"] = str(self.path)
        out["accuracy_change"] = self.accuracy_change
        out["size_ratio"] = self.size_ratio
        return out


def require_export_extra() -> None:
    """Raise a one-line :class:`ConfigError` unless ``onnx`` and ``onnxruntime`` import.

    Examples
    --------
    >>> require_export_extra()  # silent when polyculture[export] is installed
    """
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            f"ONNX export needs the export extra (module '{err.name}' is missing)",
            hint=_EXTRA_HINT,
        ) from None


def export_onnx(
    model: ZooModel,
    example: torch.Tensor,
    path: str | Path,
    modality: Modality,
    *,
    opset: int = OPSET,
    tolerance: float = PARITY_TOLERANCE,
    metadata: Mapping[str, str] | None = None,
) -> ExportReport:
    """Export ``model`` to the ONNX file ``path`` and check it against PyTorch.

    Parameters
    ----------
    model
        A torch zoo model (put in eval mode for the export, its mode restored after).
    example
        Real inputs ``(n, *input_shape)`` of the model's task (e.g. the first
        :data:`PARITY_ROWS` test rows): traced, then compared, all at once and the first alone.
    path
        The file to write (its folder is created); replaced only when every check passes.
    modality
        The task's modality; it names the input and sets its dtype (int64 ids for text).
    opset
        ONNX opset, at least 17.
    tolerance
        Largest absolute difference of logits allowed.
    metadata
        Extra ``metadata_props`` of the file (member, classes, ...); ``polyculture.modality``
        and ``polyculture.input_shape`` are always set.

    Returns
    -------
    ExportReport

    Raises
    ------
    ConfigError
        Without ``polyculture[export]``; an opset below 17; a model off the CPU; inputs whose
        dtype does not fit the modality.
    ExportError
        The ONNX checker rejects the file, or the logits differ by more than ``tolerance``.

    Examples
    --------
    >>> import tempfile
    >>> from polyculture.zoo import ModelSpec, create_model
    >>> _ = torch.manual_seed(0)
    >>> model = create_model(ModelSpec(family="mlp"), (1, 40), 10, "sequence")
    >>> path = Path(tempfile.mkdtemp()) / "mlp.onnx"
    >>> report = export_onnx(model, torch.randn(8, 1, 40), path, "sequence")
    >>> report.input_name, report.input_shape, report.max_abs_diff <= 1e-4
    ('signal', ('batch', 1, 40), True)
    """
    require_export_extra()
    import onnx

    if opset < 17:
        raise ConfigError(f"ONNX opset {opset} is too old", hint="use opset 17 or later")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ConfigError("ONNX export needs the model on the CPU", hint="call model.cpu() first")
    example = _checked_inputs(example, modality)
    target = Path(path)
    input_name = INPUT_NAMES[modality]
    module, trace_input, auxiliary = _exportable(model, example)
    was_training = model.training
    model.eval()
    try:
        with _scratch_folder(target) as scratch:
            staged = scratch / "model.onnx"
            output_names = [OUTPUT_NAME] + [f"{_AUXILIARY}{i}" for i in range(auxiliary)]
            with _quiet_exporter():
                torch.onnx.export(
                    module,
                    (trace_input,),
                    str(staged),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[input_name],
                    output_names=output_names,
                    dynamic_axes={name: {0: _BATCH} for name in [input_name, *output_names]},
                )
            if auxiliary:
                # Keep only the logits (and what they need) of the graph.
                onnx.utils.extract_model(str(staged), str(staged), [input_name], [OUTPUT_NAME])
            proto = onnx.load(str(staged))
            props = {
                "polyculture.modality": modality,
                "polyculture.input_shape": ",".join(str(s) for s in example.shape[1:]),
                **(metadata or {}),
            }
            onnx.helper.set_model_props(proto, props)
            onnx.save(proto, str(staged))
            try:
                onnx.checker.check_model(str(staged), full_check=True)
            except onnx.checker.ValidationError as err:
                raise ExportError(
                    f"the ONNX checker rejects the export of {type(model).__name__}: "
                    + str(err).splitlines()[0],
                    hint="this family is not exportable yet; please report it",
                ) from None
            with torch.no_grad():
                expected = model(example).float().numpy()  # (n, classes)
                expected_one = model(example[:1]).float().numpy()  # (1, classes)
            got = onnx_logits(staged, example)
            got_one = onnx_logits(staged, example[:1])
            diff = max(_max_abs_diff(got, expected), _max_abs_diff(got_one, expected_one))
            if not diff <= tolerance:  # NaN fails too
                raise ExportError(
                    f"ONNX logits of {type(model).__name__} differ from PyTorch by {diff:.3g} "
                    f"(more than {tolerance:g}) on {len(example)} inputs",
                    hint="no file was written; please report it with the member's family",
                )
            _publish(staged, target)
    finally:
        model.train(was_training)
    return ExportReport(
        path=target,
        opset=opset,
        input_name=input_name,
        input_dtype=_dtype_name(modality),
        input_shape=(_BATCH, *(int(s) for s in example.shape[1:])),
        output_name=OUTPUT_NAME,
        parity_rows=len(example),
        max_abs_diff=diff,
        tolerance=tolerance,
        size_bytes=target.stat().st_size,
    )


def quantize_onnx(
    source: str | Path,
    path: str | Path,
    x: torch.Tensor,
    y: torch.Tensor,
    scheme: str = "int8",
    batch_size: int = 1,
) -> QuantizationReport:
    """Write a dynamically quantized copy of the ONNX file ``source`` and measure what it costs.

    Weights of matrix products, convolutions, recurrent cells and embeddings are stored as int8;
    activations are quantized on the fly (onnxruntime's ``quantize_dynamic``, after its
    pre-processing). Both files then classify ``x``; their accuracies against ``y`` are reported.

    Activations get one scale per tensor, so an int8 prediction can change with the inputs it is
    batched with; accuracies are therefore measured ``batch_size`` inputs at a time, by default
    one, as a service answering single requests would see them.

    Parameters
    ----------
    source
        A float32 ONNX file written by :func:`export_onnx`.
    path
        The quantized file to write (replaced only once it ran).
    x, y
        Labelled inputs ``(n, *input_shape)`` and class indices ``(n,)``: the whole test split.
    scheme
        ``int8`` (the only one).
    batch_size
        Inputs per onnxruntime call while measuring accuracy.

    Returns
    -------
    QuantizationReport
        With ``rows`` = ``len(y)`` and the accuracies of both files.

    Raises
    ------
    ConfigError
        Without ``polyculture[export]``, an unknown scheme, or ``x`` and ``y`` of different
        lengths.

    Examples
    --------
    >>> import tempfile
    >>> from polyculture.zoo import ModelSpec, create_model
    >>> _ = torch.manual_seed(0)
    >>> model = create_model(ModelSpec(family="linear"), (4,), 3, "tabular")
    >>> folder = Path(tempfile.mkdtemp())
    >>> x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    >>> _ = export_onnx(model, x, folder / "m.onnx", "tabular")
    >>> report = quantize_onnx(folder / "m.onnx", folder / "m.int8.onnx", x, y)
    >>> report.rows, 0.0 <= report.int8_accuracy <= 1.0
    (50, True)
    """
    require_export_extra()
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if scheme not in QUANTIZATIONS:
        raise ConfigError(
            f"unknown quantization '{scheme}'",
            hint=f"use {' or '.join(QUANTIZATIONS)} (dynamic int8), or none",
        )
    if len(x) != len(y) or len(y) == 0:
        raise ConfigError(
            f"quantize_onnx got {len(x)} inputs and {len(y)} labels",
            hint="pass the test split's x and y (same non-zero length)",
        )
    source, target = Path(source), Path(path)
    with _scratch_folder(target) as scratch:
        prepared, staged = scratch / "prepared.onnx", scratch / "model.onnx"
        with _quiet_exporter():
            quant_pre_process(str(source), str(prepared))
            quantize_dynamic(str(prepared), str(staged), weight_type=QuantType.QInt8)
        labels = y.numpy()
        predicted_float = onnx_logits(source, x, batch_size).argmax(axis=1)  # (n,)
        predicted_int8 = onnx_logits(staged, x, batch_size).argmax(axis=1)  # (n,)
        _publish(staged, target)
    return QuantizationReport(
        path=target,
        scheme=scheme,
        size_bytes=target.stat().st_size,
        float32_size_bytes=source.stat().st_size,
        rows=len(labels),
        float32_accuracy=float(np.mean(predicted_float == labels)),
        int8_accuracy=float(np.mean(predicted_int8 == labels)),
        agreement=float(np.mean(predicted_float == predicted_int8)),
    )


def onnx_logits(path: str | Path, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Logits ``(n, classes)`` of the exported model ``path`` on ``x``, run with onnxruntime.

    Runs on the CPU with torch's current thread count, in batches of ``batch_size``.

    Examples
    --------
    >>> import tempfile
    >>> from polyculture.zoo import ModelSpec, create_model
    >>> model = create_model(ModelSpec(family="linear"), (4,), 3, "tabular")
    >>> path = Path(tempfile.mkdtemp()) / "m.onnx"
    >>> _ = export_onnx(model, torch.zeros(2, 4), path, "tabular")
    >>> onnx_logits(path, torch.zeros(5, 4)).shape
    (5, 3)
    """
    require_export_extra()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    array = x.numpy()
    parts = [
        session.run(None, {name: array[start : start + batch_size]})[0]
        for start in range(0, len(array), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32)  # (n, classes)


def _dtype_name(modality: Modality) -> str:
    return "int64" if modality == "text" else "float32"


def _checked_inputs(example: torch.Tensor, modality: Modality) -> torch.Tensor:
    """``example`` as the exported model's dtype: int64 ids for text, float32 otherwise."""
    if len(example) == 0:
        raise ConfigError("export got no example inputs", hint="pass the task's first test rows")
    if modality == "text":
        if example.is_floating_point() or example.dim() != 2:
            raise ConfigError(
                f"text export needs int64 token ids (n, length), got {example.dtype} "
                f"{tuple(example.shape)}",
                hint="pass the text task's x (token ids), not embeddings",
            )
        return example.long().cpu()
    if not example.is_floating_point():
        raise ConfigError(
            f"{modality} export needs float inputs, got {example.dtype}",
            hint="pass the task's x as float32",
        )
    return example.float().cpu()


class _PackedRecurrent(nn.Module):
    """A text ``lstm``/``gru`` that also returns its per-step outputs ``(n, L, dirs*width)``.

    The exporter turns packing into ONNX ``sequence_lens`` only when the packed outputs are
    unpacked in the graph; with ``readout="last"`` they are unused and it fails. The extra output
    keeps them, and is cut from the file after the export.
    """

    def __init__(self, net: RecurrentNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, final, mask = self.net._recur(self.net.embed_inputs(x), x, None)
        hidden, _ = self.net._read(out, final, mask)
        return self.net.head(hidden), out  # (n, classes), (n, L, dirs*width)


class _TruncatingMiniLM(nn.Module):
    """``minilm`` with its input truncation spelled in tensor operations (exportable).

    Eager ``minilm`` cuts the padding after the batch's longest text (a length read from the
    data, which tracing would freeze) and, for texts longer than ``max_length``, writes ``[SEP]``
    at the cut. Here the width stays ``min(L, max_length)`` for every batch; the attention mask
    makes the extra padding irrelevant.
    """

    def __init__(self, net: MiniLMClassifier) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = min(x.shape[1], self.net.max_length)
        if x.shape[1] > keep:
            cut = (x[:, keep:] != self.net.pad_id).any(dim=1)  # (n,): texts longer than keep
            last = torch.arange(keep, device=x.device) == keep - 1  # (keep,)
            sep = torch.full_like(x[:, :keep], self.net.sep_id)  # (n, keep)
            x = torch.where(cut[:, None] & last, sep, x[:, :keep])  # (n, keep)
        logits: torch.Tensor = self.net(x)
        return logits  # (n, classes)


def _exportable(model: ZooModel, example: torch.Tensor) -> tuple[nn.Module, torch.Tensor, int]:
    """The module to trace, the input to trace it with, and its outputs after the logits."""
    if isinstance(model, RecurrentNet) and model.embedding is not None:
        return _PackedRecurrent(model), example, 1
    if isinstance(model, MiniLMClassifier):
        # The eager model measures the longest text when traced; a text that fills the width
        # makes the traced graph keep the full width, whatever the batch.
        traced = example[:1].clone()
        traced[0, -1] = model.sep_id
        return _TruncatingMiniLM(model), torch.cat([traced, example[1:]]), 0
    return model, example, 0


def _max_abs_diff(got: np.ndarray, expected: np.ndarray) -> float:
    if got.shape != expected.shape:
        raise ExportError(
            f"the ONNX model returns logits of shape {got.shape}, PyTorch {expected.shape}",
            hint="please report it with the member's family",
        )
    return float(np.max(np.abs(got - expected)))


@contextlib.contextmanager
def _scratch_folder(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` (same file system, so a rename publishes)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(staged: Path, target: Path) -> None:
    """Rename the checked file onto ``target``, with the permissions of a normal new file."""
    os.chmod(staged, 0o666 & ~_current_umask())
    os.replace(staged, target)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's and quantizer's chatter (Python warnings, logging, C++ warnings).

    The TorchScript exporter warns that it is the legacy path and prints C++ shape-inference
    notes straight to file descriptor 2; none of it is actionable for a user, and the checks
    that follow the export are what count. Errors still raise.
    """
    root = logging.getLogger()
    level = root.level
    saved_fd = os.dup(2)
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root.setLevel(logging.ERROR)
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            root.setLevel(level)
