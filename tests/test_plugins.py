"""Plugins: user datasets, families and metrics registered from outside the package, loaded from
a study, a file or an entry point; listings with origins; conformance checks; import failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import Field
from torch import nn

import polyculture
from polyculture.data import DATASETS
from polyculture.errors import ConformanceError, PluginError, RegistryError
from polyculture.measure.performance import METRICS, Metric, classification_metrics
from polyculture.plugins import load_plugins, resolve_plugin
from polyculture.testing import check_dataset, check_family, check_metric
from polyculture.zoo.base import FAMILIES, Knobs, ZooModel
from test_cli import ENV, assert_clean_failure

PLUGIN = '''
"""A test plugin: a dataset, a family and a metric."""
import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

import polyculture


class RingOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    n: int = Field(400, ge=20)
    seed: int = 0


@polyculture.dataset("rings", description="two noisy rings", modality="tabular",
                     options=RingOptions)
def build_rings(path, options):
    rng = np.random.default_rng(options.seed)
    y = rng.integers(0, 2, options.n)
    angle = rng.uniform(0, 2 * np.pi, options.n)
    radius = 1.0 + y + 0.2 * rng.normal(size=options.n)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1).astype(np.float32)
    side = pd.DataFrame({"side": np.where(x[:, 0] > 0, "east", "west")})
    cut = int(0.75 * options.n)
    return polyculture.RawData("tabular", ("inner", "outer"), x[:cut], y[:cut], x[cut:], y[cut:],
                               side.iloc[:cut].reset_index(drop=True),
                               side.iloc[cut:].reset_index(drop=True))


class WideKnobs(polyculture.Knobs):
    width: int = Field(16, ge=1)


class Wide(polyculture.ZooModel):
    def __init__(self, features, width, classes):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(features, width), nn.Tanh())
        self.out = nn.Linear(width, classes)

    def representations(self, x):
        h = self.hidden(x.reshape(len(x), -1))
        return {"wide_hidden": h, "logits": self.out(h)}


@polyculture.family("wide", kind="torch", modalities=("tabular",), knobs=WideKnobs,
                    description="one wide tanh layer")
def build_wide(knobs, input_shape, num_classes, modality):
    return Wide(input_shape[0], knobs.width, num_classes)


@polyculture.metric("top1_margin", description="mean margin of the true class over the runner-up")
def top1_margin(y, proba, groups):
    true = proba[np.arange(len(y)), y]
    other = np.where(np.eye(proba.shape[1], dtype=bool)[y], -np.inf, proba).max(1)
    return float((true - other).mean())


@polyculture.metric("group_accuracy", description="accuracy per group", needs_groups=True)
def group_accuracy(y, proba, groups):
    right = proba.argmax(1) == y
    return {str(g): float(right[groups == g].mean()) for g in np.unique(groups)}
'''


def _plugin_package(root: Path, name: str = "ringplug") -> Path:
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(PLUGIN)
    return root


def _run(
    args: list[str], cwd: Path, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(ENV)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "polyculture", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def _study(plugins: list[str], **changes: Any) -> str:
    study = {
        "name": "rings-study",
        "plugins": plugins,
        "seeds": [0, 1],
        "data": {"name": "rings", "options": {"n": 300}},
        "train": {"epochs": 4, "batch_size": 32, "lr": 0.01},
        "zoo": [{"family": "wide", "params": {"width": 8}}, {"family": "logreg"}],
        "evaluate": {"probe_size": 50, "robust_epsilon": 0.0},
        "execution": {"workers": 1},
    } | changes
    import tomli_w

    return tomli_w.dumps(study)


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A study that uses the plugin's dataset, family and metrics, run from the CLI."""
    root = tmp_path_factory.mktemp("plugin")
    _plugin_package(root / "site")
    (root / "study.toml").write_text(_study(["ringplug"]))
    result = _run(["run", "study.toml", "--out", "runs"], root, root / "site")
    assert result.returncode == 0, result.stderr
    return root, root / "runs" / "rings-study"


def test_a_plugin_dataset_family_and_metric_run_in_a_study(plugin_run: tuple[Path, Path]) -> None:
    _, run = plugin_run
    members = pd.read_parquet(run / "tables" / "members.parquet")
    assert set(members["family"]) == {"wide", "logreg"}
    assert (members["status"] == "ok").all()
    # The plugin metric, its bootstrap CI and the per-group metric are in the members table.
    for column in ("test_top1_margin", "test_top1_margin_ci_low", "test_top1_margin_ci_high"):
        assert members[column].notna().all(), column
    assert (members["test_top1_margin_ci_low"] <= members["test_top1_margin"]).all()
    assert {"test_group_accuracy[east]", "test_group_accuracy[west]"} <= set(members.columns)
    wide = members[members["family"] == "wide"]
    assert wide["layers"].str.contains("wide_hidden").all()
    study = (run / "study.toml").read_text()
    assert "ringplug" in study
    report = (run / "report.html").read_text()
    assert "top1_margin" in report and "group_accuracy[east]" in report


def test_plugin_metric_matches_an_independent_computation(plugin_run: tuple[Path, Path]) -> None:
    _, run = plugin_run
    from polyculture.run import load_run

    results = load_run(run)
    row = results.members.iloc[0]
    proba = results.probabilities(row["member_id"])["test"]
    labels = results.predictions()
    labels = labels[(labels["member_id"] == row["member_id"]) & (labels["split"] == "test")]
    y = labels.sort_values("instance")["label"].to_numpy()
    margins = [
        proba[i, y[i]] - max(p for c, p in enumerate(proba[i]) if c != y[i]) for i in range(len(y))
    ]
    assert row["test_top1_margin"] == pytest.approx(float(np.mean(margins)), abs=1e-6)


def test_listings_show_plugin_entries_with_their_origin(plugin_run: tuple[Path, Path]) -> None:
    root, _ = plugin_run
    for command, name in (("datasets", "rings"), ("models", "wide"), ("metrics", "top1_margin")):
        result = _run([command, "--plugin", "ringplug", "--format", "json"], root, root / "site")
        assert result.returncode == 0, result.stderr
        rows = {row["name"]: row for row in json.loads(result.stdout)}
        assert rows[name]["origin"] == "plugin ringplug", (command, rows[name])
        builtin = {"datasets": "digits", "models": "mlp", "metrics": "accuracy"}[command]
        assert rows[builtin]["origin"] == "polyculture"


def test_a_file_plugin_relative_to_the_study_and_worker_processes(tmp_path: Path) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "rings_file.py").write_text(PLUGIN)
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "study.toml").write_text(
        _study(["../plugins/rings_file.py"], execution={"workers": 2, "engine": "processes"})
    )
    result = _run(["run", "studies/study.toml", "--out", "runs"], tmp_path)
    assert result.returncode == 0, result.stderr
    members = pd.read_parquet(tmp_path / "runs" / "rings-study" / "tables" / "members.parquet")
    assert (members["status"] == "ok").all() and members["test_top1_margin"].notna().all()


def test_an_entry_point_plugin_is_listed(tmp_path: Path) -> None:
    site = _plugin_package(tmp_path, "ringplug_ep")
    info = site / "ringplug_ep-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ringplug-ep\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[polyculture.plugins]\nrings = ringplug_ep\n")
    result = _run(["models", "--format", "json"], tmp_path, site)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["wide"]["origin"] == "entry point rings (ringplug_ep)"


@pytest.mark.parametrize(
    ("source", "needles"),
    [
        ("import nothere_at_all\n", ("plugin 'badplug' failed to import", "ModuleNotFoundError")),
        (
            "raise RuntimeError('boom')\n",
            ("plugin 'badplug' failed to import", "RuntimeError: boom"),
        ),
        (
            "import polyculture\n"
            "@polyculture.metric('accuracy', description='again')\n"
            "def accuracy(y, proba, groups):\n    return 0.0\n",
            ("plugin 'badplug' failed to register", "duplicate metric name 'accuracy'"),
        ),
    ],
)
def test_a_broken_plugin_is_one_line_exit_2(
    tmp_path: Path, source: str, needles: tuple[str, ...]
) -> None:
    (tmp_path / "badplug.py").write_text(source)
    (tmp_path / "study.toml").write_text(_study(["badplug"]))
    result = _run(["run", "study.toml", "--out", "runs"], tmp_path, tmp_path)
    assert_clean_failure(result, *needles)
    assert not (tmp_path / "runs").exists()


def test_a_missing_plugin_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "study.toml").write_text(_study(["nowhere/plugin.py"]))
    result = _run(["run", "study.toml"], tmp_path)
    assert_clean_failure(result, "plugin file 'nowhere/plugin.py' does not exist")


def test_a_metric_that_raises_stops_the_study_before_training(tmp_path: Path) -> None:
    (tmp_path / "raiser.py").write_text(
        PLUGIN + "\n@polyculture.metric('raiser', description='broken')\n"
        "def raiser(y, proba, groups):\n    raise ZeroDivisionError('oops')\n"
    )
    (tmp_path / "study.toml").write_text(_study(["raiser"]))
    result = _run(["run", "study.toml", "--out", "runs"], tmp_path, tmp_path)
    assert_clean_failure(result, "metric 'raiser' (from plugin raiser) raised ZeroDivisionError")
    assert not list((tmp_path / "runs").glob("*/members/*"))


def test_loading_is_idempotent_and_resolves_files(tmp_path: Path) -> None:
    plugin = tmp_path / "once.py"
    plugin.write_text(
        "import polyculture\n"
        "@polyculture.metric('once_metric', description='x')\n"
        "def once(y, proba, groups):\n    return 1.0\n"
    )
    try:
        first = load_plugins(["once.py"], tmp_path)
        second = load_plugins([str(plugin)])
        assert first == second == [str(plugin.resolve())]
        assert METRICS.origin("once_metric") == "plugin once.py"
        assert (
            classification_metrics(np.array([0, 1]), np.eye(2), with_ci=False)["once_metric"] == 1.0
        )
    finally:
        METRICS.remove("once_metric")
    assert resolve_plugin("pkg.mod") == "pkg.mod"
    with pytest.raises(PluginError, match="not a module name"):
        resolve_plugin("  ")


# ---------------------------------------------------------------------------------------------
# Registration rules


def test_registration_validates_like_the_builtins() -> None:
    with pytest.raises(RegistryError, match="duplicate dataset name 'digits'.*polyculture"):
        polyculture.dataset("digits", description="again", modality="tabular")(lambda p, o: None)
    with pytest.raises(RegistryError, match="must declare the modalities"):
        polyculture.family("nomods", kind="torch", modalities=(), knobs=Knobs, description="x")
    with pytest.raises(RegistryError, match="modalities"):
        polyculture.family(
            "badmod",
            kind="torch",
            modalities=("audio",),
            knobs=Knobs,
            description="x",  # type: ignore[arg-type]
        )
    with pytest.raises(RegistryError, match="kind must be"):
        polyculture.family(
            "badkind", kind="jax", modalities=("tabular",), knobs=Knobs, description="x"
        )  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="modality must be one of"):
        polyculture.dataset("badds", description="x", modality="audio")
    with pytest.raises(RegistryError, match="not a valid name"):
        polyculture.metric("has space", description="x")(lambda y, p, g: 0.0)


# ---------------------------------------------------------------------------------------------
# Conformance checks: the built-ins pass, broken entries are caught with the rule named


@pytest.mark.parametrize("name", [n for n in FAMILIES.names() if n != "minilm"])
def test_builtin_families_conform(name: str) -> None:
    check_family(name)


@pytest.mark.slow
def test_minilm_conforms() -> None:
    pytest.importorskip("sentence_transformers", reason="needs polyculture[text]")
    check_family("minilm")


@pytest.mark.parametrize("name", METRICS.names_in_order())
def test_builtin_metrics_conform(name: str) -> None:
    check_metric(name)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("digits", {}),
        ("mnist1d", {"num_samples": 200}),
        ("modular_addition", {}),
        ("addition", {}),
        ("sparse_parity", {}),
    ],
)
def test_builtin_datasets_conform(name: str, options: dict[str, Any]) -> None:
    task = check_dataset(name, options)
    assert len(task.train) and len(task.test)


class _Knobs(Knobs):
    width: int = Field(4, ge=1)


class _WrongLogits(ZooModel):
    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.layer = nn.Linear(features, classes + 1)

    def representations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.layer(x.reshape(len(x), -1))}


def test_check_family_catches_a_wrong_logits_shape() -> None:
    registry_name = "wrong_logits_test"
    polyculture.family(
        registry_name, kind="torch", modalities=("tabular",), knobs=_Knobs, description="bad"
    )(lambda knobs, shape, classes, modality: _WrongLogits(shape[0], classes))
    try:
        with pytest.raises(ConformanceError, match="rule 'logits shape'.*shape \\(24, 4\\)"):
            check_family(registry_name)
    finally:
        FAMILIES.remove(registry_name)


def test_check_dataset_catches_mismatched_lengths() -> None:
    def build(path: Any, options: Any) -> polyculture.RawData:
        x = np.zeros((10, 3), np.float32)
        return polyculture.RawData(
            "tabular", ("a", "b"), x, np.zeros(9, np.int64), x, np.zeros(10, np.int64)
        )

    polyculture.dataset("short_labels_test", description="bad", modality="tabular")(build)
    try:
        with pytest.raises(
            ConformanceError, match="rule 'matching lengths'.*x_train has 10.*y_train has 9"
        ):
            check_dataset("short_labels_test")
    finally:
        DATASETS.remove("short_labels_test")


def test_check_metric_catches_nan() -> None:
    broken = Metric("nan_metric", lambda y, p, g: float("nan"), "bad")
    with pytest.raises(ConformanceError, match="rule 'finite value'.*returned nan"):
        check_metric(broken)
    mutating = Metric("mutating", lambda y, p, g: float(p.sort(axis=1) or 0.0), "bad")
    with pytest.raises(ConformanceError, match="rule 'leaves its inputs alone'"):
        check_metric(mutating)
    text = Metric("texty", lambda y, p, g: "high", "bad")
    with pytest.raises(ConformanceError, match="rule 'returns a number'"):
        check_metric(text)


def test_a_plugin_metric_is_a_selection_constraint(plugin_run: tuple[Path, Path]) -> None:
    root, run = plugin_run
    members = pd.read_parquet(run / "tables" / "members.parquet")
    cut = float(members["test_top1_margin"].median())
    scenario = root / "scenario.toml"
    scenario.write_text(f"[metrics.top1_margin]\nmin = {cut}\n")
    result = _run(
        ["select", str(run), "--scenario", str(scenario), "--format", "json"], root, root / "site"
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    chosen = members.set_index("member_id").loc[payload["recommended"]]
    assert chosen["test_top1_margin"] >= cut
    table = pd.read_parquet(run / "tables" / "selection.parquet")
    below = set(members.loc[members["test_top1_margin"] < cut, "member_id"])
    assert below and not set(table.loc[table["feasible"], "member_id"]) & below
    reasons = " ".join(table.loc[table["member_id"].isin(below), "reasons"].astype(str))
    assert "top1_margin" in reasons
    scenario.write_text("[metrics.top1_margn]\nmin = 0.1\n")
    failed = _run(["select", str(run), "--scenario", str(scenario)], root, root / "site")
    assert_clean_failure(failed, "bounds metric 'top1_margn'", "top1_margin")
    scenario.write_text("[metrics.top1_margin]\nmin = 0.5\nmax = 0.1\n")
    failed = _run(["select", str(run), "--scenario", str(scenario)], root, root / "site")
    assert_clean_failure(failed, "min 0.5 is above max 0.1")
