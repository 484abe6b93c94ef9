"""The `Run` a user gets back (issue #14 items 1-4): predict and evaluate on raw arrays with
the run's preprocessing, reloading a user module's weights, and the per-epoch history."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer

import scaletrain
from scaletrain.errors import UserError

EPOCHS = 6


def _network() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Breast cancer on raw, unstandardized features (values up to ~4000) with a user module,
    explicit splits so the test knows the train rows the scaling was fit on."""
    X, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order], y[order]
    parts = {
        "train": (X[:400], y[:400]),
        "val": (X[400:480], y[400:480]),
        "test": (X[480:], y[480:]),
    }
    config = {
        "run": {"name": "bc", "out_dir": str(tmp_path_factory.mktemp("runs"))},
        "train": {"max_epochs": EPOCHS, "batch_size": 32, "precision": "32"},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }
    torch.manual_seed(0)
    run = scaletrain.train(config, model=_network(), data=parts)
    return run, parts


def _standardized(inputs: np.ndarray, train: np.ndarray) -> torch.Tensor:
    """The reference scaling in float64: train mean and population std (constant -> 1)."""
    std = train.std(axis=0)
    std[std == 0] = 1.0
    return torch.from_numpy((inputs - train.mean(axis=0)) / std).float()


def test_predict_on_raw_inputs_is_the_network_on_standardized_inputs(trained):
    run, parts = trained
    X_test, y_test = parts["test"]
    probabilities = run.predict(X_test)
    with torch.no_grad():
        expected = run.model(_standardized(X_test, parts["train"][0])).softmax(dim=1)
    np.testing.assert_allclose(probabilities, expected.numpy(), rtol=1e-4, atol=1e-5)
    assert (probabilities.argmax(axis=1) == y_test).mean() > 0.9  # not the 0.37 of raw inputs
    network = run.with_preprocessing()  # a module that takes raw inputs too
    with torch.no_grad():
        logits = network(torch.from_numpy(X_test).float())
    torch.testing.assert_close(logits.softmax(dim=1), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(run.preprocess(X_test), _standardized(X_test, parts["train"][0]))


def test_predict_keeps_the_input_type_batches_and_leaves_no_trace(trained):
    run, parts = trained
    X_test = parts["test"][0]
    as_numpy = run.predict(X_test)
    assert isinstance(as_numpy, np.ndarray) and as_numpy.shape == (len(X_test), 2)
    np.testing.assert_allclose(as_numpy.sum(axis=1), 1.0, rtol=1e-5)
    as_tensor = run.predict(torch.from_numpy(X_test))
    assert isinstance(as_tensor, torch.Tensor) and not as_tensor.requires_grad
    np.testing.assert_allclose(as_tensor.numpy(), as_numpy, rtol=1e-6)
    np.testing.assert_allclose(run.predict(X_test, batch_size=7), as_numpy, rtol=1e-5, atol=1e-6)
    run.model.train()
    run.predict(X_test[:3])
    assert run.model.training  # eval mode only for the call


def test_evaluate_on_arrays_reproduces_the_final_test_metrics(trained):
    run, parts = trained
    X_test, y_test = parts["test"]
    metrics = run.evaluate(X_test, y_test)
    final = run.metrics["test"]
    assert metrics["loss"] == pytest.approx(final["loss"], rel=1e-5)
    for key in ("accuracy", "f1_macro", "confusion_matrix", "num_samples"):
        assert metrics[key] == final[key], key
    by_function = scaletrain.evaluate(run, data=(torch.from_numpy(X_test), y_test.astype(float)))
    assert by_function["accuracy"] == final["accuracy"]
    assert scaletrain.predict(run, X_test).shape == (len(X_test), 2)


def test_evaluate_without_data_on_an_in_memory_run_says_to_pass_it(trained):
    run, _ = trained
    with pytest.raises(UserError, match=r"data=\(X, y\)") as error:
        scaletrain.evaluate(run)
    assert "evaluate it from Python" not in str(error.value)


@pytest.mark.parametrize(
    ("call", "culprit"),
    [
        (lambda run, X, y: scaletrain.predict(run, 5), "inputs: expected"),
        (lambda run, X, y: scaletrain.predict(object(), X), "run: expected a Run"),
        (lambda run, X, y: scaletrain.evaluate(run, data=5), "data: expected"),
        (lambda run, X, y: scaletrain.evaluate(run, data=(X,)), "data: expected"),
        (lambda run, X, y: run.evaluate(X, y[:10]), "inputs but 10 targets"),
        (lambda run, X, y: run.predict(X[:, :29]), r"trained on \(30,\)"),
        (lambda run, X, y: run.evaluate(X, y + 5), "not among"),
    ],
)
def test_wrong_arguments_are_one_clear_user_error(trained, call, culprit):
    run, parts = trained
    X_test, y_test = parts["test"]
    with pytest.raises(UserError, match=culprit):
        call(run, X_test, y_test)


def test_load_run_puts_the_weights_into_the_users_module(trained):
    run, parts = trained
    X_test, y_test = parts["test"]
    fresh = _network()
    loaded = scaletrain.load_run(run.run_dir, model=fresh)
    assert loaded.model is fresh and loaded.weights["step"] == run.weights["step"]
    for name, value in run.model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[name]), name
    np.testing.assert_allclose(loaded.predict(X_test), run.predict(X_test), rtol=1e-6)
    assert loaded.evaluate(X_test, y_test)["accuracy"] == run.metrics["test"]["accuracy"]
    assert loaded.metrics == run.metrics and loaded.config.model.name == "user"
    again = scaletrain.predict(run.run_dir, X_test, model=_network())
    np.testing.assert_allclose(again, run.predict(X_test), rtol=1e-6)


def test_load_run_of_a_user_module_run_needs_the_module(trained):
    run, _ = trained
    with pytest.raises(UserError, match=r"model=Sequential\(\.\.\.\)"):
        scaletrain.load_run(run.run_dir)
    with pytest.raises(UserError, match="does not fit the weights"):
        scaletrain.load_run(run.run_dir, model=torch.nn.Linear(30, 2))
    smaller = torch.nn.Sequential(torch.nn.Linear(30, 16))  # a subset is refused, not half-loaded
    with pytest.raises(UserError, match="the checkpoint has 2.bias, 2.weight"):
        scaletrain.load_run(run.run_dir, model=smaller)


def test_history_has_one_record_per_epoch(trained):
    run, _ = trained
    history = run.history
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
    steps = [row["step"] for row in history]
    assert steps == sorted(steps) and steps[-1] == run.steps
    for row in history:
        assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy"} <= set(row)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # the returned weights' row agrees with the final evaluation of those weights on val
    (row,) = [row for row in history if row["step"] == run.weights["step"]]
    assert row["val_loss"] == pytest.approx(run.metrics["val"]["loss"], rel=1e-5)
    assert row["val_accuracy"] == run.metrics["val"]["accuracy"]
    assert scaletrain.load_run(run.run_dir, model=_network()).history == history


def test_history_frame_is_a_dataframe_or_says_pandas_is_needed(trained):
    run, _ = trained
    try:
        import pandas
    except ImportError:
        with pytest.raises(UserError, match="needs pandas"):
            run.history_frame()
        return
    frame = run.history_frame()
    assert isinstance(frame, pandas.DataFrame) and list(frame.index) == list(range(1, EPOCHS + 1))
    assert frame["val_loss"].tolist() == [row["val_loss"] for row in run.history]


def test_a_rerun_into_an_existing_directory_names_the_api_arguments(trained):
    run, parts = trained
    config = {
        "run": {"name": run.run_dir.name, "out_dir": str(run.run_dir.parent)},
        "train": {"max_epochs": 1, "precision": "32"},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }
    with pytest.raises(UserError, match="already exists") as error:
        scaletrain.train(config, model=_network(), data={"train": parts["train"]})
    message = str(error.value)
    assert "overwrite=True" in message and "scaletrain.resume(" in message
    assert "--overwrite" not in message and "--resume" not in message
