"""Bad inputs raise one-line DataErrors naming the file, the row (line) and the column."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from scaletrain.config import DataConfig, load_config
from scaletrain.data import DataSpec, build_data
from scaletrain.data.inputs import read_inputs_file
from scaletrain.errors import ConfigError, DataError, UserError


def load_csv(path, **options):
    return build_data(DataConfig(source="csv", path=str(path), **options), seed=0)


def write(path, text: str):
    path.write_text(text)
    return path


GOOD_ROWS = "".join(f"{i},{i * 2},{i % 2}\n" for i in range(20))


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere.csv"
    with pytest.raises(DataError) as caught:
        load_csv(missing)
    assert str(caught.value) == f"data.path: file not found: {missing}"


def test_unset_path_is_a_config_error():
    with pytest.raises(ConfigError, match="data.path: not set"):
        build_data(DataConfig(source="csv"), seed=0)


def test_empty_file(tmp_path):
    path = write(tmp_path / "empty.csv", "")
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: file is empty$"):
        load_csv(path)
    blank = write(tmp_path / "blank.csv", "\n\n  \n")
    with pytest.raises(DataError, match=f"^{re.escape(str(blank))}: file is empty"):
        load_csv(blank)
    header_only = write(tmp_path / "header.csv", "a,b,label\n")
    with pytest.raises(
        DataError, match=f"^{re.escape(str(header_only))}: no data rows after the header$"
    ):
        load_csv(header_only)


def test_ragged_row_names_the_line(tmp_path):
    path = write(tmp_path / "ragged.csv", "a,b,label\n1,2,0\n3,4\n5,6,1\n")
    with pytest.raises(DataError) as caught:
        load_csv(path)
    assert str(caught.value) == f"{path}:3: 2 values, but the header has 3 columns"


def test_non_numeric_value_names_line_and_column(tmp_path):
    path = write(tmp_path / "text.csv", "a,b,label\n1,2,0\n\n3,abc,1\n" + GOOD_ROWS)
    with pytest.raises(DataError) as caught:
        load_csv(path)
    # Line 4: the header is line 1 and the blank line 3 still counts.
    assert str(caught.value) == (
        f"{path}:4: column 'b': cannot parse 'abc' as a number "
        "(list the column in data.table.categorical if it holds categories)"
    )


def test_empty_cell_is_reported(tmp_path):
    path = write(tmp_path / "hole.csv", "a,b,label\n" + GOOD_ROWS + "1,,0\n")
    with pytest.raises(DataError) as caught:
        load_csv(path)
    assert str(caught.value) == (
        f"{path}:22: column 'b': missing value ''; set data.table.impute (mean, median or "
        "constant) to fill missing values"
    )


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_non_finite_feature_names_line_and_column(tmp_path, value):
    path = write(tmp_path / "nan.csv", "a,b,label\n" + GOOD_ROWS + f"{value},1,0\n")
    with pytest.raises(DataError) as caught:
        load_csv(path)
    assert str(caught.value).startswith(f"{path}:22: column 'a': value ")
    assert "is not finite; set data.table.impute" in str(caught.value)


def test_non_finite_label(tmp_path):
    path = write(tmp_path / "nanlabel.csv", "a,b,label\n1,2,0\n3,4,nan\n" + GOOD_ROWS)
    with pytest.raises(
        DataError, match=f"^{re.escape(str(path))}:3: column 'label': value nan is not finite$"
    ):
        load_csv(path)


def test_text_label_with_regression_task(tmp_path):
    path = write(tmp_path / "reg.csv", "a,label\n1,0.5\n2,high\n" + "3,1.5\n" * 10)
    with pytest.raises(
        DataError, match=f"^{re.escape(str(path))}:3: column 'label': cannot parse 'high'"
    ):
        load_csv(path, task="regression")


def test_missing_label_and_feature_columns(tmp_path):
    path = write(tmp_path / "cols.csv", "a,b,target\n" + GOOD_ROWS)
    with pytest.raises(
        DataError,
        match=f"{re.escape(str(path))}: no label column 'label'; columns are: a, b, target",
    ):
        load_csv(path)
    with pytest.raises(DataError, match=f"{re.escape(str(path))}: no feature column 'c'"):
        load_csv(path, label="target", features=["a", "c"])


def test_fractional_labels_for_classification(tmp_path):
    path = write(tmp_path / "frac.csv", "a,label\n" + "".join(f"{i},{i / 4}\n" for i in range(12)))
    with pytest.raises(DataError, match="classification needs integer labels.*sample 1 .* 0.25"):
        load_csv(path, task="classification")


def test_not_utf8(tmp_path):
    path = tmp_path / "binary.csv"
    path.write_bytes(b"a,b,label\n\xff\xfe,1,0\n")
    with pytest.raises(DataError, match=f"{re.escape(str(path))}: not a UTF-8 text file"):
        load_csv(path)


def test_npy_nan_names_file_row_and_column(tmp_path):
    array = np.arange(30, dtype=np.float64).reshape(10, 3)
    array[6, 1] = np.nan
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(
        DataError, match=r"bad.npy: row 6 \(0-based\), column 1: value is not finite"
    ):
        build_data(DataConfig(source="npy", path=str(tmp_path / "bad.npy")), seed=0)


def test_npz_without_the_label_array(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((10, 2)), target=np.zeros(10))
    with pytest.raises(DataError, match="bad.npz: no array 'label' for the labels.*x, target"):
        build_data(DataConfig(source="npz", path=str(tmp_path / "bad.npz")), seed=0)
    np.savez(tmp_path / "short.npz", x=np.zeros((10, 2)), label=np.zeros(9))
    with pytest.raises(DataError, match="'x' has 10 samples but 'label' has 9"):
        build_data(DataConfig(source="npz", path=str(tmp_path / "short.npz")), seed=0)


def test_npy_label_index_out_of_range(tmp_path):
    np.save(tmp_path / "two.npy", np.zeros((10, 2)))
    with pytest.raises(DataError, match="two.npy: no column 5; the array has 2 columns"):
        build_data(DataConfig(source="npy", path=str(tmp_path / "two.npy"), label="5"), seed=0)
    with pytest.raises(ConfigError, match="data.label: 'target' for an npy file"):
        build_data(DataConfig(source="npy", path=str(tmp_path / "two.npy"), label="target"), seed=0)


def test_too_few_samples_to_stratify(tmp_path):
    rows = "".join(f"{i},{0 if i else 1}\n" for i in range(20))  # class 1 has one sample
    path = write(tmp_path / "rare.csv", "a,label\n" + rows)
    with pytest.raises(DataError, match="set data.stratify=false"):
        load_csv(path)


def test_user_data_errors():
    features, labels = np.zeros((10, 2)), np.arange(10) % 2
    with pytest.raises(UserError, match="needs a 'train' entry"):
        build_data(DataConfig(), seed=0, user_data={"val": (features, labels)})
    with pytest.raises(UserError, match=r"data\['train'\]: 10 inputs but 9 targets"):
        build_data(DataConfig(), seed=0, user_data={"train": (features, labels[:9])})
    with pytest.raises(UserError, match="unknown split 'validation'"):
        build_data(DataConfig(), seed=0, user_data={"train": (features, labels), "validation": 1})
    features[3, 1] = np.inf
    with pytest.raises(DataError, match=r"data\['train'\]: inputs of sample 3 are not finite"):
        build_data(DataConfig(), seed=0, user_data={"train": (features, labels)})


def test_features_with_an_npy_source_is_a_config_error(tmp_path):
    np.save(tmp_path / "table.npy", np.zeros((10, 3)))
    data = {"source": "npy", "path": str(tmp_path / "table.npy"), "features": ["a"]}
    with pytest.raises(ConfigError, match="data.features: data.source=npy does not read it"):
        load_config({"data": data})


def _cut_archive(path):
    np.savez(path, x=np.zeros((10, 2)), label=np.zeros(10))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _object_member(path):  # written with pickle; must be refused, never unpickled
    np.savez(path, x=np.array([{"a": 1}] * 10, dtype=object), label=np.zeros(10))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_cut_archive, "bad.npz: cannot read as .npy/.npz"),
        (_object_member, "bad.npz: array 'x' is not a numeric array (Object arrays cannot"),
    ],
    ids=["cut archive", "object member"],
)
def test_a_damaged_npz_names_the_file_and_array(tmp_path, damage, expected):
    """Members of an .npz are read lazily: their failures come after np.load returned."""
    damage(tmp_path / "bad.npz")
    with pytest.raises(DataError, match=re.escape(expected)):
        build_data(DataConfig(source="npz", path=str(tmp_path / "bad.npz")), seed=0)
    spec = DataSpec("classification", (2,), torch.float32, 2, None, None)
    with pytest.raises(DataError, match=re.escape(expected)):
        read_inputs_file(tmp_path / "bad.npz", spec=spec, feature_columns=None)
