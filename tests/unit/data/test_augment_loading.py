"""data.augment reaches training: the train loader augments each micro batch (in memory and
from shards), evaluation never does, a run with augmentation differs from one without it, and
an interrupted run on shards resumes bitwise (loader position and augmentation RNG)."""

from __future__ import annotations

import json
import shutil

import torch

from scaletrain.config import AugmentConfig, DataConfig
from scaletrain.data import BatchLoader, EvalLoader, build_data
from scaletrain.data.shards import prepare_shards

FLIP = AugmentConfig(hflip=1.0)  # deterministic: every image flipped


def first_step(split, **options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    loader = BatchLoader(
        split,
        global_batch_size=32,
        micro_batch_size=16,
        shuffle=True,
        seed=3,
        drop_last=False,
        num_workers=0,
        **options,
    )
    batch = next(iter(loader))
    inputs = torch.cat([inputs for inputs, _ in batch.micro_batches])
    targets = torch.cat([targets for _, targets in batch.micro_batches])
    return inputs, targets, batch.sample_ids


def test_train_loader_augments_and_eval_does_not(tmp_path):
    plain = build_data(DataConfig(name="digits"), seed=0)
    flipped = build_data(DataConfig(name="digits", augment=FLIP), seed=0)
    assert plain.train.augment is None and flipped.train.augment is not None
    assert flipped.val.augment is None and flipped.test.augment is None
    inputs, targets, ids = first_step(flipped.train)
    assert torch.equal(inputs, plain.train.inputs[ids].flip(-1))
    assert torch.equal(targets, plain.train.targets[ids])
    assert not torch.equal(inputs, plain.train.inputs[ids])  # digits are not symmetric
    evaluated = torch.cat([inputs for inputs, _ in EvalLoader(flipped.train, batch_size=64)])
    assert torch.equal(evaluated, plain.train.inputs)  # evaluation sees the images as they are
    # from memory-mapped shards: the same flipped micro batches
    prepare_shards(DataConfig(name="digits"), tmp_path / "shards", seed=0, shard_bytes=20_000)
    shards = build_data(
        DataConfig(source="shards", path=str(tmp_path / "shards"), augment=FLIP), seed=0
    )
    shard_inputs, shard_targets, shard_ids = first_step(shards.train)
    assert torch.equal(shard_ids, ids) and torch.equal(shard_targets, targets)
    assert torch.equal(shard_inputs, inputs)


def first_loss(run_dir) -> float:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return next(row["loss"] for row in map(json.loads, lines) if row.get("split") == "train")


def test_interrupted_run_on_shards_with_augmentation_resumes_exactly(tmp_path, interrupt_at):
    """Loader position (shards) and the augmentation's RNG both come back from the checkpoint."""
    import scaletrain
    from scaletrain.api import resume

    prepare_shards(DataConfig(name="digits"), tmp_path / "shards", seed=3, shard_bytes=200_000)

    def config(name: str, *, augment: bool = True, max_steps: int = 30) -> dict:
        mixed = {"hflip": 0.5, "noise_std": 0.1, "mixup_alpha": 0.4}
        return {
            "run": {"name": name, "seed": 3, "out_dir": str(tmp_path / "runs")},
            "data": {
                "source": "shards",
                "path": str(tmp_path / "shards"),
                "augment": mixed if augment else {},
            },
            "model": {"name": "mlp", "hidden": [16]},
            "train": {"max_steps": max_steps, "batch_size": 64, "precision": "32", "device": "cpu"},
            "checkpoint": {"every_steps": 10, "every_epochs": 0, "keep_last": 3},
            "log": {"every_steps": 1, "progress": False, "tensorboard": False, "report": False},
        }

    reference = scaletrain.train(config("full"))  # 30 steps of 64 cross the epoch (1,257)
    plain = scaletrain.train(config("plain", augment=False, max_steps=2))
    # the same seed, weights and first batch: only the augmentation changes the first loss
    assert first_loss(plain.run_dir) != first_loss(reference.run_dir)
    interrupted = scaletrain.train(config("cut"), callbacks=[interrupt_at(14)])
    assert interrupted.status == "interrupted"
    # a crash rather than Ctrl-C: resume from step 10 and replay 11-15 mid-epoch
    shutil.rmtree(interrupted.run_dir / "checkpoints" / "step_00000015")
    resumed = resume(interrupted.run_dir)
    assert resumed.status == "finished"
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
