"""File sources (csv, npy, npz), user arrays and Datasets, task inference, predict inputs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from scaletrain.config import DataConfig
from scaletrain.data import DataSpec, build_data, read_inputs_file
from scaletrain.data.transforms.labels import encode_targets
from scaletrain.errors import DataError, UserError


def make_table(num_samples: int = 120, num_features: int = 5, seed: int = 0):
    """float32 features and integer labels 3, 5, 9 (remapped to 0, 1, 2)."""
    generator = np.random.default_rng(seed)
    features = generator.normal(size=(num_samples, num_features)).astype(np.float32) * 10
    labels = generator.choice([3, 5, 9], size=num_samples)
    return features, labels


def same_spec(spec: DataSpec, reference: DataSpec) -> bool:
    """Equal up to how predict reads raw inputs (columns of a table vs a numeric array)."""
    return dataclasses.replace(spec, input_kind="array", raw_columns=None) == dataclasses.replace(
        reference, input_kind="array", raw_columns=None
    )


def write_csv(path, header, rows) -> None:
    lines = [",".join(header)] + [",".join(str(cell) for cell in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def write_table_csv(path, features, labels) -> None:
    # repr of the float64 of a float32 reads back to the same float32 bit pattern.
    header = [f"f{index}" for index in range(features.shape[1])] + ["label"]
    rows = [
        [repr(float(value)) for value in row] + [int(label)]
        for row, label in zip(features, labels, strict=True)
    ]
    write_csv(path, header, rows)


def split_tensors(split) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's model inputs and targets, whether held in memory or read from shards."""
    if split.inputs is not None:
        return split.inputs, split.targets
    inputs, targets = split.dataset.__getitems__(list(range(len(split))))
    return split.transform(inputs), targets


@pytest.mark.parametrize("normalize", ["none", "standardize"])
def test_csv_parquet_npy_npz_and_shards_give_identical_tensors(tmp_path, normalize):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from scaletrain.data.shards import prepare_shards

    features, labels = make_table()
    write_table_csv(tmp_path / "table.csv", features, labels)
    columns = {f"f{index}": features[:, index] for index in range(features.shape[1])}
    pq.write_table(pa.table({**columns, "label": labels}), tmp_path / "table.parquet")
    np.save(tmp_path / "table.npy", np.column_stack([features.astype(np.float64), labels]))
    np.savez(tmp_path / "table.npz", x=features, y=labels)
    csv = DataConfig(source="csv", path=str(tmp_path / "table.csv"), normalize=normalize)
    prepare_shards(csv, tmp_path / "shards", seed=4, shard_bytes=1000)  # many small shards
    configs = {
        "csv": csv,
        "parquet": DataConfig(
            source="parquet", path=str(tmp_path / "table.parquet"), normalize=normalize
        ),
        "npy": DataConfig(source="npy", path=str(tmp_path / "table.npy"), normalize=normalize),
        "npz": DataConfig(
            source="npz", path=str(tmp_path / "table.npz"), label="y", normalize=normalize
        ),
        "shards": DataConfig(source="shards", path=str(tmp_path / "shards"), normalize=normalize),
    }
    bundles = {name: build_data(cfg, seed=4) for name, cfg in configs.items()}
    reference = bundles["csv"]
    assert reference.spec.class_names == ["3", "5", "9"] and reference.spec.num_outputs == 3
    assert bundles["parquet"].spec == reference.spec == bundles["shards"].spec
    for name, bundle in bundles.items():
        assert same_spec(bundle.spec, reference.spec), name
        for split in ("train", "val", "test"):
            inputs, targets = split_tensors(getattr(bundle, split))
            assert torch.equal(inputs, getattr(reference, split).inputs), (name, split)
            assert torch.equal(targets, getattr(reference, split).targets), (name, split)
    if normalize == "none":
        everything = torch.cat(
            [reference.train.inputs, reference.val.inputs, reference.test.inputs]
        )
        expected = torch.from_numpy(features)
        # The same rows, in split order: compare after sorting by the first feature.
        assert torch.equal(
            everything[everything[:, 0].argsort()], expected[expected[:, 0].argsort()]
        )


def test_csv_feature_subset_and_label_in_the_middle(tmp_path):
    rows = [[1.5, 7, 10, "a"], [2.5, 8, 20, "b"], [3.5, 7, 30, "a"], [4.5, 8, 40, "b"]] * 5
    write_csv(tmp_path / "mixed.csv", ["x1", "kind", "x2", "note"], rows)
    cfg = DataConfig(
        source="csv",
        path=str(tmp_path / "mixed.csv"),
        label="kind",
        features=["x2", "x1"],
        normalize="none",
        val_fraction=0.0,
        test_fraction=0.0,
    )
    bundle = build_data(cfg, seed=0)
    assert bundle.spec.input_shape == (2,) and bundle.spec.class_names == ["7", "8"]
    expected = torch.tensor([[row[2], row[0]] for row in rows], dtype=torch.float32)
    assert torch.equal(bundle.train.inputs, expected)
    assert torch.equal(bundle.train.targets, torch.tensor([row[1] - 7 for row in rows]))


def test_csv_text_labels_are_class_names(tmp_path):
    rows = [[index, "virginica" if index % 3 else "setosa"] for index in range(30)]
    write_csv(tmp_path / "names.csv", ["size", "species"], rows)
    cfg = DataConfig(source="csv", path=str(tmp_path / "names.csv"), label="species")
    bundle = build_data(cfg, seed=0)
    assert bundle.spec.task == "classification"
    assert bundle.spec.class_names == ["setosa", "virginica"]
    assert sum(bundle.spec.class_counts) == len(bundle.train)


def test_csv_float_labels_are_regression(tmp_path):
    generator = np.random.default_rng(1)
    rows = [[value, 2 * value + 0.25] for value in generator.normal(size=40)]
    write_csv(tmp_path / "line.csv", ["x", "y"], rows)
    bundle = build_data(
        DataConfig(source="csv", path=str(tmp_path / "line.csv"), label="y"), seed=0
    )
    assert bundle.spec.task == "regression" and bundle.spec.num_outputs == 1
    assert bundle.train.targets.shape == (len(bundle.train), 1)


def test_npy_label_column_by_index(tmp_path):
    features, labels = make_table(num_samples=60)
    np.save(tmp_path / "first.npy", np.column_stack([labels, features]))
    np.save(tmp_path / "last.npy", np.column_stack([features, labels]))
    common = {"normalize": "none", "val_fraction": 0.0, "test_fraction": 0.0}
    first = build_data(
        DataConfig(source="npy", path=str(tmp_path / "first.npy"), label="0", **common), seed=0
    )
    last = build_data(
        DataConfig(source="npy", path=str(tmp_path / "last.npy"), label="last", **common), seed=0
    )
    assert torch.equal(first.train.inputs, torch.from_numpy(features))
    assert torch.equal(first.train.inputs, last.train.inputs)
    assert torch.equal(first.train.targets, last.train.targets)


def test_npz_grey_images_and_multi_target_regression(tmp_path):
    generator = np.random.default_rng(2)
    images = generator.random((50, 6, 6)).astype(np.float32)
    targets = generator.normal(size=(50, 3))
    np.savez(tmp_path / "images.npz", pixels=images, y=targets)
    cfg = DataConfig(source="npz", path=str(tmp_path / "images.npz"), label="y", normalize="none")
    bundle = build_data(cfg, seed=0)
    assert bundle.spec.is_image and bundle.spec.input_shape == (1, 6, 6)
    assert bundle.spec.task == "regression" and bundle.spec.num_outputs == 3
    assert bundle.train.targets.shape == (len(bundle.train), 3)


def test_user_arrays_follow_the_file_pipeline(tmp_path):
    features, labels = make_table()
    write_table_csv(tmp_path / "table.csv", features, labels)
    from_file = build_data(DataConfig(source="csv", path=str(tmp_path / "table.csv")), seed=9)
    from_arrays = build_data(DataConfig(), seed=9, user_data={"train": (features, labels)})
    from_tensors = build_data(
        DataConfig(),
        seed=9,
        user_data={"train": (torch.from_numpy(features), torch.from_numpy(labels))},
    )
    for bundle in (from_arrays, from_tensors):
        assert same_spec(bundle.spec, from_file.spec)
        assert torch.equal(bundle.test.inputs, from_file.test.inputs)
        assert torch.equal(bundle.train.targets, from_file.train.targets)


def test_user_val_and_test_are_used_as_given():
    features, labels = make_table(num_samples=150)
    user_data = {
        "train": (features[:100], labels[:100]),
        "val": (features[100:120], labels[100:120]),
        "test": (features[120:], labels[120:]),
    }
    bundle = build_data(DataConfig(normalize="none"), seed=0, user_data=user_data)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (100, 20, 30)
    assert torch.equal(bundle.val.inputs, torch.from_numpy(features[100:120]))
    assert torch.equal(bundle.train.inputs, torch.from_numpy(features[:100]))
    mapping = {3: 0, 5: 1, 9: 2}
    assert bundle.test.targets.tolist() == [mapping[int(label)] for label in labels[120:]]


def test_user_missing_test_is_split_off_train():
    features, labels = make_table(num_samples=200)
    user_data = {"train": (features[:150], labels[:150]), "val": (features[150:], labels[150:])}
    bundle = build_data(DataConfig(test_fraction=0.2), seed=0, user_data=user_data)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (120, 50, 30)


class PairDataset(Dataset):
    def __init__(self, num_samples: int, *, num_classes: int = 4):
        self.inputs = torch.arange(num_samples * 6, dtype=torch.float32).reshape(
            num_samples, 1, 2, 3
        )
        self.labels = [index % num_classes for index in range(num_samples)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return self.inputs[index], self.labels[index]


def test_user_dataset_is_used_as_is():
    bundle = build_data(DataConfig(), seed=0, user_data={"train": PairDataset(100)})
    spec = bundle.spec
    assert spec.task == "classification" and spec.num_outputs == 4 and spec.is_image
    assert spec.input_shape == (1, 2, 3) and spec.input_dtype == torch.float32
    assert bundle.preprocessor.method == "none"
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (70, 10, 20)
    assert spec.class_counts == [
        0 + sum(1 for i in bundle.train.dataset.indices if i % 4 == c) for c in range(4)
    ]
    ids = sorted(
        bundle.train.dataset.indices + bundle.val.dataset.indices + bundle.test.dataset.indices
    )
    assert ids == list(range(100))
    inputs, label = bundle.val.dataset[0]
    assert torch.equal(inputs, PairDataset(100)[bundle.val.dataset.indices[0]][0])


def test_task_inference_rules():
    assert (
        encode_targets(np.array([0, 1, 1, 0]), task="auto", class_names=None, origin="t").task
        == "classification"
    )
    assert (
        encode_targets(np.array([0.5, 1, 2, 3]), task="auto", class_names=None, origin="t").task
        == "regression"
    )
    many = np.arange(400) % 200  # integers, but too many distinct values for classes
    assert encode_targets(many, task="auto", class_names=None, origin="t").task == "regression"
    names = encode_targets(np.array(["b", "a", "b"]), task="auto", class_names=None, origin="t")
    assert names.class_names == ["a", "b"] and names.values.tolist() == [1, 0, 1]


def test_spec_json_round_trip():
    spec = build_data(DataConfig(name="digits"), seed=0).spec
    assert DataSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_read_inputs_file_csv_ignores_the_label(tmp_path):
    features, labels = make_table(num_samples=10)
    write_table_csv(tmp_path / "table.csv", features, labels)
    spec = DataSpec("classification", (5,), torch.float32, 3, None, None)
    inputs = read_inputs_file(tmp_path / "table.csv", spec=spec, feature_columns=None)
    assert torch.equal(inputs, torch.from_numpy(features))
    subset = read_inputs_file(
        tmp_path / "table.csv",
        spec=DataSpec("regression", (2,), torch.float32, 1, None, None),
        feature_columns=["f3", "f1"],
    )
    assert torch.equal(subset, torch.from_numpy(features[:, [3, 1]]))
    no_label = tmp_path / "no_label.csv"
    no_label.write_text("f0,f1,f2,f3,f4\n1,2,3,4,5\n")
    assert read_inputs_file(no_label, spec=spec, feature_columns=None).tolist() == [[1, 2, 3, 4, 5]]
    with pytest.raises(DataError, match=r"inputs of shape \(1, 5\); expected \(N, 2\)"):
        read_inputs_file(
            no_label,
            spec=DataSpec("regression", (2,), torch.float32, 1, None, None),
            feature_columns=None,
        )


def test_read_inputs_file_npy_reshapes_to_the_image_shape(tmp_path):
    spec = build_data(DataConfig(name="digits"), seed=0).spec
    flat = np.arange(3 * 64, dtype=np.float64).reshape(3, 64)
    np.save(tmp_path / "flat.npy", flat)
    inputs = read_inputs_file(tmp_path / "flat.npy", spec=spec, feature_columns=None)
    assert inputs.shape == (3, 1, 8, 8) and inputs.dtype == torch.float32
    assert torch.equal(inputs.reshape(3, 64), torch.from_numpy(flat).float())
    np.save(tmp_path / "wrong.npy", np.zeros((3, 63)))
    with pytest.raises(
        DataError, match=r"wrong.npy: inputs of shape \(3, 63\); expected \(N, 1, 8, 8\)"
    ):
        read_inputs_file(tmp_path / "wrong.npy", spec=spec, feature_columns=None)


def test_tensors_source_without_data_is_a_user_error():
    with pytest.raises(UserError, match="data.source: `tensors`"):
        build_data(DataConfig(source="tensors"), seed=0)
