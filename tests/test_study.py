"""Study files: loading, overrides, validation messages and member expansion."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import tiny_study
from polyculture.errors import ConfigError, RegistryError
from polyculture.run.study import BUILTIN_STUDIES, expand, load_study


@pytest.mark.parametrize("name", BUILTIN_STUDIES)
def test_builtin_studies_validate(name: str) -> None:
    study = load_study(name)
    assert study.name == name
    assert len(expand(study)) >= len(study.seeds)


def test_default_study_covers_the_zoo() -> None:
    study = load_study("mnist1d")
    families = {entry.family for entry in study.zoo}
    assert {
        "linear",
        "mlp",
        "cnn",
        "gru",
        "transformer",
        "logreg",
        "random_forest",
        "knn",
    } <= families
    assert len(study.seeds) >= 3


def test_overrides_and_toml_values() -> None:
    study = load_study(
        "mnist1d",
        [
            "train.epochs=3",
            "seeds=[5]",
            "zoo.2.params.width=8",
            "data.path=some/dir",
            "train.augment.noise=0.1",
        ],
    )
    assert study.train.epochs == 3 and study.seeds == [5]
    assert study.zoo[2].params["width"] == 8
    assert study.data.path == "some/dir"
    assert study.train.augment.noise == 0.1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "train has no key 'epoch'; did you mean 'epochs'"),
        ("trian.lr=1", "the study has no key 'trian'; did you mean 'train'"),
        ("zoo.99.params.width=3", "'99' is not an index"),
        ("train.epochs", "is not key=value"),
    ],
)
def test_set_on_missing_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_study("mnist1d", [override])


def test_unknown_study_key_in_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        'name = "x"\n[data]\nname = "digits"\n[[zoo]]\nfamily = "mlp"\n[train]\nlearning_rate = 1\n'
    )
    with pytest.raises(ConfigError, match="unknown key 'train.learning_rate'"):
        load_study(path)


def test_bad_values_are_reported() -> None:
    with pytest.raises(ConfigError, match="knob 'width'.*greater than 0"):
        load_study(tiny_study(zoo=[{"family": "mlp", "params": {"width": -4}}]))
    with pytest.raises(RegistryError, match="unknown model family 'gruu'; did you mean 'gru'"):
        load_study(tiny_study(zoo=[{"family": "gruu"}]))
    with pytest.raises(ConfigError, match="cannot take tabular inputs"):
        load_study(
            tiny_study(
                zoo=[{"family": "cnn"}],
                data={"name": "csv", "path": "x.csv", "options": {"label": "y"}},
            )
        )
    with pytest.raises(ConfigError, match="train.lr"):
        load_study(tiny_study(train={"lr": -1}))
    with pytest.raises(ConfigError, match="zoo 'mlp' train.bogus"):
        load_study(tiny_study(zoo=[{"family": "mlp", "train": {"bogus": 1}}]))
    with pytest.raises(ConfigError, match="not valid TOML"):
        bad = Path(__file__).with_name("__bad__.toml")
        try:
            bad.write_text("name = ")
            load_study(bad)
        finally:
            bad.unlink()
    with pytest.raises(ConfigError, match="no study file or built-in study named"):
        load_study("no-such-study")


def test_member_ids_stable_and_sensitive() -> None:
    a = expand(load_study(tiny_study()))
    b = expand(load_study(tiny_study()))
    assert [p.member_id for p in a] == [p.member_id for p in b]
    assert len({p.member_id for p in a}) == len(a) == 6
    changed = expand(load_study(tiny_study(), ["train.epochs=4"]))
    torch_ids = {p.member_id for p in a if p.kind == "torch"}
    assert torch_ids.isdisjoint(p.member_id for p in changed)
    # classical members do not depend on the torch training settings
    assert {p.member_id for p in a if p.kind == "sklearn"} == {
        p.member_id for p in changed if p.kind == "sklearn"
    }


def test_grid_and_per_entry_train() -> None:
    study = load_study(
        tiny_study(
            zoo=[
                {
                    "family": "mlp",
                    "grid": {"width": [8, 16]},
                    "train": {"lr": 0.5, "augment": {"noise": 0.2}},
                }
            ]
        )
    )
    plans = expand(study)
    assert [p.model.params["width"] for p in plans] == [8, 8, 16, 16]
    assert {p.train.lr for p in plans} == {0.5} and plans[0].train.augment.noise == 0.2
    assert plans[0].train.epochs == 3  # inherited from [train]


def test_entry_names_and_clashes() -> None:
    same_model = [{"family": "mlp"}, {"family": "mlp", "train": {"lr": 0.1}}]
    with pytest.raises(ConfigError, match="zoo entries 0 and 1 both make models named 'mlp'"):
        load_study(tiny_study(zoo=same_model))
    named = [{"family": "mlp"}, {"family": "mlp", "name": "mlp-fast", "train": {"lr": 0.1}}]
    plans = expand(load_study(tiny_study(zoo=named)))
    assert [p.label for p in plans] == ["mlp", "mlp", "mlp-fast", "mlp-fast"]
    grid = [{"family": "mlp", "name": "wide", "grid": {"width": [8, 16]}}]
    assert {p.label for p in expand(load_study(tiny_study(zoo=grid)))} == {
        "wide(width=8)",
        "wide(width=16)",
    }
    # renaming does not change what is trained
    assert [p.member_id for p in plans[2:]] == [
        p.member_id for p in expand(load_study(tiny_study(zoo=[named[1] | {"name": "other"}])))
    ]


def test_spelled_out_default_knob_is_the_same_member() -> None:
    zoo = [{"family": "mlp"}, {"family": "mlp", "params": {"width": 100}}]
    with pytest.raises(ConfigError, match="same model twice"):
        load_study(tiny_study(zoo=zoo))


def test_seeds_must_be_valid() -> None:
    with pytest.raises(ConfigError, match="seeds"):
        load_study(tiny_study(seeds=[-1]))
    with pytest.raises(ConfigError, match="distinct"):
        load_study(tiny_study(seeds=[1, 1]))
