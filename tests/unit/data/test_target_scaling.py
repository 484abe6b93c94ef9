"""data.normalize_target: regression targets standardized on train, inverted for metrics and
predictions, saved in preprocess.json; classification and old run directories untouched."""

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from torch.utils.data import TensorDataset

import scaletrain
from scaletrain.config import DataConfig, load_config
from scaletrain.data import build_data
from scaletrain.data.transforms.preprocess import Preprocessor
from scaletrain.data.transforms.target import TargetScaler
from scaletrain.errors import ConfigError
from scaletrain.fileio import read_jsonl


@pytest.mark.parametrize("shape", [(500, 1), (500, 3)])
def test_inverse_is_exact_against_float64_reference(shape):
    values = torch.from_numpy(np.random.default_rng(0).normal(200.0, 70.0, size=shape))
    scaler = TargetScaler.fit(values[:400])
    reference = values[:400].numpy()
    np.testing.assert_allclose(scaler.shift.numpy(), reference.mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(scaler.scale.numpy(), reference.std(axis=0), rtol=1e-15)
    standardized = scaler.transform(values)
    assert standardized.dtype == torch.float64
    roundtrip = scaler.inverse(standardized)
    np.testing.assert_allclose(
        roundtrip.numpy(), values.numpy(), rtol=0, atol=1e-12
    )  # ulps of ~200
    outputs = torch.from_numpy(np.random.default_rng(1).normal(size=shape))
    expected = outputs.numpy() * reference.std(axis=0) + reference.mean(axis=0)
    np.testing.assert_allclose(scaler.inverse(outputs).numpy(), expected, rtol=0, atol=1e-12)
    exact = outputs.numpy() * scaler.scale.numpy() + scaler.shift.numpy()
    np.testing.assert_array_equal(scaler.inverse(outputs).numpy(), exact)


def test_constant_target_column_is_centred_not_divided():
    values = torch.tensor([[3.0, 1.0], [3.0, 2.0], [3.0, 6.0]], dtype=torch.float64)
    scaler = TargetScaler.fit(values)
    assert scaler.scale[0] == 1.0 and torch.equal(scaler.transform(values)[:, 0], torch.zeros(3))


def test_state_survives_json_exactly_and_old_state_means_no_target_scaling():
    bundle = build_data(DataConfig(name="diabetes"), seed=0)
    state = json.loads(json.dumps(bundle.preprocessor.state_dict()))
    loaded = Preprocessor.from_state_dict(state)
    assert torch.equal(loaded.target.shift, bundle.preprocessor.target.shift)
    assert torch.equal(loaded.target.scale, bundle.preprocessor.target.scale)
    del state["target"]  # a run directory written before normalize_target existed
    old = Preprocessor.from_state_dict(state)
    outputs = torch.randn(4, 1)
    assert old.target is None and old.inverse_target(outputs) is outputs


def test_train_split_statistics_only_and_classification_untouched():
    scaled = build_data(DataConfig(name="diabetes"), seed=0)
    raw = build_data(DataConfig(name="diabetes", normalize_target="none"), seed=0)
    train = raw.train.targets.double()
    assert torch.allclose(scaled.train.targets.double().mean(), torch.zeros((), dtype=float))
    expected = (raw.test.targets.double() - train.mean(0)) / train.std(0, correction=0)
    assert torch.allclose(scaled.test.targets.double(), expected, atol=1e-6)
    iris = build_data(DataConfig(name="iris"), seed=0)
    assert iris.preprocessor.target is None and iris.train.targets.dtype == torch.int64


def _cfg(tmp_path, **data):
    return {
        "run": {"name": "diabetes", "out_dir": str(tmp_path)},
        "model": {"name": "mlp"},
        "data": data,
        "train": {"precision": "32"},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }


@pytest.mark.slow
def test_diabetes_with_defaults_learns_and_metrics_are_in_original_units(tmp_path):
    """Defaults give a positive test R2 (-3.16 before); the reported metrics equal those
    computed by hand on api.predict's outputs, which are in the targets' units."""
    inputs, targets = load_diabetes(return_X_y=True, scaled=False)
    data = {"train": (inputs[:340], targets[:340]), "test": (inputs[340:], targets[340:])}
    run = scaletrain.train(_cfg(tmp_path), data=data)
    assert run.config.data.task == "regression"
    assert "task: regression" in (run.run_dir / "config.yaml").read_text()
    test = run.metrics["test"]
    assert test["r2"] > 0.2, test
    np.save(tmp_path / "inputs.npy", inputs[340:])
    predicted = scaletrain.api.predict(run.run_dir, tmp_path / "inputs.npy")["pred"].reshape(-1)
    assert abs(predicted.mean() - targets[340:].mean()) < 30  # units of the targets, not std
    assert test["r2"] == pytest.approx(r2_score(targets[340:], predicted), abs=1e-5)
    assert test["mae"] == pytest.approx(mean_absolute_error(targets[340:], predicted), rel=1e-5)
    rmse = mean_squared_error(targets[340:], predicted) ** 0.5
    assert test["rmse"] == pytest.approx(rmse, rel=1e-5)
    # the in-memory API agrees: Run.predict / Run.evaluate / with_preprocessing / load_run
    assert np.allclose(run.predict(inputs[340:]).reshape(-1), predicted, rtol=1e-5)
    on_arrays = run.evaluate(inputs[340:], targets[340:])
    assert on_arrays["r2"] == pytest.approx(test["r2"], abs=1e-5)
    assert on_arrays["loss"] == pytest.approx(test["loss"], rel=1e-5)
    raw_in = torch.as_tensor(inputs[340:], dtype=torch.float32)
    with torch.no_grad():
        wrapped = run.with_preprocessing()(raw_in).reshape(-1).double().numpy()
    assert np.allclose(wrapped, predicted, rtol=1e-4)
    reloaded = scaletrain.load_run(run.run_dir)  # a built-in model: rebuilt from the run
    assert np.allclose(reloaded.predict(inputs[340:]).reshape(-1), predicted, rtol=1e-5)
    epochs = [
        r for r in read_jsonl(run.run_dir / "metrics.jsonl") if r.get("split") == "train_epoch"
    ]
    train_mae = epochs[-1]["metrics"]["mae"]
    assert 0.5 * test["mae"] < train_mae < 2 * test["mae"]  # original units, as val/test


def test_user_dataset_warns_that_it_is_not_normalized(tmp_path):
    inputs = torch.randn(64, 3)
    dataset = TensorDataset(inputs, inputs.sum(dim=1, keepdim=True) * 50 + 100)
    cfg = DataConfig(source="tensors")
    with pytest.warns(UserWarning, match="regression targets .data.normalize_target"):
        build_data(cfg, seed=0, user_data={"train": dataset})


def test_probability_losses_keep_targets_in_0_1():
    """bce_with_logits/kl_div read regression targets as probabilities: not standardized by
    default, and standardize set explicitly beside them is one line naming the key."""
    assert load_config({"loss": {"name": "bce_with_logits"}}).data.normalize_target == "none"
    assert load_config({}, ["loss.name=kl_div"]).data.normalize_target == "none"
    with pytest.raises(ConfigError, match=r"^data.normalize_target: .*loss.name=kl_div"):
        load_config({"loss": {"name": "kl_div"}, "data": {"normalize_target": "standardize"}})


def test_evaluation_metrics_are_those_of_inverted_predictions():
    """evaluate_split: loss on standardized targets, metrics = sklearn's on the inverted
    outputs against the original targets (a fixed model, no training)."""
    from scaletrain.optim import build_loss
    from scaletrain.parallel.strategy import SingleStrategy
    from scaletrain.train.evaluate import evaluate_split
    from scaletrain.train.precision import Precision

    cfg = load_config({"data": {"name": "diabetes"}})
    bundle = build_data(cfg.data, seed=0)
    raw = build_data(cfg.data.model_copy(update={"normalize_target": "none"}), seed=0)
    torch.manual_seed(0)
    model = torch.nn.Linear(bundle.spec.input_shape[0], 1)
    strategy = SingleStrategy(torch.device("cpu"))
    loss_fn = build_loss(cfg.loss, task="regression", num_outputs=1, class_counts=None)
    result = evaluate_split(
        model,
        bundle.test,
        spec=bundle.spec,
        loss_fn=loss_fn,
        precision=Precision.from_config("32", strategy.device),
        strategy=strategy,
        batch_size=32,
        keep_predictions=True,
        inverse_target=bundle.preprocessor.inverse_target,
    )
    with torch.no_grad():
        standardized = model(bundle.test.inputs)
    predicted = bundle.preprocessor.inverse_target(standardized).reshape(-1).numpy()
    truth = raw.test.targets.reshape(-1).double().numpy()
    assert result.metrics["r2"] == pytest.approx(r2_score(truth, predicted), abs=1e-6)
    assert result.metrics["mae"] == pytest.approx(mean_absolute_error(truth, predicted), rel=1e-6)
    expected_loss = float(loss_fn(standardized, bundle.test.targets))
    assert result.loss == pytest.approx(expected_loss, rel=1e-6)  # standardized units
    np.testing.assert_allclose(result.predictions["pred"].reshape(-1), predicted, rtol=1e-6)
    np.testing.assert_allclose(result.predictions["target"].reshape(-1), truth, rtol=1e-6)
