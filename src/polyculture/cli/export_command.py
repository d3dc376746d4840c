"""``polyculture export RUN_DIR MEMBER``: a trained member to a parity-checked ONNX file.

A plain function with typer options; ``polyculture.cli.main`` registers it as a command. Errors
are :class:`~polyculture.errors.PolycultureError` subclasses, which the CLI's ``main`` prints as
one line with exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape


def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `polyculture run`.")],
    member: Annotated[
        str,
        typer.Argument(help="Member id (or unique prefix), or model name with optional @SEED."),
    ],
    fmt: Annotated[str, typer.Option("--format", "-f", help="Export format: onnx.")] = "onnx",
    quantize: Annotated[
        str | None,
        typer.Option(help="Also write a dynamically quantized copy: int8 (accuracy measured)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="File (*.onnx) or folder to write to; default RUN_DIR/exports/."
        ),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Export a torch member to ONNX (opset 17, dynamic batch), checked at export.

    The ONNX checker must accept the file and its logits must match PyTorch within 1e-4 on the
    first 256 test rows (float32), else nothing is written. With --quantize int8 a dynamically
    quantized copy is written too, with its test accuracy beside the float32 one. A JSON sidecar
    records what was checked. Needs polyculture\\[export].
    """
    from polyculture.cli.main import console
    from polyculture.run.export import export_member

    result = export_member(run_dir, member, out=out, fmt=fmt, quantize=quantize)
    if json_:
        console.print_json(json.dumps(result.to_dict()))
        return
    report = result.export
    shape = ", ".join(str(s) for s in report.input_shape)
    console.print(
        f"[bold]{escape(result.name)}[/] seed {result.seed} ({escape(result.member_id)}) -> "
        f"[bold]{escape(str(report.path))}[/] ({_size(report.size_bytes)})",
        highlight=False,
    )
    console.print(
        f"  ONNX opset {report.opset}, input {escape(report.input_name)} {report.input_dtype} "
        f"({shape}), output {escape(report.output_name)}; checker passed",
        highlight=False,
    )
    console.print(
        f"  parity with PyTorch on {report.parity_rows} test rows: max |logit difference| "
        f"{report.max_abs_diff:.2g} (limit {report.tolerance:g})",
        highlight=False,
    )
    quantized = result.quantization
    if quantized is not None:
        console.print(
            f"  {quantized.scheme}: [bold]{escape(str(quantized.path))}[/] "
            f"({_size(quantized.size_bytes)}, {quantized.size_ratio:.2f} x float32); test "
            f"accuracy {quantized.float32_accuracy:.4f} -> {quantized.int8_accuracy:.4f} "
            f"({quantized.accuracy_change:+.4f}) on {quantized.rows} rows, "
            f"{quantized.agreement:.1%} same predictions",
            highlight=False,
        )
    console.print(f"  checks: {escape(str(result.sidecar))}", highlight=False)


def _size(n_bytes: int) -> str:
    """A file size for people: ``12.3 kB``, ``4.5 MB``."""
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} B"
