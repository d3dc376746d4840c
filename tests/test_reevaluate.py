"""Scheduled re-evaluation: alert on a planted covariate shift, none on fresh samples, exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from polyculture.errors import ConfigError, DataError
from polyculture.report import build_report
from polyculture.run import load_run, run_study
from polyculture.run.reevaluate import reevaluate
from test_fairness import synthetic_study, write_synthetic_csv

ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def logreg_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("reevaluate")
    study = synthetic_study(folder, name="reeval")
    study["zoo"] = [{"family": "logreg"}]
    return run_study(study, folder / "runs", report=False).root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("new-data")
    # Covariate shift: x1 and x2 squeezed towards the decision boundary (P(y | x) unchanged).
    write_synthetic_csv(folder / "shifted.csv", 1000, seed=101, scale=0.25)
    for seed in range(20):  # fresh samples of the training distribution
        write_synthetic_csv(folder / f"fresh{seed}.csv", 800, seed=200 + seed)
    return folder


def test_alert_on_a_planted_covariate_shift_with_accuracy_loss(
    logreg_run: Path, data_dir: Path
) -> None:
    result = reevaluate(logreg_run, data_dir / "shifted.csv", name="shifted")
    row = result.performance.iloc[0]
    assert result.alert and bool(row["flagged"])
    assert row["new_accuracy"] < row["old_accuracy"] - 0.1
    assert row["change_ci_high"] < 0
    drifted = set(result.drift.loc[result.drift["drifted"], "feature"])
    assert {"x1", "x2"} <= drifted and "x3" not in drifted
    summary = json.loads((result.folder / "summary.json").read_text())
    assert summary["alert"] and summary["verdict"].startswith("ALERT")
    assert (result.folder / "performance.csv").is_file()
    # The accuracy on new data equals a direct recount from a refitted logistic regression.
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from polyculture.run.reevaluate import new_data_task

    task = new_data_task(load_run(logreg_run), data_dir / "shifted.csv")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0))
    model.fit(task.train.x.numpy().astype("float64"), task.train.y.numpy())
    direct = (model.predict(task.test.x.numpy().astype("float64")) == task.test.y.numpy()).mean()
    assert row["new_accuracy"] == pytest.approx(direct)


def test_no_alert_on_fresh_samples_in_at_least_19_of_20_seeds(
    logreg_run: Path, data_dir: Path
) -> None:
    alerts = 0
    for seed in range(20):
        result = reevaluate(logreg_run, data_dir / f"fresh{seed}.csv", name=f"fresh{seed}")
        alerts += int(result.alert)
    assert alerts <= 1, alerts


def test_retrain_trains_flagged_members_on_old_and_new_data(
    logreg_run: Path, data_dir: Path
) -> None:
    result = reevaluate(logreg_run, data_dir / "shifted.csv", name="retrain", retrain=True)
    assert result.retrained is not None
    row = result.retrained.iloc[0]
    assert row["status"] == "ok" and row["instances"] == 500
    folder = result.folder / "members" / f"{row['member_id']}-retrained"
    assert (folder / "DONE").is_file()
    record = json.loads((folder / "member.json").read_text())
    original = json.loads((logreg_run / "members" / row["member_id"] / "member.json").read_text())
    assert record["train_rows"] == original["train_rows"] + 500  # old training rows + half new
    assert 0 <= row["mcnemar_p"] <= 1
    assert row["difference"] == pytest.approx(row["retrained_accuracy"] - row["old_accuracy"])
    page = build_report(logreg_run).read_text()
    assert "Re-evaluation on new data" in page and "retrained (old + new data)" in page


def test_bad_reevaluation_input(logreg_run: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        reevaluate(logreg_run, tmp_path / "missing.csv")
    with pytest.raises(ConfigError, match="alpha"):
        reevaluate(logreg_run, tmp_path / "missing.csv", alpha=1.5)
    with pytest.raises(ConfigError, match="plain folder name"):
        reevaluate(logreg_run, tmp_path / "missing.csv", name="../x")


def test_a_run_with_a_held_out_test_fraction_cannot_be_reevaluated(
    data_dir: Path, tmp_path: Path
) -> None:
    # Its training split came from the same file as its test split: pointing test_path at new
    # data would retrain on other rows, so it is refused in one line.
    study = synthetic_study(tmp_path, name="one-file")
    study["data"]["options"] = {
        k: v for k, v in study["data"]["options"].items() if k != "test_path"
    }
    study["zoo"] = [{"family": "logreg"}]
    run = run_study(study, tmp_path / "runs", report=False).root
    with pytest.raises(ConfigError, match="held out of one file"):
        reevaluate(run, data_dir / "fresh0.csv")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polyculture", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


def test_cli_exit_codes(logreg_run: Path, data_dir: Path, tmp_path: Path) -> None:
    shifted = _cli("reevaluate", str(logreg_run), "--data", str(data_dir / "shifted.csv"))
    assert shifted.returncode == 3, shifted.stderr
    assert "DEGRADED" in shifted.stdout and "ALERT" in shifted.stdout
    fresh = _cli(
        "reevaluate",
        str(logreg_run),
        "--data",
        str(data_dir / "fresh0.csv"),
        "--format",
        "json",
        "--name",
        "cli-fresh",
    )
    assert fresh.returncode == 0, fresh.stderr
    payload = json.loads(fresh.stdout)
    assert payload["alert"] is False and len(payload["members"]) == 1
    # New data whose columns differ from the training data's: named in one line, exit 2.
    frame = pd.read_csv(data_dir / "fresh1.csv").rename(columns={"x3": "z"})
    frame.to_csv(tmp_path / "renamed.csv", index=False)
    renamed = _cli("reevaluate", str(logreg_run), "--data", str(tmp_path / "renamed.csv"))
    lines = [line for line in renamed.stderr.splitlines() if line.strip()]
    assert renamed.returncode == 2 and len(lines) == 1, renamed.stderr
    assert "missing x3" in lines[0] and "extra z" in lines[0]


def _texts(n: int, seed: int, *, shifted: bool = False) -> pd.DataFrame:
    """Sentiment-like texts; ``shifted`` swaps in unseen filler words and flips half the cues."""
    rng = np.random.default_rng(seed)
    cues = {"pos": ["good great fine", "great lovely nice"], "neg": ["bad awful poor", "poor sad"]}
    rows = []
    for _ in range(n):
        label = str(rng.choice(["pos", "neg"]))
        cue = cues[label][rng.integers(0, 2)]
        filler = " ".join(rng.choice(["the", "a", "movie", "film", "plot"], 3))
        if shifted:
            filler = " ".join(rng.choice(["zzz", "qqq", "www"], 5))
            if rng.random() < 0.5:
                cue = cues["neg" if label == "pos" else "pos"][0]
        rows.append({"text": f"{cue} {filler}", "label": label})
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_text_runs_drift_on_the_final_representation(tmp_path: Path) -> None:
    _texts(400, 0).to_csv(tmp_path / "train.csv", index=False)
    _texts(200, 1).to_csv(tmp_path / "test.csv", index=False)
    _texts(200, 2, shifted=True).to_csv(tmp_path / "new.csv", index=False)
    study = {
        "name": "text",
        "seeds": [0],
        "data": {
            "name": "text_csv",
            "path": str(tmp_path / "train.csv"),
            "options": {"test_path": str(tmp_path / "test.csv")},
            "shifts": {},
        },
        "zoo": [{"family": "linear"}, {"family": "tfidf_logreg"}],
        "train": {"epochs": 3},
        "evaluate": {"probe_size": 50},
        "execution": {"workers": 1},
    }
    run = run_study(study, tmp_path / "runs", report=False).root
    result = reevaluate(run, tmp_path / "new.csv", name="text")
    assert result.alert and result.performance["flagged"].any()
    assert result.drift["feature"].str.contains("representation pc1").any()
    assert result.drift["drifted"].any()
