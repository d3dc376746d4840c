"""End to end through the Python API: run directory contract, determinism, resume, failures."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from conftest import tiny_study
from polyculture import load_run, run_study
from polyculture.errors import DataError, RunStoreError
from polyculture.zoo import FAMILIES, Knobs, ZooModel, family


class Exploding(ZooModel):
    """Logits scaled by 1e20: one SGD step sends the weights, then the loss, to infinity."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, classes)

    def representations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.linear(x.flatten(1)) * 1e20}


class NoKnobs(Knobs):
    pass


if "test_exploding" not in FAMILIES:

    @family(
        "test_exploding",
        kind="torch",
        modalities=("image",),
        knobs=NoKnobs,
        description="diverges on purpose (tests)",
    )
    def _build(knobs: NoKnobs, shape: tuple[int, ...], classes: int, modality: str) -> ZooModel:
        return Exploding(int(np.prod(shape)), classes)


DIVERGING = {
    "family": "test_exploding",
    "train": {"optimizer": "sgd", "lr": 1.0, "schedule": "constant"},
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    run_study(tiny_study(zoo=[*tiny_study()["zoo"], DIVERGING]), out)
    return out / "tiny"


def test_run_directory_contract(tiny_run: Path) -> None:
    results = load_run(tiny_run)
    members = results.members
    assert len(members) == 8  # 4 entries x 2 seeds
    assert (tiny_run / "tables" / "members.csv").is_file()
    study = tomllib.loads((tiny_run / "study.toml").read_text())
    assert {"polyculture", "torch"} <= set(study["versions"])
    task = json.loads((tiny_run / "task.json").read_text())
    assert task["sizes"]["test"] == 450 and task["modality"] == "image"
    for column in (
        "test_accuracy",
        "test_accuracy_ci_low",
        "test_macro_f1",
        "test_nll",
        "test_brier",
        "test_ece",
        "test_noise_accuracy",
        "val_accuracy",
    ):
        assert column in members
    ok = members[members["status"] == "ok"]
    assert (ok["test_accuracy_ci_low"] <= ok["test_accuracy"]).all()
    assert (ok["test_accuracy"] <= ok["test_accuracy_ci_high"]).all()
    assert (ok.loc[ok["family"] == "logreg", "test_accuracy"] > 0.9).all()

    predictions = results.predictions()
    per_member = 135 + 450 * 4  # val + test + three shifted test sets
    assert len(predictions) == len(ok) * per_member
    assert set(predictions.columns) >= {
        "member_id",
        "split",
        "instance",
        "label",
        "prediction",
        "p_true",
        "correct",
    }
    check = predictions.merge(members[["member_id", "test_accuracy"]], on="member_id")
    test_rows = check[check["split"] == "test"]
    measured = test_rows.groupby("member_id")["correct"].mean()
    np.testing.assert_allclose(measured, test_rows.groupby("member_id")["test_accuracy"].first())

    mlp = ok[ok["family"] == "mlp"].iloc[0]
    folder = tiny_run / "members" / mlp["member_id"]
    assert (folder / "DONE").is_file()
    umask = os.umask(0)
    os.umask(umask)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask  # not owner-only like mkdtemp
    assert (tiny_run / "tables" / "members.parquet").stat().st_mode & 0o777 == 0o666 & ~umask
    weights = load_file(str(folder / "weights.safetensors"))
    assert sum(t.numel() for t in weights.values()) == mlp["n_parameters"]
    representations = results.representations(mlp["member_id"])
    assert list(representations) == ["block1", "logits"]
    assert representations["block1"].shape == (100, 32)
    history = results.history()
    assert set(history["member_id"]) == set(ok.loc[ok["kind"] == "torch", "member_id"])
    assert any((tiny_run / "tensorboard").rglob("events.out.tfevents.*"))
    projector = list((tiny_run / "tensorboard").rglob("projector_config.pbtxt"))
    assert len(projector) == len(ok)  # the final-layer probe embedding of every ok member
    metadata = next((tiny_run / "tensorboard").rglob("metadata.tsv")).read_text().split()
    assert len(metadata) == 100 and set(metadata) <= set("0123456789")


def test_user_text_in_names_stays_inside_the_run_directory(tmp_path: Path) -> None:
    hostile = {"family": "mlp", "name": "../../escape/<b>", "params": {"width": 8}}
    results = run_study(tiny_study(seeds=[0], zoo=[hostile]), tmp_path / "runs")
    assert results.members["name"].tolist() == ["../../escape/<b>"]
    assert not (tmp_path / "escape").exists()
    logs = [p.name for p in (results.root / "tensorboard").iterdir()]
    assert len(logs) == 1 and "/" not in logs[0] and not logs[0].startswith(".")


def test_diverging_member_is_recorded_and_the_study_goes_on(tiny_run: Path) -> None:
    members = load_run(tiny_run).members
    failed = members[members["status"] == "failed"]
    assert len(failed) == 2 and (failed["family"] == "test_exploding").all()
    assert failed["reason"].str.contains("lower train.lr").all()
    assert (members["status"] == "ok").sum() == 6
    summary = load_run(tiny_run).summary()
    assert summary.loc[summary["name"] == "test_exploding", "failed"].item() == 2


def test_same_study_same_seed_identical_predictions(tmp_path: Path) -> None:
    first = run_study(tiny_study(), tmp_path / "a").predictions()
    second = run_study(tiny_study(), tmp_path / "b").predictions()
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["auto", "processes"])  # auto: Dask when installed
def test_workers_give_the_same_numbers_as_serial(tmp_path: Path, engine: str) -> None:
    serial = run_study(tiny_study(), tmp_path / "serial", workers=1)
    study = tiny_study(execution={"workers": 1, "engine": engine})
    parallel = run_study(study, tmp_path / "parallel", workers=2)
    pd.testing.assert_frame_equal(serial.predictions(), parallel.predictions())
    columns = ["member_id", "test_accuracy", "test_nll"]
    pd.testing.assert_frame_equal(serial.members[columns], parallel.members[columns])


def test_rerun_skips_finished_members_and_extends(tmp_path: Path) -> None:
    run_study(tiny_study(), tmp_path)
    seen: list[bool] = []
    run_study(tiny_study(), tmp_path, on_member=lambda plan, record, skipped: seen.append(skipped))
    assert seen and all(seen)
    seen.clear()
    extended = run_study(
        tiny_study(seeds=[0, 1, 2]),
        tmp_path,
        on_member=lambda plan, record, skipped: seen.append(skipped),
    )
    assert seen.count(False) == 3 and seen.count(True) == 6
    assert len(extended.members) == 9


def test_bad_data_leaves_no_run_directory(tmp_path: Path) -> None:
    study = tiny_study(data={"name": "idx", "path": str(tmp_path / "missing")})
    with pytest.raises(DataError, match="does not exist"):
        run_study(study, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_load_run_errors(tmp_path: Path) -> None:
    with pytest.raises(RunStoreError, match="not a run directory"):
        load_run(tmp_path)


def test_zoo_measures_are_stored(tiny_run: Path) -> None:
    results = load_run(tiny_run)
    ok = results.members[results.members["status"] == "ok"]
    store = results.store
    similarity = store.table("similarity")
    final = similarity[similarity["measure"] == "linear_cka"]
    pairs = final[final["layer_a"] == final["layer_b"]]
    self_pairs = pairs[pairs["member_a"] == pairs["member_b"]]
    np.testing.assert_allclose(self_pairs["value"], 1.0, atol=1e-6)
    m = len(ok)
    assert (
        len(
            final[(final["member_a"] != final["member_b"]) | (final["layer_a"] == final["layer_b"])]
        )
        >= m * (m + 1) // 2
    )
    assert similarity["value"].between(-1e-6, 1 + 1e-6).all()
    assert set(similarity["member_a"]) <= set(ok["member_id"])  # failed members are left out

    agreement = store.table("agreement")
    test = agreement[(agreement["split"] == "test") & (agreement["measure"] == "disagreement")]
    assert len(test) == m * (m + 1) // 2
    diagonal = test[test["member_a"] == test["member_b"]]
    assert (diagonal["value"] == 0).all()

    homogenization = store.table("homogenization")
    scopes = set(homogenization.loc[homogenization["split"] == "test", "scope"])
    assert {"zoo", "family:linear", "family:mlp"} <= scopes
    zoo = homogenization[(homogenization["scope"] == "zoo") & (homogenization["split"] == "test")]
    assert zoo["members"].item() == m
    counts = store.table("failure_counts")
    total = counts[(counts["scope"] == "zoo") & (counts["split"] == "test")]
    assert total["observed"].sum() == pytest.approx(1.0) and total[
        "expected"
    ].sum() == pytest.approx(1.0)
    headline = results.headline()
    assert headline["members"] == m and np.isfinite(headline["error_consistency_within"])


def csv_task_study(path: Path) -> dict[str, object]:
    return tiny_study(
        name="csvtask",
        seeds=[0],
        data={"name": "csv", "path": str(path), "options": {"label": "y"}},
        zoo=[{"family": "logreg"}, {"family": "random_forest", "params": {"max_depth": None}}],
    )


def test_member_ids_follow_the_data_not_its_path(tmp_path: Path) -> None:
    rows = "".join(f"{i},{(i * 7) % 5},{i % 2}\n" for i in range(60))
    first = tmp_path / "a.csv"
    first.write_text("x,z,y\n" + rows)
    copy = tmp_path / "elsewhere" / "b.csv"
    copy.parent.mkdir()
    copy.write_text("x,z,y\n" + rows)
    out = tmp_path / "runs"
    ids = run_study(csv_task_study(first), out).members["member_id"].tolist()
    skipped: list[bool] = []
    run_study(csv_task_study(copy), out, on_member=lambda p, r, s: skipped.append(s))
    assert skipped == [True, True]  # same data from another path: nothing retrains
    first.write_text("x,z,y\n" + rows.replace("\n3,", "\n4,", 1))
    changed = run_study(csv_task_study(first), out).members["member_id"].tolist()
    assert set(changed).isdisjoint(ids)  # edited data: new members


def test_single_member_run_has_no_headline(tmp_path: Path) -> None:
    results = run_study(tiny_study(seeds=[0], zoo=[{"family": "logreg"}]), tmp_path)
    assert results.headline() == {}
    assert results.store.table("homogenization").empty
