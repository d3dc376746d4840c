"""Export a member of a run directory: ``polyculture export RUN_DIR MEMBER``.

Rebuilds the member (:func:`~polyculture.run.members.load_member`), exports it with
:func:`~polyculture.select.export.export_onnx` (parity checked on the first test rows), optionally
quantizes it (accuracy measured on the whole test split) and writes, beside each file, nothing
but one JSON sidecar that says what was checked::

    <run>/exports/<member name>-seed<k>-<member id>.onnx         float32, parity-checked
    <run>/exports/<member name>-seed<k>-<member id>.int8.onnx    with --quantize int8
    <run>/exports/<member name>-seed<k>-<member id>.json         member, input, parity, sizes,
                                                                 accuracies, package versions
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from polyculture.errors import ConfigError
from polyculture.run.members import find_member, load_member
from polyculture.run.results import RunResults, load_run
from polyculture.run.store import package_versions, write_text
from polyculture.select.export import (
    PARITY_ROWS,
    QUANTIZATIONS,
    ExportReport,
    QuantizationReport,
    export_onnx,
    quantize_onnx,
    require_export_extra,
)
from polyculture.zoo.base import FAMILIES

#: Export formats ``export_member`` writes.
FORMATS: tuple[str, ...] = ("onnx",)


@dataclass(frozen=True)
class ExportResult:
    """One exported member: what was written, checked and measured.

    Attributes
    ----------
    member_id, name, seed, family
        The member.
    export
        The float32 file and its parity check.
    quantization
        The int8 file and the accuracy change, when asked for.
    sidecar
        The JSON file beside the export that records all of it.
    """

    member_id: str
    name: str
    seed: int
    family: str
    export: ExportReport
    quantization: QuantizationReport | None
    sidecar: Path

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return {
            "member_id": self.member_id,
            "name": self.name,
            "seed": self.seed,
            "family": self.family,
            "export": self.export.to_dict(),
            "quantization": None if self.quantization is None else self.quantization.to_dict(),
            "sidecar": str(self.sidecar),
        }


def export_file_name(name: str, seed: int, member_id: str) -> str:
    """File name of an export: the member's name made safe for any file system, seed and id.

    Examples
    --------
    >>> export_file_name("cnn(depth=3,width=32)", 0, "2ada8d86717b")
    'cnn-depth-3-width-32-seed0-2ada8d86717b.onnx'
    """
    safe = re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-.") or "member"
    return f"{safe}-seed{seed}-{member_id}.onnx"


def check_export_options(fmt: str, quantize: str | None) -> None:
    """Raise a one-line :class:`ConfigError` for an unknown format or quantization.

    Examples
    --------
    >>> check_export_options("onnx", "int8")
    >>> check_export_options("tflite", None)
    Traceback (most recent call last):
    ...
    polyculture.errors.ConfigError: unknown export format 'tflite'; only onnx is supported
    """
    if fmt not in FORMATS:
        raise ConfigError(
            f"unknown export format '{fmt}'", hint=f"only {' or '.join(FORMATS)} is supported"
        )
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(
            f"unknown quantization '{quantize}'",
            hint=f"use {' or '.join(QUANTIZATIONS)} (dynamic int8 quantization), or leave it out",
        )


def export_member(
    run_dir: str | Path | RunResults,
    member: str,
    out: str | Path | None = None,
    fmt: str = "onnx",
    quantize: str | None = None,
) -> ExportResult:
    """Export a trained torch member of a run to ONNX, parity-checked, maybe quantized.

    Parameters
    ----------
    run_dir
        A run directory (or its loaded :class:`RunResults`).
    member
        A member id, a unique prefix of one, or a model name with an optional ``@seed``.
    out
        The float32 file to write when it ends with ``.onnx``, else a folder for the default
        name (``<name>-seed<k>-<id>.onnx``). Default: the folder ``RUN_DIR/exports``. The int8
        file and the JSON sidecar go beside it (``.int8.onnx``, ``.json``).
    fmt
        ``onnx`` (the only format).
    quantize
        ``int8`` for a dynamically quantized copy too, with its test accuracy change.

    Returns
    -------
    ExportResult

    Raises
    ------
    ConfigError
        Unknown format or quantization, ``polyculture[export]`` missing, unknown member, a
        scikit-learn member, a member that failed or adapts a pretrained backbone.
    ExportError
        The exported file fails the ONNX checker or the parity check (nothing is left behind).

    Examples
    --------
    Training even a small run takes seconds, so this example is skipped in the test suite
    (``tests/test_export.py`` runs the same steps):

    >>> import tempfile
    >>> from polyculture.run import run_study
    >>> run = run_study("mnist1d", tempfile.mkdtemp(), ["data.name='digits'",
    ...     "zoo=[{family='linear'}]", "seeds=[0]", "train.epochs=1"], workers=1)  # doctest: +SKIP
    >>> result = export_member(run, "linear", quantize="int8")  # doctest: +SKIP
    >>> result.export.max_abs_diff <= 1e-4, result.quantization.rows  # doctest: +SKIP
    (True, 450)
    """
    check_export_options(fmt, quantize)
    require_export_extra()
    results = run_dir if isinstance(run_dir, RunResults) else load_run(run_dir)
    row = find_member(results.members, member)
    if row["kind"] != "torch":
        torch_families = [n for n in FAMILIES.names() if FAMILIES.get(n).kind == "torch"]
        raise ConfigError(
            f"cannot export member {row['name']} seed {row['seed']}: it is a scikit-learn model "
            f"({row['family']}), and export supports torch members only",
            hint=f"export a member of a torch family ({', '.join(torch_families)})",
        )
    trained = load_member(results, str(row["member_id"]))
    record, task = trained.record, trained.task
    member_id = str(record.get("member_id", row["member_id"]))
    name, seed = str(record["name"]), int(record["seed"])
    target = _target(results.root, out, export_file_name(name, seed, member_id))
    metadata = {
        "polyculture.member_id": member_id,
        "polyculture.member": name,
        "polyculture.seed": str(seed),
        "polyculture.family": str(record["family"]),
        "polyculture.class_names": json.dumps(list(task.class_names)),
    }
    report = export_onnx(
        trained.model, task.test.x[:PARITY_ROWS], target, task.modality, metadata=metadata
    )
    quantization = None
    if quantize is not None:
        quantized = target.with_name(target.name.removesuffix(".onnx") + f".{quantize}.onnx")
        quantization = quantize_onnx(target, quantized, task.test.x, task.test.y, quantize)
    sidecar = target.with_name(target.name.removesuffix(".onnx") + ".json")
    result = ExportResult(
        member_id, name, seed, str(record["family"]), report, quantization, sidecar
    )
    facts = {
        **result.to_dict(),
        "run_dir": str(results.root),
        "modality": task.modality,
        "class_names": list(task.class_names),
        "test_rows": len(task.test),
        "versions": {**package_versions(), **_export_versions()},
    }
    write_text(sidecar, json.dumps(facts, indent=2) + "\n")
    return result


def _target(root: Path, out: str | Path | None, default_name: str) -> Path:
    if out is None:
        return root / "exports" / default_name
    path = Path(out)
    return path if path.suffix == ".onnx" else path / default_name


def _export_versions() -> dict[str, str]:
    found = {}
    for package in ("onnx", "onnxruntime"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:  # e.g. onnxruntime-gpu provides the module
            found[package] = "unknown"
    return found
