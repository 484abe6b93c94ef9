"""`scaletrain eval RUN --data FILE` and checkpoint names (issue #14 item 11), built-in
models reloaded without arguments, and the CLI's wording for an existing run (item 7)."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from sklearn.datasets import load_iris

import scaletrain
from scaletrain.cli import main
from scaletrain.errors import UserError

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _write_csv(path, inputs, labels) -> None:
    lines = [",".join([*FEATURES, "species"])]
    rows = zip(inputs, labels, strict=True)
    lines += [",".join([*(f"{v:.1f}" for v in row), label]) for row, label in rows]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    """An MLP trained from a CSV whose labels are class names, with two checkpoints kept."""
    folder = tmp_path_factory.mktemp("iris")
    iris = load_iris()
    names = np.array(iris.target_names)[iris.target]
    order = np.random.default_rng(1).permutation(len(names))
    _write_csv(folder / "train.csv", iris.data[order[:120]], names[order[:120]])
    config = {
        "run": {"name": "iris", "out_dir": str(folder / "runs")},
        "data": {"source": "csv", "path": str(folder / "train.csv"), "label": "species"},
        "model": {"name": "mlp", "hidden": [16]},
        "optim": {"name": "adamw", "lr": 0.02},
        "train": {"max_epochs": 8, "batch_size": 16, "precision": "32"},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }
    (folder / "iris.yaml").write_text(yaml.safe_dump(config))
    run = scaletrain.train(config)
    held_out = iris.data[order[120:]], names[order[120:]], iris.target[order[120:]]
    return run, folder, held_out


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_builtin_model_reloads_without_arguments(iris_run):
    run, _, (inputs, names, _) = iris_run
    loaded = scaletrain.load_run(run.run_dir)
    for name, value in run.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[name]), name
    # a CSV-trained run predicts on in-memory numbers through its table encoder too
    np.testing.assert_allclose(loaded.predict(inputs), run.predict(inputs), rtol=1e-6)
    assert loaded.evaluate(inputs, names) == run.evaluate(inputs, names)


def test_eval_data_reads_a_new_labelled_file_like_the_training_data(iris_run, tmp_path):
    run, _, (inputs, names, ids) = iris_run
    expected = run.evaluate(inputs, names)  # labels by class name
    assert run.evaluate(inputs, ids) == expected  # or by class id
    assert expected["num_samples"] == 30 and expected["accuracy"] > 0.8
    csv = tmp_path / "new.csv"
    _write_csv(csv, inputs, names)
    npy = tmp_path / "new.npy"
    np.save(npy, np.column_stack([np.round(inputs, 1), ids]))  # label: the last column (ids)
    parquet = tmp_path / "new.parquet"
    columns = {name: np.round(inputs[:, i], 1) for i, name in enumerate(FEATURES)}
    pq.write_table(pa.table({**columns, "species": names.tolist()}), parquet)
    for path in (csv, npy, parquet):
        metrics = scaletrain.evaluate(run.run_dir, data=path)
        assert metrics["confusion_matrix"] == expected["confusion_matrix"], path.name
        assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-5), path.name


def test_eval_cli_with_data_prints_its_metrics_and_no_report_it_did_not_write(
    iris_run, tmp_path, capsys
):
    run, _, (inputs, names, _) = iris_run
    csv = tmp_path / "held_out.csv"
    _write_csv(csv, inputs, names)
    (run.run_dir / "report.html").write_text("<html></html>")  # there, but not eval's doing
    code, out, err = _cli(capsys, "eval", str(run.run_dir), "--data", str(csv))
    assert code == 0, err
    assert "held_out.csv" in out and "accuracy" in out
    assert "report:" not in err and f"run directory: {run.run_dir}" in err


def test_eval_data_names_an_unknown_label_with_its_file_and_row(iris_run, tmp_path, capsys):
    run, _, (inputs, names, _) = iris_run
    names = names.copy()
    names[3] = "orchid"
    csv = tmp_path / "bad.csv"
    _write_csv(csv, inputs, names)
    code, _, err = _cli(capsys, "eval", str(run.run_dir), "--data", str(csv))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{csv}:5" in err and "'orchid'" in err  # header is line 1: sample 3 is line 5


@pytest.mark.parametrize("kind", ["parquet without a column", "npz of one column"])
def test_eval_data_refuses_a_file_narrower_than_the_run(iris_run, tmp_path, capsys, kind):
    """Before: the one column broadcast over the run's 4 scaling statistics, and eval
    printed metrics of inputs that never were."""
    run, _, (inputs, names, ids) = iris_run
    if kind.startswith("parquet"):
        path = tmp_path / "three.parquet"
        columns = {name: inputs[:, i] for i, name in enumerate(FEATURES[:3])}
        pq.write_table(pa.table({**columns, "species": names.tolist()}), path)
        expected = f"{path}: no feature column 'petal_width'"
    else:
        path = tmp_path / "one.npz"
        np.savez(path, x=inputs[:, :1], label=ids)
        expected = f"{path}: samples of 1 values; the run was trained on inputs of shape (4,)"
    code, _, err = _cli(capsys, "eval", str(run.run_dir), "--data", str(path))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {expected}"), err


def test_checkpoint_names_accept_a_step_number_in_any_spelling(iris_run, capsys):
    run, _, _ = iris_run
    steps = sorted(path.name for path in (run.run_dir / "checkpoints").glob("step_*"))
    assert steps, "the run keeps checkpoints"
    number = int(steps[0].removeprefix("step_"))
    models = [
        scaletrain.load_run(run.run_dir, checkpoint=which).model
        for which in (str(number), f"step_{number}", steps[0])
    ]
    for name, value in models[0].state_dict().items():
        assert all(torch.equal(value, other.state_dict()[name]) for other in models[1:]), name
    with pytest.raises(UserError, match=f"no checkpoint `7777`.*one of: {', '.join(steps)}"):
        scaletrain.load_run(run.run_dir, checkpoint="7777")
    code, _, err = _cli(capsys, "eval", str(run.run_dir), "--checkpoint", "step_9999")
    assert code == 2 and steps[0] in err and len(err.strip().splitlines()) == 1


def test_the_cli_names_its_flags_for_an_existing_run(iris_run, capsys):
    _, folder, _ = iris_run
    code, _, err = _cli(capsys, "train", str(folder / "iris.yaml"))
    assert code == 2 and "already exists" in err
    assert "--overwrite" in err and "scaletrain resume" in err and "overwrite=True" not in err


def test_eval_of_a_split_prints_no_report_path(iris_run, capsys):
    run, _, _ = iris_run
    (run.run_dir / "report.html").write_text("<html></html>")  # an older command wrote it
    code, out, err = _cli(
        capsys, "eval", str(run.run_dir), "--split", "val", "--checkpoint", "last"
    )
    assert code == 0 and "accuracy" in out
    assert "report:" not in err
