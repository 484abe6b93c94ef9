"""`Run`: what `train`, `resume` and `load_run` return; predicts and evaluates on raw data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scaletrain.config import Config
from scaletrain.data import DataSpec, Preprocessor
from scaletrain.errors import UserError
from scaletrain.finish import wait_for_reports
from scaletrain.models.generate import Sampling
from scaletrain.rundir import RunDir
from scaletrain.train.precision import Precision, run_precision
from scaletrain.trained.files import read_preprocessor, read_spec
from scaletrain.trained.generation import generate_text, run_tokenizer
from scaletrain.trained.history import history_frame, read_history
from scaletrain.trained.inference import (
    BATCH_SIZE,
    PreprocessedModel,
    device_of,
    evaluate_arrays,
    predict_arrays,
    preprocess_inputs,
)


@dataclass
class Run:
    """A finished (or stopped) run: where it lives, its final metrics and the trained model.

    ``model`` is the trained network itself (your own module, the same object, when you
    passed one): it expects *preprocessed* inputs, the scaled (and encoded) tensors it was
    trained on, and returns raw outputs (logits). For raw inputs, as in your data, use
    ``run.predict(X)`` (probabilities or values) and ``run.evaluate(X, y)``, or
    ``run.preprocess(X)`` / ``run.with_preprocessing()`` to call the network yourself.
    """

    run_dir: Path
    metrics: dict  # split -> metric -> value, of the weights in `model` (see `weights`)
    model: nn.Module | None
    config: Config
    status: str = "finished"
    exit_code: int = 0  # 128 + signal number when stopped by SIGTERM/SIGINT
    # which weights `metrics` and `model` hold: {"name": "best" | "last", "step": N}
    weights: dict | None = None
    metrics_last: dict | None = None  # the last weights' metrics, where the best are older
    steps: int = 0  # optimizer steps taken
    # read from the run directory on first use (data_spec.json, preprocess.json)
    spec: DataSpec | None = field(default=None, repr=False)
    preprocessor: Preprocessor | None = field(default=None, repr=False)
    # `auto` resolved once per model object (it counts the model's FLOPs: ms to tens of ms)
    _precisions: dict = field(default_factory=dict, repr=False, compare=False)

    def wait(self) -> Run:
        """Block until report.html is written: `train()` returns before it (a background
        thread draws it; the process waits for it at exit). Call it before deleting the
        run directory."""
        wait_for_reports()
        return self

    def predict(self, inputs: Any, *, batch_size: int = BATCH_SIZE):
        """Class probabilities (N, classes) for classification, values (N, outputs) for
        regression, from raw inputs with the run's preprocessing; batched, on the model's
        device, eval mode, no gradients. numpy in -> numpy out, tensor in -> tensor out.

        Args:
            inputs: raw samples as in the training data (a list of strings for text runs).
            batch_size: samples per forward pass.
        """
        spec, preprocessor = self.spec_and_preprocessor()
        return predict_arrays(
            self._model(),
            inputs,
            spec=spec,
            preprocessor=preprocessor,
            precision=self.precision(self._model(), spec),
            batch_size=batch_size,
        )

    def evaluate(self, inputs: Any, targets: Any, *, batch_size: int = BATCH_SIZE):
        """The metrics dict (loss, accuracy, … as in ``run.metrics["test"]``) on raw inputs
        and their labels (class names or ids, or regression values)."""
        spec, preprocessor = self.spec_and_preprocessor()
        return evaluate_arrays(
            self._model(),
            inputs,
            targets,
            cfg=self.config,
            spec=spec,
            preprocessor=preprocessor,
            batch_size=batch_size,
        )

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 100,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> str:
        """The prompt and a sampled continuation, for a language-model run (KV cache where
        the model has one). A prompt longer than the context keeps its last tokens (a warning).

        Args:
            prompt: text, tokenized as the training text was.
            max_new_tokens: tokens to add.
            temperature: 0 = greedy; higher is more random.
            top_k: sample among the k most likely tokens only.
            top_p: sample among the most likely tokens whose probability reaches top_p.
            seed: the same seed gives the same text.
        """
        spec, preprocessor = self.spec_and_preprocessor()
        encoder = run_tokenizer(spec, preprocessor, where=str(self.run_dir))
        model = self._model()
        return generate_text(
            model,
            prompt,
            encoder=encoder,
            precision=self.precision(model, spec),
            max_new_tokens=max_new_tokens,
            sampling=Sampling(temperature=temperature, top_k=top_k, top_p=top_p),
            seed=seed,
        ).text

    def preprocess(self, inputs: Any) -> torch.Tensor:
        """Raw inputs -> the tensor ``run.model`` takes (scaled, encoded), on the CPU."""
        spec, preprocessor = self.spec_and_preprocessor()
        return preprocess_inputs(inputs, spec=spec, preprocessor=preprocessor)

    def with_preprocessing(self) -> nn.Module:
        """A module that takes raw float tensors: the run's scaling, then ``run.model``
        (shares its weights; returns logits or values)."""
        spec, preprocessor = self.spec_and_preprocessor()
        return PreprocessedModel(self._model(), preprocessor, spec=spec)

    @property
    def history(self) -> list[dict]:
        """Per epoch: ``epoch``, ``step``, ``train_loss``, ``train_<metric>``, ``val_loss``,
        ``val_<metric>`` (like Keras' ``History.history``, one dict per epoch)."""
        return read_history(RunDir(Path(self.run_dir)).metrics)

    def history_frame(self):
        """``run.history`` as a pandas DataFrame indexed by epoch (needs pandas)."""
        return history_frame(self.history)

    def precision(self, model: nn.Module, spec: DataSpec) -> Precision:
        """The precision the run trained in (`auto` resolved as training resolved it)."""
        key = (id(model), device_of(model))
        if key not in self._precisions:
            self._precisions[key] = run_precision(
                self.config.train.precision,
                key[1],
                model=model,
                spec=spec,
                batch_size=self.config.train.batch_size,
            )
        return self._precisions[key]

    def spec_and_preprocessor(self) -> tuple[DataSpec, Preprocessor]:
        """The data spec and the train-split preprocessing (read from the run directory)."""
        run = RunDir(Path(self.run_dir))
        if self.spec is None:
            self.spec = read_spec(run)
        if self.preprocessor is None:
            self.preprocessor = read_preprocessor(run)
        return self.spec, self.preprocessor

    def _model(self) -> nn.Module:
        if self.model is None:
            raise UserError(
                f"{self.run_dir}: this Run holds no model; reload it with "
                f"scaletrain.load_run({str(self.run_dir)!r}, model=...)"
            )
        return self.model
