"""Content-based recommendation end to end on a generated MovieLens-layout data set.

One small study (popularity, random, TF-IDF and CNN with BPR, GRU with a sampled softmax, a
full-softmax Transformer with user embeddings, and a member whose loss diverges) is trained once
per module; the tests check the run directory, metrics against direct computations from the
stored lists, resume, the report and the command line (one-line errors with exit code 2, the
cold-start answer).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tomli_w

from movielens_fixture import COLD_USER, FEW_USER, write_movielens
from polyculture.cli.main import main
from polyculture.data.interactions import load_interactions, load_movielens
from polyculture.errors import ConfigError, DataError
from polyculture.run import load_run
from polyculture.run.recommend import (
    is_recommend_study,
    load_recommend_study,
    recommend_for_user,
    run_recommend,
)

K = 10
TRAINED = {"epochs": 6, "batch_size": 128}
STUDY: dict[str, Any] = {
    "kind": "recommend",
    "name": "reco",
    "description": "<b>small</b> study",
    "seeds": [0],
    "data": {"min_interactions": 4},
    "evaluate": {"k": K, "n_resamples": 200},
    "members": [
        {"kind": "popularity"},
        {"kind": "random"},
        {"name": "tfidf", "encoder": "tfidf", **TRAINED},
        {"name": "cnn", "encoder": "cnn", "params": {"width": 32, "depth": 1, "embed_dim": 32},
         **TRAINED},
        {"name": "gru", "encoder": "gru", "params": {"width": 32, "embed_dim": 32},
         "loss": "sampled_softmax", "negatives": 30, **TRAINED},
        {"name": "transformer", "encoder": "transformer",
         "params": {"width": 32, "depth": 1, "heads": 2}, "loss": "softmax",
         "user_model": "profile+embedding", **TRAINED},
        {"name": "diverging", "encoder": "linear", "params": {"embed_dim": 8}, "lr": 1e30,
         "epochs": 2, "batch_size": 128},
    ],
}  # fmt: skip
CONTENT = ("tfidf", "cnn", "gru", "transformer")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_movielens(tmp_path_factory.mktemp("movielens") / "ml")


@pytest.fixture(scope="module")
def study_path(data_dir: Path) -> Path:
    path = data_dir.parent / "reco.toml"
    path.write_text(tomli_w.dumps(STUDY))
    return path


@pytest.fixture(scope="module")
def run_dir(study_path: Path, data_dir: Path) -> Path:
    results = run_recommend(study_path, data_dir.parent / "runs", [f'data.path="{data_dir}"'])
    return results.root


def member_row(run_dir: Path, name: str) -> pd.Series:
    members = load_run(run_dir).members
    return members[members["name"] == name].iloc[0]


def invoke(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI's main() in this process: exit code, stdout, stderr."""
    old = sys.argv
    sys.argv = ["polyculture", *args]
    code = 0
    try:
        main()
    except SystemExit as done:
        code = int(done.code or 0)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- data ------------------------------------------------------------------------------------


def test_loader_reads_the_movielens_layout(data_dir: Path) -> None:
    data = load_movielens(data_dir)
    assert len(data.items) == 150 and data.items["title"].iloc[0] == "Café Society (1995)"
    assert data.items["text"].iloc[0].startswith("Café Society (1995). ")
    raw = [line.split("\t") for line in (data_dir / "u.data").read_text().splitlines()]
    assert len(data.interactions) == len(raw)
    assert data.interactions["rating"].sum() == sum(float(r[2]) for r in raw)
    first = (data_dir / "u.item").read_bytes().decode("latin-1").splitlines()[1].split("|")
    flags = [name for name, flag in zip(data.items.columns, first[5:], strict=False) if flag]
    assert flags and data.items["genres"].iloc[1]


def test_malformed_files_give_one_line_errors_or_are_counted(
    tmp_path: Path, data_dir: Path
) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(data_dir, folder)
    lines = (folder / "u.data").read_text().splitlines()
    (folder / "u.data").write_text("\n".join([*lines[:5], "1\t2\t3", *lines[5:]]) + "\n")
    with pytest.raises(DataError, match="line 6 has 3 fields, expected 4"):
        load_movielens(folder)
    (folder / "u.data").write_text("\n".join([*lines[:5], "1\t2\tfive\t88", *lines[5:]]) + "\n")
    with pytest.raises(DataError, match="row 6: rating 'five' is not a finite number"):
        load_movielens(folder)
    unknown = ["1\t999\t5\t881250949", "2\t998\t4\t881250950"]
    (folder / "u.data").write_text("\n".join([*lines, *unknown]) + "\n")
    data = load_movielens(folder)
    assert data.cleaning == [
        {"step": "interactions with an item id missing from the items file", "removed": 2}
    ]
    assert len(data.interactions) == len(lines)
    with pytest.raises(DataError, match="neither u.data"):
        load_interactions(tmp_path)


def test_csv_pair_layout(tmp_path: Path) -> None:
    (tmp_path / "items.csv").write_text(
        'item,title,genres,description\na,"Alpha, the film",Drama,A quiet story\nb,Beta,,\n'
    )
    (tmp_path / "interactions.csv").write_text(
        "user,item,rating,timestamp\nu1,a,1,10\nu1,b,1,11\nu1,a,0,12\n"
    )
    data = load_interactions(tmp_path)
    assert data.items["text"].tolist() == ["Alpha, the film. Drama. A quiet story", "Beta"]
    # The repeated (u1, a) keeps its latest interaction.
    assert data.interactions[["item", "rating"]].values.tolist() == [["b", 1.0], ["a", 0.0]]
    (tmp_path / "interactions.csv").write_text("user,item,score\nu1,a,1\n")
    with pytest.raises(DataError, match="lacks column"):
        load_interactions(tmp_path)


def test_study_loading_and_recognition(study_path: Path, tmp_path: Path) -> None:
    assert is_recommend_study("recommend") and is_recommend_study(study_path)
    assert not is_recommend_study("mnist1d")
    with pytest.raises(ConfigError, match="evaluate has no key 'kk'"):
        load_recommend_study(study_path, ["evaluate.kk=3"])
    with pytest.raises(ConfigError, match="cannot be an item-text encoder"):
        load_recommend_study(study_path, ['members.2.encoder="logreg"'])
    with pytest.raises(ConfigError, match="knob"):
        load_recommend_study(study_path, ["members.3.params.widht=3"])
    with pytest.raises(ConfigError, match="needs its data folder"):
        run_recommend(study_path, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()  # bad input stops before the run directory


# --- the run ---------------------------------------------------------------------------------


def test_run_directory_follows_the_contract(run_dir: Path) -> None:
    results = load_run(run_dir)
    members = results.members
    assert results.study["kind"] == "recommend"
    assert members["name"].tolist() == [
        "popularity", "random", "tfidf", "cnn", "gru", "transformer", "diverging"
    ]  # fmt: skip
    failed = members[members["status"] != "ok"]
    assert failed["name"].tolist() == ["diverging"]
    assert "non-finite training loss" in failed["reason"].iloc[0]
    for row in members[members["status"] == "ok"].itertuples():
        assert (run_dir / "members" / row.member_id / "DONE").is_file()
    assert (
        run_dir / "members" / member_row(run_dir, "cnn")["member_id"] / "weights.safetensors"
    ).is_file()
    users = results.store.table("recommend_users").set_index("user")
    assert users.loc[COLD_USER, "status"] == "no liked interaction"
    assert users.loc[FEW_USER, "status"] == "too few liked interactions"
    steps = {row["step"]: row["removed"] for row in results.task["cleaning"]}
    excluded = (users["status"] != "evaluated").sum()
    assert sum(v for s, v in steps.items() if "excluded" in s) == excluded >= 2
    assert results.task["sizes"]["users"] == (users["status"] == "evaluated").sum()
    summary = results.summary()  # `polyculture show` reads this
    assert len(summary) == len(members)


def test_run_metrics_equal_a_direct_computation(run_dir: Path) -> None:
    results = load_run(run_dir)
    store = results.store
    lists = store.table("recommend_lists")
    liked = store.table("recommend_liked")
    n_items = len(store.table("recommend_items"))
    test_item = liked[liked["split"] == "test"].set_index("user")["item"].to_dict()
    before = liked[liked["split"].isin(["train", "validation"])]
    history = before.groupby("user")["item"].apply(set).to_dict()
    evaluated = len(test_item)
    counts = before["item"].value_counts().to_dict()
    per_member: dict[str, dict[str, list[str]]] = {}
    for member_id, frame in lists.groupby("member_id"):
        per_member[str(member_id)] = {
            user: group.sort_values("rank")["item"].tolist()
            for user, group in frame.groupby("user")
        }
    members = results.members.set_index("member_id")
    for member_id, by_user in per_member.items():
        hits, gains, novelty = [], [], []
        shown: dict[str, int] = {}
        for user, items in by_user.items():
            assert len(items) == K and not set(items) & history[user]  # seen items never listed
            position = items.index(test_item[user]) + 1 if test_item[user] in items else None
            hits.append(1.0 if position else 0.0)
            gains.append(1 / math.log2(position + 1) if position else 0.0)
            novelty.append(
                sum(-math.log2((counts.get(i, 0) + 1) / (evaluated + 1)) for i in items) / K
            )
            for item in items:
                shown[item] = shown.get(item, 0) + 1
        row = members.loc[member_id]
        assert row["test_hit_rate"] == pytest.approx(sum(hits) / len(hits))
        assert row["test_ndcg"] == pytest.approx(sum(gains) / len(gains))
        assert row["test_novelty"] == pytest.approx(sum(novelty) / len(novelty))
        assert row["test_coverage"] == pytest.approx(len(shown) / n_items)
        assert row["test_ndcg_ci_low"] <= row["test_ndcg"] <= row["test_ndcg_ci_high"]
        exposure = sorted([*shown.values(), *[0] * (n_items - len(shown))])
        mean_difference = sum(abs(a - b) for a in exposure for b in exposure) / n_items**2
        assert row["test_gini"] == pytest.approx(mean_difference / (2 * np.mean(exposure)))
    overlap = store.table("recommend_overlap")
    assert len(overlap) == len(per_member) * (len(per_member) - 1) // 2
    for row in overlap.itertuples():
        a, b = per_member[row.member_a], per_member[row.member_b]
        values = [len(set(a[u]) & set(b[u])) / len(set(a[u]) | set(b[u])) for u in a]
        assert row.value == pytest.approx(sum(values) / len(values))
        kinds = members.loc[[row.member_a, row.member_b], "kind"].tolist()
        if "baseline" in kinds:
            assert math.isnan(row.item_cka)
            continue
        x, y = (
            store.representations(m)["items"].astype(float) for m in (row.member_a, row.member_b)
        )
        x, y = x - x.mean(0), y - y.mean(0)
        cka = np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
        assert row.item_cka == pytest.approx(cka, rel=1e-4)


def test_content_members_beat_random_and_cover_more_than_popularity(run_dir: Path) -> None:
    random = member_row(run_dir, "random")
    popularity = member_row(run_dir, "popularity")
    for name in CONTENT:
        row = member_row(run_dir, name)
        assert row["test_ndcg"] > random["test_ndcg"], name
        assert row["test_coverage"] > popularity["test_coverage"], name
    # Popularity shows (nearly) everyone the same few items: the most homogeneous member.
    assert popularity["test_user_overlap"] > max(
        member_row(run_dir, name)["test_user_overlap"] for name in CONTENT
    )


def test_resume_reuses_finished_members_and_reproduces_them(
    run_dir: Path, study_path: Path, data_dir: Path
) -> None:
    before = load_run(run_dir).members
    cnn = member_row(run_dir, "cnn")["member_id"]
    shutil.rmtree(run_dir / "members" / cnn)  # as if the run was killed before cnn finished
    (run_dir / "members" / ".tmp-half-written").mkdir()
    results = run_recommend(study_path, run_dir.parent, [f'data.path="{data_dir}"'])
    timing = json.loads((run_dir / "timing.json").read_text())
    assert timing["trained"] == 1 and timing["reused"] == len(before) - 1
    assert not (run_dir / "members" / ".tmp-half-written").exists()
    metrics = [c for c in before.columns if c.startswith("test_")]
    pd.testing.assert_frame_equal(
        results.members[metrics].reset_index(drop=True),
        before[metrics].reset_index(drop=True),
        check_exact=False,
        rtol=1e-6,
    )


def test_run_command_dispatches_a_recommend_toml_and_resumes(
    run_dir: Path, study_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(study_path), "--data-dir", str(data_dir), "--out", str(run_dir.parent)]
    code, out, err = invoke(capsys, "run", *args, "--workers", "2")
    assert code == 0, err
    assert "7 finished member(s) reused, 0 to train" in err
    assert "note: --workers not used" in err
    assert "NDCG@10" in out and "user(s) excluded" in out and "failed diverging" in out
    code, out, err = invoke(capsys, "run", *args, "--format", "json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["k"] == K and len(summary["members"]) == len(STUDY["members"])


def test_report_shows_recommendation_sections(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = invoke(capsys, "report", str(run_dir))
    assert code == 0, err
    page = (run_dir / "report.html").read_text()
    for title in (
        "Recommendation data and protocol",
        "Ranking quality (top 10)",
        "Beyond accuracy",
        "Recommendation homogenization",
        "Overlap between members (same user)",
        "Overlap between users (same member)",
        "users excluded",
    ):
        assert title in page, title
    assert "<b>small</b>" not in page and "&lt;b&gt;small&lt;/b&gt;" in page
    code, out, err = invoke(capsys, "show", str(run_dir))
    assert code == 0 and "popularity" in out, err


# --- the command line ------------------------------------------------------------------------


def test_recommend_prints_items_with_texts_and_scores(
    run_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = invoke(capsys, "recommend", str(run_dir), "--user", "3", "-k", "4",
                            "--member", "cnn", "--format", "json")  # fmt: skip
    assert code == 0, err
    answer = json.loads(out)
    assert answer["member"] == "cnn" and not answer["cold_start"]
    assert [row["rank"] for row in answer["items"]] == [1, 2, 3, 4]
    scores = [row["score"] for row in answer["items"]]
    assert scores == sorted(scores, reverse=True) and all(row["title"] for row in answer["items"])
    liked = load_run(run_dir).store.table("recommend_liked")
    assert not {row["item"] for row in answer["items"]} & set(
        liked.loc[liked["user"] == "3", "item"]
    )
    code, out, err = invoke(capsys, "recommend", str(run_dir), "--user", "3", "-k", "3")
    assert code == 0 and "top 3 for user '3'" in out and "score" in out, err


def test_cold_start_user_gets_popular_items_and_is_told(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = recommend_for_user(run_dir, COLD_USER, 5)
    assert answer.cold_start and "cold start" in answer.message
    likes = load_run(run_dir).store.table("recommend_items").set_index("item")["likes"]
    assert answer.items["score"].tolist() == sorted(likes, reverse=True)[:5]
    code, out, err = invoke(capsys, "recommend", str(run_dir), "--user", COLD_USER)
    assert code == 0 and "no liked interaction: cold start" in out, err
    # A user excluded for too few likes still gets a personal list from their likes.
    assert not recommend_for_user(run_dir, FEW_USER, 3, "tfidf").cold_start


def test_served_list_equals_a_direct_computation_with_user_embeddings(run_dir: Path) -> None:
    """The transformer member has learned user embeddings: profile mean + the user's row."""
    from safetensors.numpy import load_file

    results = load_run(run_dir)
    member_id = member_row(run_dir, "transformer")["member_id"]
    arrays = load_file(str(run_dir / "members" / member_id / "representations.safetensors"))
    items = results.store.table("recommend_items")["item"].astype(str).tolist()
    liked = results.store.table("recommend_liked")
    evaluated = sorted(liked.loc[liked["split"] == "test", "user"].astype(str))
    for user in ("3", "17", "42"):
        history = [items.index(i) for i in liked.loc[liked["user"] == user, "item"]]
        vector = arrays["items"][history].astype(float).mean(0)
        vector += arrays["users"][evaluated.index(user)]
        scores = {i: float(arrays["items"][i] @ vector) for i in range(len(items))}
        ranked = sorted((i for i in scores if i not in history), key=lambda i: (-scores[i], i))
        answer = recommend_for_user(run_dir, user, 5, "transformer")
        assert answer.items["item"].tolist() == [items[i] for i in ranked[:5]]
        expected = [scores[i] for i in ranked[:5]]
        assert answer.items["score"].tolist() == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--user", "424242"), ("unknown user '424242'", "82 users")),
        (("--user", "3", "-k", "0"), ("-k 0 must be at least 1",)),
        (("--user", "3", "-k", "-2"), ("-k -2 must be at least 1",)),
        (("--user", "3", "--member", "nope"), ("unknown member 'nope'",)),
    ],
)
def test_recommend_bad_input_is_one_line(
    run_dir: Path,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    needles: tuple[str, ...],
) -> None:
    code, _, err = invoke(capsys, "recommend", str(run_dir), *args)
    assert_one_line_error(code, err, *needles)


def test_recommend_needs_a_recommend_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = invoke(capsys, "recommend", str(tmp_path), "--user", "1")
    assert_one_line_error(code, err, "not a run directory")


def test_run_recommend_without_data_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = invoke(capsys, "run", "recommend", "--out", str(tmp_path))
    assert_one_line_error(code, err, "needs its data folder", "--data-dir")
    code, _, err = invoke(
        capsys, "run", "recommend", "--data-dir", str(tmp_path), "--out", str(tmp_path)
    )
    assert_one_line_error(code, err, "neither u.data")


def test_member_of_another_run_as_item_encoder(data_dir: Path, tmp_path: Path) -> None:
    """A text classifier trained elsewhere (genre from title) encodes items, via the predictor."""
    from polyculture.run import run_study

    items = load_movielens(data_dir).items
    labels = items["genres"].str.split().str[0]
    pd.DataFrame({"text": items["title"], "label": labels}).to_csv(tmp_path / "g.csv", index=False)
    source = run_study(
        {
            "name": "genres",
            "seeds": [0],
            "data": {"name": "text_csv", "path": str(tmp_path / "g.csv"),
                     "options": {"min_count": 1, "max_length": 16}},
            "train": {"epochs": 2, "batch_size": 32},
            "zoo": [{"family": "cnn", "params": {"width": 16, "depth": 1, "embed_dim": 16}}],
            "evaluate": {"probe_size": 20},
            "execution": {"workers": 1},
        },
        tmp_path / "runs",
    )  # fmt: skip
    name = str(source.members["name"].iloc[0])
    study = {
        "kind": "recommend",
        "name": "from-member",
        "data": {"path": str(data_dir), "min_interactions": 4},
        "evaluate": {"n_resamples": 50},
        "members": [
            {"kind": "random"},
            {"name": "genre-cnn", "encoder": "member", "batch_size": 128, "epochs": 4,
             "params": {"run": str(source.root), "member": name}},
        ],
    }  # fmt: skip
    (tmp_path / "m.toml").write_text(tomli_w.dumps(study))
    members = run_recommend(tmp_path / "m.toml", tmp_path / "runs").members.set_index("name")
    assert (members["status"] == "ok").all()
    assert members.loc["genre-cnn", "test_ndcg"] > members.loc["random", "test_ndcg"]
    with pytest.raises(ConfigError, match="unknown member 'nope'"):
        load_recommend_study(tmp_path / "m.toml", ['members.1.params.member="nope"'])


@pytest.mark.slow
def test_builtin_study_from_the_command_line(data_dir: Path, tmp_path: Path) -> None:
    """``polyculture run recommend --data-dir DIR``: the built-in study, MiniLM included."""
    pytest.importorskip("transformers")
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "polyculture", "run", "recommend", "--data-dir", str(data_dir),
         "--out", str(tmp_path), "--set", "members.3.batch_size=128"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "NDCG@10" in result.stdout and "minilm" in result.stdout
    members = load_run(tmp_path / "recommend").members
    assert (members["status"] == "ok").all()
    random = members.loc[members["name"] == "random", "test_ndcg"].iloc[0]
    for name in ("tfidf", "cnn", "minilm"):
        assert members.loc[members["name"] == name, "test_ndcg"].iloc[0] > random, name


@pytest.mark.slow
def test_builtin_study_on_movielens_100k(tmp_path: Path) -> None:
    """The issue's check on the real data (skipped unless ../shared/data/ml-100k exists)."""
    from conftest import shared_data

    folder = shared_data("ml-100k")
    pytest.importorskip("transformers")
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "polyculture", "run", "recommend", "--data-dir", str(folder),
         "--out", str(tmp_path), "--quiet"],
        capture_output=True, text=True, env=env, timeout=1500,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = load_run(tmp_path / "recommend")
    members = results.members
    assert (members["status"] == "ok").all(), members["reason"].tolist()
    assert results.task["sizes"]["items"] == 1682
    random = members.loc[members["family"] == "random", "test_ndcg"].iloc[0]
    for row in members[members["kind"] != "baseline"].itertuples():
        assert row.test_ndcg > random, row.name
    page = (tmp_path / "recommend" / "report.html").read_text()
    assert "Recommendation homogenization" in page and "Overlap between members" in page
