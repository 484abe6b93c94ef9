"""BatchLoader and EvalLoader: coverage, world-size-free order, exact resume, rank shards."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from torch.utils.data import Dataset

from scaletrain.data import BatchLoader, EvalLoader, Split, epoch_order
from scaletrain.errors import DataError

NUM_SAMPLES = 103  # prime: no batch size divides it


def id_split(num_samples: int = NUM_SAMPLES) -> Split:
    """Inputs and targets encode each sample's global id, so batches can be checked."""
    ids = torch.arange(num_samples)
    inputs = torch.stack([ids.float(), -ids.float()], dim=1)  # (N, 2)
    return Split(inputs=inputs, targets=ids.clone())


class IdDataset(Dataset):
    def __init__(self, num_samples: int = NUM_SAMPLES):
        self.split = id_split(num_samples)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        return self.split.inputs[index], int(self.split.targets[index])


def make_loaders(split, *, world_size: int, **kwargs) -> list[BatchLoader]:
    options = {"global_batch_size": 16, "micro_batch_size": 3, "shuffle": True, "seed": 11}
    options.update(kwargs)
    options.setdefault("drop_last", False)
    return [
        BatchLoader(split, rank=rank, world_size=world_size, **options)
        for rank in range(world_size)
    ]


def global_steps(loaders: list[BatchLoader]) -> list[list[int]]:
    """Run one epoch on every rank; per step, the concatenation of the ranks' ids."""
    per_rank = [list(loader) for loader in loaders]
    return [
        torch.cat([steps[index].sample_ids for steps in per_rank]).tolist()
        for index in range(len(per_rank[0]))
    ]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_sample_once_per_epoch(world_size, drop_last):
    loaders = make_loaders(id_split(), world_size=world_size, drop_last=drop_last)
    ids = Counter(i for step in global_steps(loaders) for i in step)
    assert max(ids.values()) == 1  # none duplicated
    if drop_last:
        assert len(ids) == (NUM_SAMPLES // 16) * 16
        order = epoch_order(NUM_SAMPLES, seed=11, epoch=0, shuffle=True)
        assert set(ids) == set(order[: len(ids)].tolist())
    else:
        assert sorted(ids) == list(range(NUM_SAMPLES))  # none dropped
    assert all(loader.epoch == 1 for loader in loaders)


@pytest.mark.parametrize("drop_last", [False, True])
def test_global_order_is_independent_of_world_size(drop_last):
    reference = global_steps(make_loaders(id_split(), world_size=1, drop_last=drop_last))
    order = epoch_order(NUM_SAMPLES, seed=11, epoch=0, shuffle=True).tolist()
    assert (
        reference
        == [order[start : start + 16] for start in range(0, len(order), 16)][: len(reference)]
    )
    for world_size in (2, 3):
        loaders = make_loaders(
            id_split(), world_size=world_size, micro_batch_size=5, drop_last=drop_last
        )
        assert global_steps(loaders) == reference


@pytest.mark.parametrize("world_size", [1, 3, 4])
def test_rank_slices_are_balanced_and_micro_batches_concatenate(world_size):
    split = id_split()
    per_rank = [list(loader) for loader in make_loaders(split, world_size=world_size)]
    for index, step in enumerate(per_rank[0]):
        sizes = [len(steps[index].sample_ids) for steps in per_rank]
        assert max(sizes) - min(sizes) <= 1
        assert sum(sizes) == step.num_samples_global
        for steps in per_rank:
            batch = steps[index]
            assert all(len(inputs) <= 3 for inputs, _ in batch.micro_batches)
            assert batch.sample_ids.dtype == torch.int64 and batch.sample_ids.device.type == "cpu"
            if not batch.micro_batches:
                assert len(batch.sample_ids) == 0
                continue
            inputs = torch.cat([inputs for inputs, _ in batch.micro_batches])
            targets = torch.cat([targets for _, targets in batch.micro_batches])
            assert torch.equal(inputs, split.inputs[batch.sample_ids])
            assert torch.equal(targets, batch.sample_ids)
    assert per_rank[0][-1].num_samples_global == NUM_SAMPLES % 16


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_a_final_step_shorter_than_the_world_leaves_no_rank_empty(world_size):
    """97 = 6 x 16 + 1: one sample in the last step would leave ranks without a backward
    (DDP/FSDP stall); the last two steps share their 17 samples instead, in the same order."""
    split = id_split(97)
    per_rank = [list(loader) for loader in make_loaders(split, world_size=world_size)]
    assert all(len(steps) == 7 for steps in per_rank)  # as many steps as make_plan counts
    for steps in per_rank:
        assert all(len(step.sample_ids) >= 1 and step.micro_batches for step in steps)
    sizes = [per_rank[0][index].num_samples_global for index in range(7)]
    assert sizes == [16] * 5 + [9, 8]
    steps = [torch.cat([steps[i].sample_ids for steps in per_rank]).tolist() for i in range(7)]
    order = epoch_order(97, seed=11, epoch=0, shuffle=True).tolist()
    assert [i for step in steps for i in step] == order  # every sample once, in (seed, epoch) order
    # one process keeps the plain steps (16 x 6 + 1); resuming from it mid-epoch into this
    # world size continues with exactly the next samples
    single = make_loaders(split, world_size=1)[0]
    assert [len(step.sample_ids) for step in single] == [16] * 6 + [1]
    first = make_loaders(split, world_size=1)[0]
    iterator = iter(first)
    for _ in range(3):
        next(iterator)
    resumed = make_loaders(split, world_size=world_size)
    for loader in resumed:
        loader.load_state_dict(first.state_dict())
    rest = [torch.cat([s.sample_ids for s in step]).tolist() for step in zip(*resumed, strict=True)]
    assert [i for step in rest for i in step] == order[48:]
    assert all(len(s.sample_ids) >= 1 for step in zip(*resumed, strict=True) for s in step)


def test_epochs_differ_and_no_shuffle_is_in_order():
    loader = make_loaders(id_split(), world_size=1)[0]
    first = torch.cat([step.sample_ids for step in loader])
    second = torch.cat([step.sample_ids for step in loader])
    assert loader.epoch == 2
    assert not torch.equal(first, second) and sorted(first.tolist()) == sorted(second.tolist())
    assert torch.equal(
        epoch_order(50, seed=1, epoch=3, shuffle=True),
        epoch_order(50, seed=1, epoch=3, shuffle=True),
    )
    assert not torch.equal(
        epoch_order(50, seed=1, epoch=3, shuffle=True),
        epoch_order(50, seed=2, epoch=3, shuffle=True),
    )
    plain = make_loaders(id_split(), world_size=1, shuffle=False)[0]
    assert torch.equal(torch.cat([step.sample_ids for step in plain]), torch.arange(NUM_SAMPLES))


def next_steps(loader: BatchLoader, num_steps: int) -> list[torch.Tensor]:
    """The next num_steps steps of one rank, crossing epochs, as a training loop would."""
    steps: list[torch.Tensor] = []
    while len(steps) < num_steps:
        for batch in loader:
            steps.append(batch.sample_ids)
            if len(steps) == num_steps:
                break
    return steps


def run_global(loaders: list[BatchLoader], num_steps: int) -> list[list[int]]:
    """Each rank runs its own loop; per step, the concatenation of the ranks' ids."""
    per_rank = [next_steps(loader, num_steps) for loader in loaders]
    return [torch.cat(ids).tolist() for ids in zip(*per_rank, strict=True)]


@pytest.mark.parametrize("stop_after", [1, 4, 7, 9, 13])
@pytest.mark.parametrize("resume_world_size, resume_micro", [(2, 3), (3, 5), (1, 16), (4, 1)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_resume_continues_with_exactly_the_next_samples(
    stop_after, resume_world_size, resume_micro, drop_last
):
    split = id_split()
    uninterrupted = run_global(make_loaders(split, world_size=2, drop_last=drop_last), 20)
    first_run = make_loaders(split, world_size=2, drop_last=drop_last)
    assert run_global(first_run, stop_after) == uninterrupted[:stop_after]
    states = [json.loads(json.dumps(loader.state_dict())) for loader in first_run]
    assert all(state == states[0] for state in states)
    resumed = make_loaders(
        split, world_size=resume_world_size, micro_batch_size=resume_micro, drop_last=drop_last
    )
    for loader in resumed:
        loader.load_state_dict(states[0])
    assert run_global(resumed, 20 - stop_after) == uninterrupted[stop_after:]


def test_state_after_a_full_epoch_points_at_the_next_epoch():
    loader = make_loaders(id_split(), world_size=1)[0]
    assert loader.steps_per_epoch() == 7
    iterator = iter(loader)
    for _ in range(7):
        next(iterator)
    assert loader.state_dict() == {"epoch": 1, "samples_consumed": 0}
    # The iterator was left unexhausted: the next pass is epoch 1, not an empty epoch 0.
    assert torch.equal(
        next(iter(loader)).sample_ids, epoch_order(NUM_SAMPLES, seed=11, epoch=1, shuffle=True)[:16]
    )
    resumed = make_loaders(id_split(), world_size=1)[0]
    resumed.load_state_dict({"epoch": 0, "samples_consumed": 48})
    assert resumed.remaining_steps() == 4
    assert len(list(resumed)) == 4 and resumed.epoch == 1


def test_set_epoch_and_bad_positions():
    loader = make_loaders(id_split(), world_size=1)[0]
    loader.set_epoch(5)
    assert torch.equal(
        torch.cat([step.sample_ids for step in loader]),
        epoch_order(NUM_SAMPLES, seed=11, epoch=5, shuffle=True),
    )
    with pytest.raises(DataError, match="outside the train split of 103 samples"):
        loader.load_state_dict({"epoch": 0, "samples_consumed": 500})
    with pytest.raises(DataError, match="fewer than one batch of 200"):
        BatchLoader(
            id_split(),
            global_batch_size=200,
            micro_batch_size=8,
            shuffle=True,
            seed=0,
            drop_last=True,
        )


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataset_path_matches_the_tensor_path(num_workers):
    tensor_loaders = make_loaders(id_split(), world_size=3)
    dataset_loaders = make_loaders(
        Split(None, None, dataset=IdDataset()), world_size=3, num_workers=num_workers
    )
    rng_before = torch.random.get_rng_state()
    for _ in range(2):  # two epochs: persistent workers are refilled with the new order
        for tensor_loader, dataset_loader in zip(tensor_loaders, dataset_loaders, strict=True):
            for expected, batch in zip(tensor_loader, dataset_loader, strict=True):
                assert torch.equal(expected.sample_ids, batch.sample_ids)
                assert len(expected.micro_batches) == len(batch.micro_batches)
                for (inputs, targets), (got_inputs, got_targets) in zip(
                    expected.micro_batches, batch.micro_batches, strict=True
                ):
                    assert torch.equal(inputs, got_inputs) and torch.equal(targets, got_targets)
    # The DataLoader draws worker seeds from its own generator, not the global RNG.
    assert torch.equal(torch.random.get_rng_state(), rng_before)


def test_dataset_path_resumes_mid_epoch():
    reference = run_global(make_loaders(id_split(), world_size=2), 10)
    first = make_loaders(Split(None, None, dataset=IdDataset()), world_size=2)
    assert run_global(first, 3) == reference[:3]
    resumed = make_loaders(Split(None, None, dataset=IdDataset()), world_size=3, micro_batch_size=4)
    for loader in resumed:
        loader.load_state_dict(first[0].state_dict())
    assert run_global(resumed, 7) == reference[3:]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("as_dataset", [False, True])
def test_eval_shards_cover_every_sample_once_in_order(world_size, as_dataset):
    split = id_split(23)
    source = Split(None, None, dataset=IdDataset(23)) if as_dataset else split
    shards = [
        EvalLoader(source, batch_size=4, rank=rank, world_size=world_size)
        for rank in range(world_size)
    ]
    targets = []
    for shard in shards:
        batches = list(shard)
        assert len(batches) == len(shard) and all(len(inputs) <= 4 for inputs, _ in batches)
        shard_targets = (
            torch.cat([t for _, t in batches]) if batches else torch.empty(0, dtype=torch.int64)
        )
        assert torch.equal(shard_targets, shard.sample_ids())
        if batches:
            assert torch.equal(torch.cat([i for i, _ in batches]), split.inputs[shard.sample_ids()])
        targets.append(shard_targets)
    assert torch.equal(torch.cat(targets), torch.arange(23))
    sizes = [shard.num_samples for shard in shards]
    assert max(sizes) - min(sizes) <= 1


def test_eval_with_more_ranks_than_samples():
    shards = [EvalLoader(id_split(2), batch_size=4, rank=rank, world_size=3) for rank in range(3)]
    assert [shard.num_samples for shard in shards] == [1, 1, 0]
    assert list(shards[2]) == [] and len(shards[2]) == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fast_path_matches_cpu_and_never_syncs():
    split = id_split()
    expected = list(make_loaders(split, world_size=3)[1])
    loader = BatchLoader(
        split,
        global_batch_size=16,
        micro_batch_size=3,
        shuffle=True,
        seed=11,
        drop_last=False,
        rank=1,
        world_size=3,
        device="cuda",
    )
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host sync in the hot path raises
    try:
        steps = list(loader)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for want, got in zip(expected, steps, strict=True):
        assert got.sample_ids.device.type == "cpu" and torch.equal(want.sample_ids, got.sample_ids)
        for (inputs, targets), (got_inputs, got_targets) in zip(
            want.micro_batches, got.micro_batches, strict=True
        ):
            assert got_inputs.is_cuda and torch.equal(inputs, got_inputs.cpu())
            assert torch.equal(targets, got_targets.cpu())


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("dataset", [False, True], ids=["tensors", "dataset"])
def test_only_the_last_step_of_an_epoch_ends_it(drop_last, dataset):
    split = Split(None, None, dataset=IdDataset()) if dataset else id_split()
    (loader,) = make_loaders(split, world_size=1, drop_last=drop_last)
    for _ in range(2):  # two epochs; the second one resumed from the middle
        flags = [batch.ends_epoch for batch in loader]
        assert flags == [False] * (len(flags) - 1) + [True]
        assert loader.remaining_steps() == loader.steps_per_epoch()  # the next epoch's
    loader.load_state_dict({"epoch": 2, "samples_consumed": 32})
    assert [batch.ends_epoch for batch in loader][-2:] == [False, True]
