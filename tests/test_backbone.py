"""Backbones shared by members (probe, fine-tune), data shards and ecosystems, end to end."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import tiny_study
from polyculture.data import DataSpec, build_task
from polyculture.data.builders import stratified_shards
from polyculture.errors import ConfigError
from polyculture.measure.agreement import error_consistency
from polyculture.measure.ecosystem import Ecosystem, compare_ecosystems
from polyculture.measure.similarity import linear_cka
from polyculture.run.runner import run_study
from polyculture.run.store import RunStore
from polyculture.run.study import expand, load_study
from polyculture.train.backbone import AdaptedModel, build_backbone
from polyculture.train.member import shard_task
from polyculture.zoo.base import ModelSpec, create_model

BACKBONE = {
    "name": "simclr",
    "family": "cnn",
    "params": {"width": 8, "depth": 2},
    "method": "contrastive",
    "pretrain": {"epochs": 2, "batch_size": 128},
}


def sharing_study(**changes: Any) -> dict[str, Any]:
    """Digits: one contrastive backbone adapted three ways, a from-scratch zoo and shards."""
    study = tiny_study(
        "sharing-tiny",
        seeds=[0],
        backbones=[BACKBONE],
        zoo=[
            {"name": "probe-logreg", "family": "logreg", "backbone": "simclr"},
            {"name": "probe-linear", "family": "linear", "backbone": "simclr"},
            {
                "name": "tuned",
                "family": "linear",
                "backbone": "simclr",
                "adapt": "finetune",
                "finetune_layers": 1,
            },
            {"name": "scratch-mlp", "family": "mlp", "params": {"width": 32, "depth": 1}},
            {"name": "scratch-linear", "family": "linear"},
            {"name": "scratch-logreg", "family": "logreg", "params": {"max_iter": 200}},
            {"name": "shards", "family": "logreg", "params": {"max_iter": 200}, "shards": 3},
            {
                "name": "attn",
                "family": "transformer",
                "params": {"width": 16, "depth": 1, "heads": 2, "patch": 4},
            },
        ],
        ecosystems=[
            {"name": "shared", "models": ["probe-logreg", "probe-linear", "tuned"]},
            {"name": "scratch", "models": ["scratch-mlp", "scratch-linear", "scratch-logreg"]},
            {"name": "sharded", "models": ["shards"]},
        ],
    )
    return study | changes


@pytest.fixture(scope="module")
def sharing_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    run_study(sharing_study(), out)
    return out / "sharing-tiny"


def test_backbone_pretrained_once_and_reused(sharing_run: Path) -> None:
    store = RunStore(sharing_run)
    folders = [p for p in store.backbones_dir.iterdir() if not p.name.startswith(".")]
    assert len(folders) == 1
    record = store.backbone_record(folders[0].name)
    assert record["status"] == "ok" and record["method"] == "contrastive"
    features = store.backbone_features(folders[0].name)
    task = build_task(DataSpec(name="digits"))
    assert features["train"].shape == (len(task.train), record["feature_dim"])
    assert set(features) == {"train", "val", "test", *task.shifted}
    stamp = (folders[0] / "DONE").stat().st_mtime_ns
    results = run_study(sharing_study(), sharing_run.parent)  # resume: nothing retrains
    assert (folders[0] / "DONE").stat().st_mtime_ns == stamp
    assert (results.members["status"] == "ok").all()


def test_probe_members_read_the_shared_features(sharing_run: Path) -> None:
    store = RunStore(sharing_run)
    members = pd.read_parquet(sharing_run / "tables" / "members.parquet").set_index("name")
    probe_ids = members.loc[["probe-logreg", "probe-linear"], "member_id"].tolist()
    reps = [store.representations(member_id) for member_id in probe_ids]
    first = [next(iter(r.items())) for r in reps]
    assert first[0][0] == first[1][0] and first[0][0].startswith("backbone.")
    np.testing.assert_array_equal(first[0][1], first[1][1])  # the very same frozen features
    tuned = store.representations(members.loc["tuned", "member_id"])
    assert next(iter(tuned)).startswith("backbone.") and list(tuned)[-1] == "logits"
    assert (
        members.loc["tuned", "adapt"] == "finetune"
        and members.loc["probe-linear", "adapt"] == "probe"
    )
    # The probe's representation is exactly the stored backbone features of the probe instances.
    backbone_id = next(p.name for p in store.backbones_dir.iterdir())
    np.testing.assert_allclose(first[0][1], store.backbone_features(backbone_id)["test"][:100])


def test_shards_are_members_with_their_own_rows(sharing_run: Path) -> None:
    members = pd.read_parquet(sharing_run / "tables" / "members.parquet")
    shards = members[members["name"] == "shards"]
    assert sorted(shards["shard"]) == ["1/3", "2/3", "3/3"]
    assert shards["member_id"].nunique() == 3


def test_ecosystem_tables_and_report(sharing_run: Path) -> None:
    summary = pd.read_parquet(sharing_run / "tables" / "ecosystems.parquet")
    assert summary["ecosystem"].tolist() == ["shared", "scratch", "sharded"]
    assert (summary["members"] == 3).all()
    for statistic in ("systemic_ratio", "error_consistency", "cka"):
        finite = summary[[statistic, f"{statistic}_ci_low", f"{statistic}_ci_high"]].dropna()
        assert len(finite) == 3, statistic
        assert (finite[f"{statistic}_ci_low"] <= finite[f"{statistic}_ci_high"]).all()
    comparisons = pd.read_parquet(sharing_run / "tables" / "ecosystem_comparisons.parquet")
    assert len(comparisons) == 3 * 3  # 3 pairs x 3 statistics
    assert comparisons["p_value"].between(0, 1).all()
    page = (sharing_run / "report.html").read_text()
    assert 'id="ecosystems"' in page and "most homogeneous" in page
    assert 'id="adversarial"' in page and "frozen-feature probe" in page


def test_ecosystem_statistics_match_direct_computation() -> None:
    rng = np.random.default_rng(3)
    n, k = 400, 3
    correct = rng.random((n, k)) < np.array([0.7, 0.8, 0.6])
    reps = [rng.normal(size=(60, 5)) for _ in range(k)]
    summary, _ = compare_ecosystems(
        {"e": Ecosystem(correct, reps), "f": Ecosystem(~correct, reps)}, n_resamples=50
    )
    row = summary.set_index("ecosystem").loc["e"]
    wrong = ~correct
    expected_ratio = wrong.all(axis=1).mean() / np.prod(wrong.mean(axis=0))
    pairs = list(itertools.combinations(range(k), 2))
    kappa = np.mean([error_consistency(correct[:, a], correct[:, b]).kappa for a, b in pairs])
    cka = np.mean([linear_cka(reps[a], reps[b]) for a, b in pairs])
    assert row["systemic_ratio"] == pytest.approx(expected_ratio)
    assert row["error_consistency"] == pytest.approx(kappa)
    assert row["cka"] == pytest.approx(cka, rel=1e-6)
    assert row["accuracy"] == pytest.approx(correct.mean())


@settings(max_examples=30, deadline=None)
@given(
    labels=st.lists(st.integers(0, 3), min_size=8, max_size=60),
    count=st.integers(2, 4),
    seed=st.integers(0, 5),
)
def test_stratified_shards_partition_the_rows(labels: list[int], count: int, seed: int) -> None:
    y = np.array(labels)
    shards = stratified_shards(y, count, seed)
    joined = np.sort(np.concatenate(shards))
    np.testing.assert_array_equal(joined, np.arange(len(y)))  # disjoint and complete
    for label in np.unique(y):
        per_shard = [int((y[s] == label).sum()) for s in shards]
        assert max(per_shard) - min(per_shard) <= 1  # the label mix of the whole


def test_shard_task_cuts_only_the_training_split() -> None:
    task = build_task(DataSpec(name="digits"))
    parts = [shard_task(task, (i, 3)) for i in range(3)]
    ids = [set(p.train.instance_ids().tolist()) for p in parts]
    assert not (ids[0] & ids[1]) and sum(map(len, ids)) == len(task.train)
    assert all(len(p.test) == len(task.test) for p in parts)


def test_finetune_layers_freeze_all_but_the_last_blocks() -> None:
    task = build_task(DataSpec(name="digits"))
    backbone = build_backbone(ModelSpec(family="cnn", params={"depth": 3}), task, seed=0)
    head = create_model(ModelSpec(family="linear"), (32,), 10, "tabular")
    assert isinstance(head, torch.nn.Module)
    model = AdaptedModel(backbone, "hidden", head, finetune_layers=1)  # type: ignore[arg-type]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        n for n, _ in model.named_parameters() if n.startswith(("backbone.blocks.2", "head"))
    }
    with pytest.raises(ConfigError, match="finetune_layers=5 but the backbone has 3 blocks"):
        AdaptedModel(backbone, "hidden", head, finetune_layers=5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"zoo": [{"family": "logreg", "backbone": "nope"}]}, "names backbone 'nope'"),
        (
            {"zoo": [{"family": "logreg", "backbone": "simclr", "adapt": "finetune"}]},
            "fine-tuning needs a torch head",
        ),
        ({"zoo": [{"family": "linear", "adapt": "finetune"}]}, "without a backbone"),
        (
            {"zoo": [{"family": "linear", "backbone": "simclr", "finetune_layers": 1}]},
            "finetune_layers needs adapt = 'finetune'",
        ),
        ({"ecosystems": [{"name": "e", "models": ["missing"]}]}, "lists model 'missing'"),
        (
            {"backbones": [BACKBONE | {"method": "pretrained"}]},
            "'pretrain' settings apply to method 'contrastive' only",
        ),
        ({"backbones": [BACKBONE | {"family": "logreg", "pretrain": {}}]}, "scikit-learn family"),
        (
            {"backbones": [BACKBONE | {"pretrain": {"epochs": 0}}]},
            "backbone 'simclr' pretrain.epochs",
        ),
    ],
)
def test_bad_sharing_studies_fail_before_training(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_study(sharing_study(**change))


def test_member_ids_change_with_backbone_and_shard_but_not_for_plain_members() -> None:
    shared = {p.label: p.member_id for p in expand(load_study(sharing_study()))}
    plain = expand(load_study(tiny_study(seeds=[0], zoo=[{"family": "linear"}])))
    assert plain[0].member_id == shared["scratch-linear"]  # backbones elsewhere change nothing
    other = BACKBONE | {"seed": 1}
    moved = {p.label: p.member_id for p in expand(load_study(sharing_study(backbones=[other])))}
    assert moved["probe-linear"] != shared["probe-linear"]
    assert moved["scratch-linear"] == shared["scratch-linear"]


def test_transformer_attention_maps_are_stored_and_shown(sharing_run: Path) -> None:
    store = RunStore(sharing_run)
    members = pd.read_parquet(sharing_run / "tables" / "members.parquet").set_index("name")
    maps = store.attention(members.loc["attn", "member_id"])["maps"]
    assert maps.shape == (8, 1, 2, 5, 5)  # 8 probes, 1 block, 2 heads, [CLS] + 4 patches
    np.testing.assert_allclose(maps.sum(axis=-1), 1.0, atol=1e-5)
    assert store.attention(members.loc["scratch-mlp", "member_id"]) == {}
    page = (sharing_run / "report.html").read_text()
    assert 'id="attention"' in page


def test_supervised_backbone_from_a_source_task(tmp_path: Path) -> None:
    backbone = {
        "name": "source",
        "family": "mlp",
        "params": {"width": 32, "depth": 1},
        "method": "supervised",
        "source": {"name": "digits", "seed": 1},
        "train": {"epochs": 2},
    }
    study = tiny_study(
        "supervised",
        seeds=[0],
        backbones=[backbone],
        zoo=[{"name": "probe", "family": "logreg", "backbone": "source"}],
    )
    results = run_study(study, tmp_path)
    assert results.members["status"].tolist() == ["ok"]
    store = RunStore(tmp_path / "supervised")
    (folder,) = [p for p in store.backbones_dir.iterdir()]
    record = store.backbone_record(folder.name)
    assert record["method"] == "supervised" and record["layer"] == "block1"
    assert len(store.history(results.members["member_id"][0])) == 0  # a probe: no torch loop
    assert results.members["test_accuracy"][0] > 0.8
