"""Dataset builders, the common cleaning steps, validation split and shifted test sets."""

from __future__ import annotations

import gzip
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import shared_data
from polyculture.data import DATASETS, DataSpec, Perturbation, build_task, perturb
from polyculture.data.augment import translate
from polyculture.data.idx import read_idx
from polyculture.errors import ConfigError, DataError, RegistryError


def test_registry_lists_builtin_datasets() -> None:
    assert {"mnist1d", "idx", "digits", "csv"} <= set(DATASETS.names())


def test_unknown_dataset_suggests_close_names() -> None:
    with pytest.raises(RegistryError, match="did you mean 'mnist1d'"):
        build_task(DataSpec(name="mnist1"))


def test_mnist1d_default_split_and_rng_restored() -> None:
    random.seed(123)
    np.random.seed(123)
    expected_py, expected_np = random.random(), np.random.random()
    random.seed(123)
    np.random.seed(123)
    task = build_task(DataSpec(name="mnist1d"))
    assert (random.random(), np.random.random()) == (expected_py, expected_np)
    assert task.input_shape == (1, 40)
    assert len(task.train) + len(task.val) == 4000
    assert len(task.test) == 1000
    assert len(task.val) == 400
    assert task.reference_accuracy["cnn"] == 0.94
    # stratified validation split: every class present in both
    assert set(task.val.y.tolist()) == set(range(10))
    # same spec, same task
    again = build_task(DataSpec(name="mnist1d"))
    assert torch.equal(task.train.x, again.train.x) and torch.equal(task.val.y, again.val.y)


def test_validation_split_depends_on_seed_only() -> None:
    a = build_task(DataSpec(name="digits", seed=0))
    b = build_task(DataSpec(name="digits", seed=1))
    assert not torch.equal(a.val.instance_ids(), b.val.instance_ids())
    # train and val partition the training rows
    ids = torch.cat([a.train.instance_ids(), a.val.instance_ids()])
    assert len(set(ids.tolist())) == len(ids) == 1347


def test_shifted_test_sets_per_modality() -> None:
    task = build_task(DataSpec(name="digits"))
    assert set(task.shifted) == {"test_noise", "test_translate", "test_rotate"}
    for split in task.shifted.values():
        assert torch.equal(split.y, task.test.y)
        assert split.x.shape == task.test.x.shape
        assert not torch.equal(split.x, task.test.x)
    none = build_task(DataSpec(name="digits", shifts={}))
    assert none.shifted == {}


def test_translate_is_zero_filled_shift() -> None:
    x = torch.arange(1, 11, dtype=torch.float32).view(1, 1, 10).repeat(50, 1, 1)
    out = translate(x, 3, torch.Generator().manual_seed(0))
    for row in out[:, 0]:
        nonzero = row[row != 0]
        # values stay consecutive (a shift, not a shuffle) and at most 3 are lost
        assert torch.all(nonzero.diff() == 1) and len(nonzero) >= 7


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 5), st.floats(0, 2), st.integers(0, 10_000))
def test_perturb_is_seeded_and_shape_preserving(shift: int, noise: float, seed: int) -> None:
    x = torch.randn(8, 1, 12, 12)
    strength = Perturbation(translate=shift, noise=noise, rotate=10.0)
    a = perturb(x, "image", strength, torch.Generator().manual_seed(seed))
    b = perturb(x, "image", strength, torch.Generator().manual_seed(seed))
    assert a.shape == x.shape and torch.equal(a, b)
    identity = perturb(x, "image", Perturbation(), torch.Generator())
    assert torch.equal(identity, x)


# --- IDX -------------------------------------------------------------------------------------


def write_idx(
    folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool = True
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if gz else open
    suffix = ".gz" if gz else ""
    with opener(folder / f"{prefix}-images-idx3-ubyte{suffix}", "wb") as f:
        f.write(struct.pack(">IIII", 2051, *images.shape) + images.astype(np.uint8).tobytes())
    with opener(folder / f"{prefix}-labels-idx1-ubyte{suffix}", "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def synthetic_idx(folder: Path, gz: bool = True, n: int = 60) -> Path:
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        labels = np.arange(n) % 10
        write_idx(folder, prefix, rng.integers(0, 255, (n, 6, 6)), labels, gz)
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reads_gz_and_raw(tmp_path: Path, gz: bool) -> None:
    task = build_task(DataSpec(name="idx", path=str(synthetic_idx(tmp_path, gz))))
    assert task.input_shape == (1, 6, 6)
    assert len(task.train) + len(task.val) == 60
    assert abs(float(torch.cat([task.train.x, task.val.x]).mean())) < 1e-4  # standardized


def test_idx_wrong_magic(tmp_path: Path) -> None:
    folder = synthetic_idx(tmp_path)
    payload = gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">I", 1234) + payload[4:])
    )
    with pytest.raises(DataError, match="magic number 1234, expected 2049"):
        build_task(DataSpec(name="idx", path=str(folder)))


def test_idx_truncated_gz(tmp_path: Path) -> None:
    folder = synthetic_idx(tmp_path)
    target = folder / "train-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-40])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*truncated or corrupt"):
        build_task(DataSpec(name="idx", path=str(folder)))


def test_idx_size_and_count_mismatch(tmp_path: Path) -> None:
    folder = synthetic_idx(tmp_path, gz=False)
    images = folder / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(DataError, match="needs"):
        read_idx(images, 2051)
    rng = np.random.default_rng(1)
    write_idx(folder, "train", rng.integers(0, 255, (60, 6, 6)), np.arange(50) % 10, gz=False)
    with pytest.raises(DataError, match="60 train images but 50 train labels"):
        build_task(DataSpec(name="idx", path=str(folder)))


def test_idx_missing_folder_and_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        build_task(DataSpec(name="idx", path=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="has no train-images-idx3-ubyte"):
        build_task(DataSpec(name="idx", path=str(tmp_path)))
    with pytest.raises(ConfigError, match="no data path"):
        build_task(DataSpec(name="idx"))


def test_idx_class_only_in_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_idx(tmp_path, "train", rng.integers(0, 255, (40, 6, 6)), np.arange(40) % 9)
    write_idx(tmp_path, "t10k", rng.integers(0, 255, (20, 6, 6)), np.arange(20) % 10)
    with pytest.raises(DataError, match="class '9' appears only in the test split"):
        build_task(DataSpec(name="idx", path=str(tmp_path)))
    task = build_task(DataSpec(name="idx", path=str(tmp_path), unknown_test_classes="drop"))
    assert len(task.test) == 18
    assert any(
        step.step == "class unseen in training" and step.removed == 2 for step in task.cleaning
    )


def test_real_mnist_test_files_parse() -> None:
    folder = shared_data("mnist")
    images = read_idx(folder / "t10k-images-idx3-ubyte.gz", 2051)
    labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz", 2049)
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    assert np.bincount(labels).tolist()[:3] == [980, 1135, 1032]
    # the shared MNIST folder lacks the training images: a clear error, not a crash
    with pytest.raises(DataError, match="has no train-images-idx3-ubyte"):
        build_task(DataSpec(name="idx", path=str(folder)))


def test_real_fashion_mnist() -> None:
    folder = shared_data("fashion-mnist")
    task = build_task(DataSpec(name="idx", path=str(folder), options={"train_limit": 2000}))
    assert task.input_shape == (1, 28, 28)
    assert len(task.test) == 10_000
    assert len(task.train) + len(task.val) == 2000


# --- CSV -------------------------------------------------------------------------------------


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


ROWS = "".join(
    f"{i},{['red', 'blue'][i % 2]},{['yes', 'no'][(i // 3) % 2]},{['a', 'b'][i % 2]}\n"
    for i in range(40)
)


def test_csv_numeric_categorical_groups(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "x,colour,label,group\n" + ROWS)
    task = build_task(
        DataSpec(name="csv", path=str(path), options={"label": "label", "groups": ["group"]})
    )
    assert task.modality == "tabular"
    assert task.class_names == ("no", "yes")
    assert task.feature_names == ("x", "colour=blue", "colour=red", "group=a", "group=b")
    assert list(task.test.groups.columns) == ["group"]
    assert len(task.test.groups) == len(task.test)


def test_csv_without_label_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "x,colour,target,group\n" + ROWS)
    with pytest.raises(DataError, match="no label column 'label'.*columns: x, colour, target"):
        build_task(DataSpec(name="csv", path=str(path), options={"label": "label"}))


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", ""])
def test_csv_nonfinite_features(tmp_path: Path, bad: str) -> None:
    path = write_csv(tmp_path / "t.csv", f"x,colour,label,group\n{bad},red,yes,a\n" + ROWS)
    with pytest.raises(
        DataError, match=r"NaN or infinite values in column\(s\) x .*nonfinite='drop'"
    ):
        build_task(DataSpec(name="csv", path=str(path), options={"label": "label"}))
    task = build_task(
        DataSpec(name="csv", path=str(path), nonfinite="drop", options={"label": "label"})
    )
    assert sum(step.removed for step in task.cleaning if step.step == "non-finite features") == 1


def test_csv_cleaning_is_counted(tmp_path: Path) -> None:
    text = "x,colour,label,group\n" + ROWS + ",,,\n" + "1,red,,a\n" + ROWS.splitlines(True)[0] * 3
    path = write_csv(tmp_path / "t.csv", text)
    task = build_task(DataSpec(name="csv", path=str(path), options={"label": "label"}))
    steps = {(s.split, s.step): s.removed for s in task.cleaning}
    assert steps[("train", "empty rows")] == 1
    assert steps[("train", "missing label")] == 1
    duplicates = sum(v for (_, step), v in steps.items() if step == "exact duplicate rows")
    assert duplicates == 3


def test_csv_unknown_label_dropped_when_classes_declared(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "x,colour,label,group\n" + ROWS + "5,red,maybe,a\n")
    options = {"label": "label", "classes": ["yes", "no"]}
    task = build_task(DataSpec(name="csv", path=str(path), options=options))
    assert task.class_names == ("yes", "no")
    assert any(s.step == "unknown label" and s.detail == "maybe" for s in task.cleaning)


def test_csv_class_only_in_test(tmp_path: Path) -> None:
    train = write_csv(
        tmp_path / "train.csv", "x,label\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(20))
    )
    test = write_csv(tmp_path / "test.csv", "x,label\n1,a\n2,b\n3,c\n")
    spec = DataSpec(name="csv", path=str(train), options={"label": "label", "test_path": str(test)})
    with pytest.raises(DataError, match="class 'c' appears only in the test split"):
        build_task(spec)
    dropped = build_task(spec.model_copy(update={"unknown_test_classes": "drop"}))
    assert dropped.class_names == ("a", "b") and len(dropped.test) == 2


def test_csv_bad_option_names_the_key(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "x,label\n1,a\n")
    with pytest.raises(ConfigError, match="data.options.lable"):
        build_task(DataSpec(name="csv", path=str(path), options={"lable": "label"}))


def test_real_adult() -> None:
    folder = shared_data("adult")
    columns = (
        "age workclass fnlwgt education education-num marital-status occupation relationship "
        "race sex capital-gain capital-loss hours-per-week native-country income"
    ).split()
    options = {
        "label": "income",
        "columns": columns,
        "test_path": str(folder / "adult.test"),
        "test_header": True,
        "na_values": ["?"],
        "label_strip": ".",
        "groups": ["sex", "race"],
    }
    with pytest.raises(DataError, match="workclass"):
        build_task(DataSpec(name="csv", path=str(folder / "adult.data"), options=options))
    task = build_task(
        DataSpec(name="csv", path=str(folder / "adult.data"), options=options, nonfinite="drop")
    )
    assert task.class_names == ("<=50K", ">50K")
    assert (
        len(task.train) + len(task.val) == 30_162 - 24 + 1
    )  # complete rows minus exact duplicates
    assert set(task.test.groups["sex"]) == {"Female", "Male"}


def test_csv_non_numeric_train_value_with_declared_categoricals(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "t.csv",
        "x,colour,label\n"
        + "".join(f"{'oops' if i % 3 == 0 else i},{'rb'[i % 2]},{i % 2}\n" for i in range(30)),
    )
    options = {"label": "label", "categorical": ["colour"]}
    with pytest.raises(DataError, match="train column 'x' has non-numeric values such as 'oops'"):
        build_task(DataSpec(name="csv", path=str(path), options=options))
