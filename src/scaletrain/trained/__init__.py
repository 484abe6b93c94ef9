"""A trained run as a Python object: predict/evaluate on raw data, reload, history."""

from scaletrain.trained.access import evaluate_run, load_run_dir, predict_run, run_handle
from scaletrain.trained.files import read_preprocessor, read_run_file, read_spec, spec_from_dict
from scaletrain.trained.handle import Run
from scaletrain.trained.inference import PreprocessedModel
from scaletrain.trained.weights import build_run_model, load_trained_model, load_weights

__all__ = [
    "evaluate_run",
    "load_run_dir",
    "predict_run",
    "run_handle",
    "PreprocessedModel",
    "Run",
    "build_run_model",
    "load_trained_model",
    "load_weights",
    "read_preprocessor",
    "read_run_file",
    "read_spec",
    "spec_from_dict",
]
