"""The teacher during training: its logits for each micro batch, live or precomputed, blended
into the student's loss (`optim/distill.py`).

Live: the teacher runs in eval mode without gradients under the step's autocast, on the batch
the student sees (augmented or not). It is replicated on every rank, unwrapped: under DDP and
FSDP alike each rank holds it whole, so it must fit one device; a larger teacher is what
`distill.precompute` is for. It is no part of the student's module, optimizer or checkpoint.

Precomputed: the teacher runs once over the train split, each rank its contiguous shard, into
one memory-mapped float32 `teacher_logits.npy` (row = train-split sample index, the ids
`StepBatch.sample_ids` carries), published by an atomic rename with a JSON note of which
teacher made it; a resume (or another run of the same teacher) reuses it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from scaletrain.config.distill import DistillConfig
from scaletrain.data import EvalLoader, Split
from scaletrain.fileio import atomic_write_json, fsync_dir
from scaletrain.optim.distill import DistillLoss
from scaletrain.train.precision import Precision

LOGITS_FILE = "teacher_logits.npy"
PRECOMPUTE_BATCH = 256


@dataclass(frozen=True)
class TeacherModel:
    """A loaded teacher: its network (eval mode) and which weights it holds."""

    model: nn.Module
    run_dir: Path
    step: int


class Distiller:
    """`(output, targets, inputs, sample_ids) -> loss`: the task loss blended with the
    teacher's soft targets for the same samples."""

    def __init__(
        self,
        loss: DistillLoss,
        *,
        teacher: nn.Module | None,
        precision: Precision,
        logits: np.ndarray | None,
    ):
        self.loss, self.teacher, self.precision, self.logits = loss, teacher, precision, logits

    def __call__(
        self,
        output: torch.Tensor,
        targets: torch.Tensor,
        *,
        inputs: torch.Tensor,
        sample_ids: torch.Tensor,
    ) -> torch.Tensor:
        return self.loss(output, targets, self.teacher_logits(inputs, sample_ids, output.device))

    def teacher_logits(
        self, inputs: torch.Tensor, sample_ids: torch.Tensor, device: torch.device
    ) -> torch.Tensor:
        """The teacher's logits: rows of the precomputed file, else a forward pass."""
        if self.logits is not None:  # a copy of just these rows out of the mapped file
            rows = torch.from_numpy(self.logits[sample_ids.numpy()])
            return rows.to(device, torch.float32)  # a float16 file: the loss works in float32
        # no_grad, not inference_mode: the loss saves these logits for the student's backward
        with torch.no_grad(), self.precision.autocast():
            return self.teacher(inputs)


def build_distiller(
    cfg: DistillConfig,
    teacher: TeacherModel,
    *,
    task_loss: nn.Module,
    train: Split,
    example_input: torch.Tensor,
    run_root: Path,
    precision: Precision,
    strategy,
) -> Distiller:
    """The teacher placed beside the student (replicated, no gradients), and its logits file
    written first where `distill.precompute` asks for one."""
    model = precision.prepare_model(teacher.model).to(strategy.device).eval()
    model.requires_grad_(False)
    loss = DistillLoss(cfg, task_loss)
    if not cfg.precompute:
        return Distiller(loss, teacher=model, precision=precision, logits=None)
    folder = Path(cfg.logits_dir) if cfg.logits_dir is not None else run_root
    path = precompute_logits(
        model,
        train,
        path=folder / LOGITS_FILE,
        dtype=np.dtype(cfg.logits_dtype),
        teacher=teacher,
        example_input=example_input,
        precision=precision,
        strategy=strategy,
    )
    return Distiller(loss, teacher=None, precision=precision, logits=np.load(path, mmap_mode="r"))


def precompute_logits(
    model: nn.Module,
    train: Split,
    *,
    path: Path,
    dtype: np.dtype,
    teacher: TeacherModel,
    example_input: torch.Tensor,
    precision: Precision,
    strategy,
) -> Path:
    """`path` holding the teacher's logits (`dtype`) for every train sample, by index; kept
    as it is where its note says the same teacher made it for this many samples."""
    note = {"teacher": str(teacher.run_dir.resolve()), "step": teacher.step, "rows": len(train)}
    if dtype != np.float32:  # (a float32 note stays as files written before this key read)
        note["dtype"] = dtype.name
    note_path = path.with_suffix(".json")
    if _reusable(path, note_path, note):
        return path
    loader = EvalLoader(
        train,
        batch_size=PRECOMPUTE_BATCH,
        rank=strategy.data_shard()[0],
        world_size=strategy.data_shard()[1],
        device=strategy.device,
    )
    with torch.no_grad(), precision.autocast():  # the shape of one output row
        row_shape = tuple(model(precision.cast_inputs(example_input)).shape[1:])
    partial = path.with_name(path.name + ".partial")
    if strategy.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.lib.format.open_memmap(
            partial, mode="w+", dtype=dtype, shape=(len(train), *row_shape)
        ).flush()
    strategy.barrier()  # the file exists: every rank fills its own rows
    rows = np.load(partial, mmap_mode="r+")
    position = loader.shard_start
    for inputs, _ in loader:
        with torch.no_grad(), precision.autocast():
            logits = model(precision.cast_inputs(inputs)).float().cpu().numpy()
        rows[position : position + len(logits)] = logits
        position += len(logits)
    rows.flush()
    del rows
    strategy.barrier()  # every rank's rows are written
    if strategy.is_main:
        os.replace(partial, path)
        atomic_write_json(note_path, note)
        fsync_dir(path.parent)
    strategy.barrier()
    return path


def _reusable(path: Path, note_path: Path, note: dict) -> bool:
    """The file is a cache: one its note does not vouch for, or that does not read back as
    float32 rows, one per train sample (truncated, edited), is written again."""
    try:
        if json.loads(note_path.read_text()) != note:
            return False
        rows = np.load(path, mmap_mode="r")  # no pickle: allow_pickle stays False
    except (OSError, ValueError):
        return False
    dtype = np.dtype(note.get("dtype", "float32"))
    return rows.dtype == dtype and rows.ndim >= 2 and rows.shape[0] == note["rows"]
