"""Table preprocessing: categories (one-hot / index, unknown bucket), imputation fit on train
only, parquet nulls, and predict files encoded with the saved state."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scaletrain.config import DataConfig, TableConfig
from scaletrain.data import Preprocessor, build_data, read_inputs_file
from scaletrain.errors import DataError

COLORS = ["red", "green", "blue"]


def write_rows(path, header: list[str], rows: list[list]) -> None:
    lines = [",".join(header)] + [",".join(str(cell) for cell in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def mixed_rows(num_rows: int = 90, *, holes: bool = False) -> list[list]:
    """x (number, every 7th missing if holes), color (category), size (number), label."""
    generator = np.random.default_rng(0)
    rows = []
    for index in range(num_rows):
        x = "" if holes and index % 7 == 3 else round(float(generator.normal()) * 3 + 10, 4)
        color = COLORS[index % 3]
        rows.append([x, color, index % 5, "yes" if index % 2 else "no"])
    return rows


def load(path, **table) -> tuple:
    cfg = DataConfig(source="csv", path=str(path), table=TableConfig(**table), normalize="none")
    return build_data(cfg, seed=1), cfg


def test_one_hot_and_index_encodings(tmp_path):
    write_rows(tmp_path / "mixed.csv", ["x", "color", "size", "label"], mixed_rows())
    one_hot, _ = load(tmp_path / "mixed.csv", categorical=["color"])
    index, _ = load(tmp_path / "mixed.csv", categorical=["color"], categorical_encoding="index")
    assert one_hot.spec.input_shape == (5,) and index.spec.input_shape == (3,)
    # numbers first (x, size), then one block per category in sorted order: blue, green, red
    encoder = one_hot.preprocessor.encoder
    assert encoder.categories == {"color": ["blue", "green", "red"]}
    blocks = one_hot.train.inputs[:, 2:]
    assert torch.equal(blocks.sum(1), torch.ones(len(blocks)))
    ids = index.train.inputs[:, 2]  # 1..3 = train categories, 0 = unknown
    assert torch.equal(ids - 1, blocks.argmax(1).float())
    assert set(ids.tolist()) == {1.0, 2.0, 3.0}


def test_scaling_leaves_category_columns_alone(tmp_path):
    write_rows(tmp_path / "mixed.csv", ["x", "color", "size", "label"], mixed_rows())
    cfg = DataConfig(
        source="csv", path=str(tmp_path / "mixed.csv"), table=TableConfig(categorical=["color"])
    )
    bundle = build_data(cfg, seed=1)
    raw, _ = load(tmp_path / "mixed.csv", categorical=["color"])
    train = raw.train.inputs.double()
    np.testing.assert_allclose(
        bundle.preprocessor.shift[:2].numpy(), train[:, :2].mean(0).numpy(), rtol=1e-12
    )
    assert bundle.preprocessor.shift[2:].tolist() == [0, 0, 0]
    assert bundle.preprocessor.scale[2:].tolist() == [1, 1, 1]
    assert torch.equal(bundle.train.inputs[:, 2:], raw.train.inputs[:, 2:])


@pytest.mark.parametrize("impute", ["mean", "median", "constant"])
def test_imputation_uses_train_rows_only(tmp_path, impute):
    rows = mixed_rows(holes=True)
    # size is replaced by the row number, so train rows can be found again
    numbered = [[row[0], row[1], index, row[3]] for index, row in enumerate(rows)]
    write_rows(tmp_path / "holes.csv", ["x", "color", "id", "label"], numbered)
    bundle, cfg = load(
        tmp_path / "holes.csv", categorical=["color"], impute=impute, impute_value=-5.0
    )
    x = np.array([np.nan if row[0] == "" else row[0] for row in rows], dtype=np.float64)
    train_ids = bundle.train.inputs[:, 1].long().numpy()
    fill = bundle.preprocessor.encoder.fill[0]
    if impute == "constant":
        assert fill == -5.0
    else:
        observed = x[train_ids][~np.isnan(x[train_ids])]
        reference = np.mean(observed) if impute == "mean" else np.median(observed)
        assert fill == pytest.approx(reference, rel=1e-12)
        # ...and the statistic of all rows differs: the held-out rows did not leak in.
        everything = np.nanmean(x) if impute == "mean" else np.nanmedian(x)
        assert abs(fill - everything) > 1e-6
    holes = np.isnan(x[train_ids])
    assert holes.any()
    assert np.all(bundle.train.inputs[:, 0].numpy()[holes] == np.float32(fill))
    assert np.array_equal(
        bundle.train.inputs[:, 0].numpy()[~holes], x[train_ids][~holes].astype(np.float32)
    )


def test_unknown_and_missing_categories_go_to_the_unknown_bucket(tmp_path):
    write_rows(tmp_path / "mixed.csv", ["x", "color", "size", "label"], mixed_rows())
    bundle, cfg = load(tmp_path / "mixed.csv", categorical=["color"], impute="mean")
    state = json.loads(json.dumps(bundle.preprocessor.state_dict()))
    restored = Preprocessor.from_state_dict(state)
    write_rows(
        tmp_path / "new.csv",
        ["x", "color", "size"],
        [[1.0, "purple", 2], [2.0, "", 3], ["", "red", 4]],
    )
    raw = read_inputs_file(tmp_path / "new.csv", spec=bundle.spec, feature_columns=None)
    encoded = restored.transform(raw)
    assert encoded.shape == (3, 5)
    assert encoded[0, 2:].tolist() == [0, 0, 0] and encoded[1, 2:].tolist() == [0, 0, 0]
    assert encoded[2, 2:].tolist() == [0, 0, 1]  # red is the third sorted category
    assert encoded[2, 0] == pytest.approx(restored.encoder.fill[0])


def test_predict_reapplies_the_saved_preprocessing(tmp_path):
    rows = mixed_rows()
    write_rows(tmp_path / "mixed.csv", ["x", "color", "size", "label"], rows)
    cfg = DataConfig(
        source="csv", path=str(tmp_path / "mixed.csv"), table=TableConfig(categorical=["color"])
    )
    bundle = build_data(cfg, seed=1)
    restored = Preprocessor.from_state_dict(
        json.loads(json.dumps(bundle.preprocessor.state_dict()))
    )
    write_rows(tmp_path / "same.csv", ["x", "color", "size", "label"], rows)
    raw = read_inputs_file(tmp_path / "same.csv", spec=bundle.spec, feature_columns=None)
    everything = restored.transform(raw)
    reference = torch.cat([bundle.train.inputs, bundle.val.inputs, bundle.test.inputs])
    sort = lambda t: t[torch.argsort(t[:, 0] * 1000 + t[:, 1])]  # noqa: E731
    assert torch.equal(sort(everything), sort(reference))


def test_missing_cells_without_impute_name_file_row_and_column(tmp_path):
    write_rows(tmp_path / "holes.csv", ["x", "color", "size", "label"], mixed_rows(holes=True))
    with pytest.raises(DataError) as caught:
        load(tmp_path / "holes.csv", categorical=["color"])
    assert str(caught.value).startswith(f"{tmp_path / 'holes.csv'}:5: column 'x': missing value")
    rows = mixed_rows()
    rows[10][1] = "NA"
    write_rows(tmp_path / "nocat.csv", ["x", "color", "size", "label"], rows)
    with pytest.raises(DataError, match=r"nocat.csv:12: column 'color': missing category"):
        load(tmp_path / "nocat.csv", categorical=["color"])
    with pytest.raises(DataError, match=r"'purple' is not a feature column|not a feature column"):
        load(tmp_path / "nocat.csv", categorical=["purple"])


def test_parquet_nulls_and_types(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = pa.array([1.0, None, 3.0, 4.0] * 10, type=pa.float32())
    color = pa.array(["a", "b", None, "a"] * 10)
    label = pa.array([0, 1] * 20, type=pa.int64())
    pq.write_table(pa.table({"x": x, "color": color, "label": label}), tmp_path / "t.parquet")
    cfg = DataConfig(source="parquet", path=str(tmp_path / "t.parquet"))
    with pytest.raises(DataError, match=r"t.parquet: row 1 \(0-based\): column 'x': missing"):
        build_data(cfg.model_copy(update={"table": TableConfig(categorical=["color"])}), seed=0)
    with pytest.raises(DataError, match=r"row 0 \(0-based\): column 'color': cannot parse 'a'"):
        build_data(cfg.model_copy(update={"table": TableConfig(impute="median")}), seed=0)
    table = TableConfig(categorical=["color"], impute="median")
    bundle = build_data(cfg.model_copy(update={"table": table, "normalize": "none"}), seed=0)
    fill = bundle.preprocessor.encoder.fill[0]
    assert fill in (1.0, 3.0, 4.0, 2.0, 3.5, 2.5)  # a median of the train values
    assert not torch.isnan(bundle.train.inputs).any()
    assert bundle.spec.input_shape == (3,)  # x, then one-hot a, b


def test_declared_classes_and_classes_missing_from_train(tmp_path):
    rows = mixed_rows()
    write_rows(tmp_path / "t.csv", ["x", "color", "size", "label"], rows)
    cfg = DataConfig(source="csv", path=str(tmp_path / "t.csv"), features=["x", "size"])
    declared = build_data(cfg.model_copy(update={"classes": ["yes", "no", "maybe"]}), seed=0)
    assert declared.spec.class_names == ["yes", "no", "maybe"] and declared.spec.num_outputs == 3
    with pytest.raises(DataError, match=r"t.csv:2: label 'no' is not among data.classes \(yes\)"):
        build_data(cfg.model_copy(update={"classes": ["yes"]}), seed=0)
    rows[40][3] = "rare"  # one sample: outside train for ~30 % of the seeds
    write_rows(tmp_path / "rare.csv", ["x", "color", "size", "label"], rows)
    rare = cfg.model_copy(update={"path": str(tmp_path / "rare.csv"), "stratify": False})
    messages = []
    for seed in range(30):
        try:
            build_data(rare, seed=seed)
        except DataError as error:
            messages.append(str(error))
    assert messages, "no seed put the 'rare' sample outside train"
    assert "label 'rare' is in the" in messages[0] and "not among the train split" in messages[0]
    assert messages[0].startswith(f"{tmp_path / 'rare.csv'}:42: label 'rare'")


def test_nan_and_inf_cells_are_imputed_when_asked(tmp_path):
    rows = [[index, index * 2, index % 2] for index in range(30)]
    rows[3][1], rows[5][1], rows[8][0] = "inf", "nan", "-Infinity"
    write_rows(tmp_path / "d.csv", ["a", "b", "label"], rows)
    with pytest.raises(DataError, match=r"d.csv:10: column 'a': value -inf is not finite"):
        load(tmp_path / "d.csv")
    bundle, _ = load(tmp_path / "d.csv", impute="constant", impute_value=-7.0)
    everything = torch.cat([bundle.train.inputs, bundle.val.inputs, bundle.test.inputs])
    assert torch.isfinite(everything).all()
    assert (everything == -7).sum() == 3  # exactly the three non-finite cells
