"""The HTML report: sections per kind of run, offline-safe output, escaping and determinism."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from polyculture import run_study
from polyculture.report import build_report, figures
from polyculture.run.analyze import analyze_run
from polyculture.run.audit import load_predictions, write_audit_run

XSS = "<script>alert(1)</script>"
ZOO_SECTIONS = {
    "overview",
    "performance",
    "training",
    "calibration",
    "robustness",
    "adversarial",
    "similarity",
    "agreement",
    "failures",
    "systemic",
    "diversity",
    "cost",
    "selection",
}
AUDIT_SECTIONS = {"overview", "performance", "agreement", "failures", "systemic", "diversity"}


class _Walker(HTMLParser):
    """Collects section ids, tags and text; fails on tags left open."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.figures = 0
        self.labelled_figures = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.append(tag)
        if tag == "section" and values.get("id"):
            self.sections.append(str(values["id"]))
        if tag == "figure":
            self.figures += 1
            self.labelled_figures += bool(values.get("aria-label")) and values.get("role") == "img"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def walk(path: Path) -> _Walker:
    walker = _Walker()
    walker.feed(path.read_text(encoding="utf-8"))
    walker.close()
    return walker


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    study = {
        "name": "rep",
        "seeds": [0, 1],
        "data": {"name": "digits"},
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.01},
        "zoo": [
            {"family": "linear"},
            {"family": "mlp", "name": XSS, "params": {"width": 32, "depth": 1}},
            {"family": "logreg", "params": {"max_iter": 200}},
        ],
        "evaluate": {"probe_size": 100},
        "execution": {"workers": 1},
    }
    results = run_study(study, tmp_path_factory.mktemp("zoo"))
    return results.root


@pytest.fixture(scope="module")
def audit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("audit")
    rng = np.random.default_rng(0)
    classes = ["no", XSS, "yes"]
    labels = rng.integers(0, 3, 200)
    hard = rng.random(200) < 0.2
    rows = []
    for j in range(4):
        wrong = hard | (rng.random(200) < 0.1)
        predicted = np.where(wrong, (labels + 1) % 3, labels)
        for i in range(200):
            rows.append({
                "instance": f"u{i}", "model": f"vendor{j}", "prediction": classes[predicted[i]],
                "label": classes[labels[i]], "group": "ab"[i % 2],
            })  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "vendors.csv", index=False)
    data = load_predictions(folder / "vendors.csv", group_cols=["group"])
    store = write_audit_run(data, folder / "vendors")
    analyze_run(store, n_resamples=200)
    return store.root


@pytest.fixture(scope="module")
def zoo_report(zoo_run: Path) -> Path:
    return build_report(zoo_run)


@pytest.fixture(scope="module")
def audit_report(audit_run: Path) -> Path:
    return build_report(audit_run)


def test_zoo_report_has_every_section(zoo_report: Path) -> None:
    assert zoo_report == zoo_report.parent / "report.html"
    walker = walk(zoo_report)
    assert set(walker.sections) == ZOO_SECTIONS
    assert walker.sections[0] == "overview"
    assert "svg" in walker.tags and walker.figures >= 6
    assert walker.labelled_figures == walker.figures  # every figure has alt text
    assert "failed" not in walker.sections  # no member failed


def test_audit_report_has_the_sections_that_apply(audit_report: Path) -> None:
    walker = walk(audit_report)
    assert set(walker.sections) == AUDIT_SECTIONS
    text = " ".join(walker.text)
    assert "vendors.csv" in text and str(audit_report.parent.parent) not in text


@pytest.mark.parametrize("report", ["zoo_report", "audit_report"])
def test_offline_and_escaped(report: str, request: pytest.FixtureRequest) -> None:
    page = request.getfixturevalue(report).read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()  # the model / class name is user text: escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<!DOCTYPE svg" not in page and "<?xml" not in page


def test_figure_text_is_escaped_inside_svg(zoo_report: Path) -> None:
    svg = figures.heatmap(np.eye(2), [XSS, "b"], ["a", XSS], title=XSS, colorbar="x", key="probe")
    assert svg.startswith("<svg") and "<script" not in svg and svg.count("&lt;script&gt;") >= 3
    # the zoo report names the model in figure titles and tick labels too
    page = zoo_report.read_text(encoding="utf-8")
    figure_text = "".join(part.split("</svg>")[0] for part in page.split("<svg")[1:])
    assert figure_text.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3


def test_rebuild_is_byte_identical_and_path_independent(zoo_run: Path, tmp_path: Path) -> None:
    first = build_report(zoo_run).read_bytes()
    assert build_report(zoo_run).read_bytes() == first
    copy = tmp_path / "elsewhere" / zoo_run.name
    shutil.copytree(zoo_run, copy)
    assert build_report(copy).read_bytes() == first
    assert str(zoo_run.parent).encode() not in first


def test_csv_tables_written(zoo_report: Path, audit_report: Path) -> None:
    zoo = {p.name for p in (zoo_report.parent / "report_tables").glob("*.csv")}
    assert {"models.csv", "members.csv", "robustness.csv", "similarity_final_layer.csv",
            "error_consistency.csv", "systemic.csv", "diversity.csv"} <= zoo  # fmt: skip
    members = pd.read_csv(zoo_report.parent / "report_tables" / "members.csv")
    assert len(members) == 6
    audit = {p.name for p in (audit_report.parent / "report_tables").glob("*.csv")}
    assert "similarity_final_layer.csv" not in audit and "systemic.csv" in audit
    assert not list((audit_report.parent / "report_tables").glob(".*.tmp"))


def test_failed_members_are_listed(zoo_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / zoo_run.name
    shutil.copytree(zoo_run, copy)
    members = pd.read_parquet(copy / "tables" / "members.parquet")
    members.loc[1, ["status", "reason"]] = ["failed", "loss became NaN <b>"]
    members.to_parquet(copy / "tables" / "members.parquet", index=False)
    page = build_report(copy).read_text(encoding="utf-8")
    assert 'id="failed"' in page and "loss became NaN &lt;b&gt;" in page


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_a_browser(zoo_report: Path, tmp_path: Path) -> None:
    import matplotlib.image

    shot = tmp_path / "shot.png"
    command = [
        str(shutil.which("chromium")), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--window-size=1280,2000",
        zoo_report.resolve().as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file(), done.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)
    assert pixels.std() > 0.02  # not a blank page
    errors = [
        line
        for line in done.stderr.splitlines()
        if ("CONSOLE" in line and "ERROR" in line) or "Uncaught" in line
    ]
    assert not errors, errors
