"""Model cards: every Mitchell et al. (2019) section filled from the run, no placeholder left."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import tiny_study
from polyculture.run import run_study
from polyculture.run.cards import SECTIONS, build_cards, write_cards
from test_fairness import synthetic_study

PLACEHOLDER = re.compile(r"TODO|TBD|N/A|\{|\}|\bnan\b|\bNone\b")


@pytest.fixture(scope="module")
def fair_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cards")
    return run_study(synthetic_study(folder, name="cards"), folder / "runs").root


def _sections(markdown: str) -> dict[str, str]:
    """Section title -> body text of a Markdown card."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.MULTILINE)
    return {
        title.strip(): body.strip() for title, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def _check_filled(markdown: str) -> dict[str, str]:
    sections = _sections(markdown)
    assert list(sections) == list(SECTIONS)
    for title, body in sections.items():
        assert len(body) > 40, title  # a sentence at least, not an empty heading
    assert not PLACEHOLDER.search(markdown), PLACEHOLDER.search(markdown)
    return sections


def test_every_member_gets_a_card_with_every_section_filled(fair_run: Path) -> None:
    paths = sorted((fair_run / "cards").glob("*.md"))
    members = pd.read_parquet(fair_run / "tables" / "members.parquet")
    assert [p.stem for p in paths] == sorted(members["member_id"])
    for path in paths:
        sections = _check_filled(path.read_text())
        quantitative = sections["Quantitative analyses"]
        assert "Unitary results by group" in quantitative
        assert "Intersectional results by group" in quantitative
        assert "f x a" in quantitative  # an intersectional group
        assert "Group-level homogenization" in quantitative and "H_worst" in quantitative
        assert "sex x race" in sections["Factors"]


def test_caveats_follow_the_numbers(fair_run: Path) -> None:
    groups = pd.read_parquet(fair_run / "tables" / "fairness_groups.parquet")
    for card in build_cards(fair_run):
        mine = groups[(groups["member_id"] == card.member_id) & (groups["attribute"] == "sex")]
        worst = mine.sort_values("accuracy").iloc[0]
        caveats = " ".join(card.sections[-1].paragraphs)
        accuracy = f"{100 * worst['accuracy']:.1f}%"
        assert f"By sex, the worst group is {worst['group']} with accuracy {accuracy}" in caveats
        assert "Groups too small to compare (n < 40)" in caveats and "c (n=" in caveats


def test_report_shows_the_cards(fair_run: Path) -> None:
    page = (fair_run / "report.html").read_text()
    for card in build_cards(fair_run):
        assert f'id="card-{card.member_id}"' in page
    for title in SECTIONS:
        assert f"<dt>{title}</dt>" in page


def test_cards_without_groups_and_from_the_cli(tmp_path: Path) -> None:
    results = run_study(tiny_study(seeds=[0]), tmp_path, report=False)
    assert not (results.root / "cards").exists()  # runs without groups are left as they were
    out = subprocess.run(
        [sys.executable, "-m", "polyculture", "cards", str(results.root)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "3 model card(s)" in out.stdout and "no group attributes" in out.stdout
    paths = list((results.root / "cards").glob("*.md"))
    assert len(paths) == 3
    for path in paths:
        sections = _check_filled(path.read_text())
        assert "no group attributes" in sections["Factors"]


def test_audit_cards_are_filled(tmp_path: Path) -> None:
    from polyculture.run.analyze import analyze_run
    from polyculture.run.audit import load_predictions, write_audit_run
    from polyculture.run.fairness import audit_fairness

    rows = [f"{i},{i % 2},{i % 2},{(i // 3) % 2},{'fm'[i % 3 == 0]}" for i in range(90)]
    (tmp_path / "p.csv").write_text("instance,label,a,b,sex\n" + "\n".join(rows))
    store = write_audit_run(
        load_predictions(tmp_path / "p.csv", group_cols=["sex"]), tmp_path / "audit"
    )
    analyze_run(store, n_resamples=50)
    audit_fairness(store.root, min_group_size=10, n_resamples=50)
    for path in write_cards(store.root):
        sections = _check_filled(path.read_text())
        assert "externally trained" in sections["Model details"]


def test_unknown_positive_class_is_a_clear_error(fair_run: Path) -> None:
    from polyculture.errors import ConfigError
    from polyculture.run import load_run
    from polyculture.run.fairness import audit_fairness, positive_class

    results = load_run(fair_run)
    assert positive_class(results) == (1, "yes")
    with pytest.raises(ConfigError, match="unknown positive class 'maybe'.*no, yes"):
        audit_fairness(results, positive="maybe")
