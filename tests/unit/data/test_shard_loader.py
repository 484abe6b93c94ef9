"""Loading from shards across ranks AND loader workers: every sample once per epoch, the
global order independent of world size and worker count, exact resume into another layout,
the balanced sampler, and eval shards that pad nothing."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from scaletrain.config import DataConfig
from scaletrain.data import BatchLoader, EvalLoader, Split, build_data, epoch_order
from scaletrain.data.shards import SampleShardWriter, write_manifest
from scaletrain.data.shards.reader import ShardSamples

NUM_SAMPLES = 103  # prime: no batch size divides it
# 3 workers on a 2-core machine are deliberate here (sharding, not speed, is under test).
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


@pytest.fixture(scope="module")
def id_shard_files(tmp_path_factory) -> tuple:
    """Shards whose inputs and targets encode each sample's global id (7 per shard)."""
    root = tmp_path_factory.mktemp("ids")
    fields = {
        "inputs": {"dtype": "float32", "shape": [2]},
        "targets": {"dtype": "int64", "shape": []},
    }
    writer = SampleShardWriter(root, "train", fields=fields, shard_bytes=7 * 16)
    ids = np.arange(NUM_SAMPLES)
    for start in range(0, NUM_SAMPLES, 10):
        chunk = ids[start : start + 10]
        writer.append(inputs=np.stack([chunk, -chunk], axis=1), targets=chunk)
    split = writer.close()
    assert len(split["shards"]) == 15
    write_manifest(root, {"splits": {"train": split}, "fields": fields})
    return root, split, fields


@pytest.fixture(scope="module")
def id_shards(id_shard_files) -> Split:
    return Split(None, None, dataset=ShardSamples(*id_shard_files, max_open=3))


def loaders(split, *, world_size: int, num_workers: int, **options) -> list[BatchLoader]:
    settings = {
        "global_batch_size": 16,
        "micro_batch_size": 3,
        "shuffle": True,
        "seed": 11,
        "drop_last": False,
    }
    settings.update(options)
    return [
        BatchLoader(split, rank=rank, world_size=world_size, num_workers=num_workers, **settings)
        for rank in range(world_size)
    ]


def global_steps(group: list[BatchLoader], num_steps: int | None = None) -> list[list[int]]:
    """Each rank runs its own loop; per step, the concatenation of the ranks' sample ids,
    checked against the ids the inputs and targets themselves carry."""
    per_rank = []
    for loader in group:
        steps = []
        while num_steps is None or len(steps) < num_steps:
            for batch in loader:
                read = [t for _, t in batch.micro_batches]
                got = torch.cat(read) if read else torch.empty(0, dtype=torch.int64)
                assert torch.equal(got, batch.sample_ids)
                for inputs, targets in batch.micro_batches:
                    assert torch.equal(inputs[:, 0].long(), targets)
                steps.append(batch.sample_ids)
                if num_steps is not None and len(steps) == num_steps:
                    break
            if num_steps is None:
                break
        per_rank.append(steps)
    return [torch.cat(ids).tolist() for ids in zip(*per_rank, strict=True)]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_every_sample_once_for_any_world_size_and_worker_count(id_shards, world_size):
    order = epoch_order(NUM_SAMPLES, seed=11, epoch=0, shuffle=True).tolist()
    expected = [order[start : start + 16] for start in range(0, NUM_SAMPLES, 16)]
    for num_workers in (0, 1, 2, 3):
        steps = global_steps(loaders(id_shards, world_size=world_size, num_workers=num_workers))
        counts = Counter(i for step in steps for i in step)
        assert sorted(counts) == list(range(NUM_SAMPLES)) and max(counts.values()) == 1
        assert steps == expected  # the global order is the (seed, epoch) permutation


class CountedReads(ShardSamples):
    """Real shards that count their reads (``__getitems__`` calls)."""

    reads = 0

    def __getitems__(self, indices):
        CountedReads.reads += 1
        return super().__getitems__(indices)


@pytest.mark.parametrize("sample_rows", [1, 7, 10_000])  # 16 bytes per sample
def test_reads_of_several_micro_batches_hand_out_the_same_micro_batches(
    id_shard_files, sample_rows
):
    dataset = CountedReads(*id_shard_files, max_open=3, read_bytes=16 * sample_rows)
    assert dataset.read_rows == sample_rows
    order = epoch_order(NUM_SAMPLES, seed=11, epoch=0, shuffle=True).tolist()
    expected = [order[start : start + 16] for start in range(0, NUM_SAMPLES, 16)]
    for num_workers in (0, 2):
        group = loaders(Split(None, None, dataset=dataset), world_size=2, num_workers=num_workers)
        CountedReads.reads = 0
        assert global_steps(group) == expected
        reads = CountedReads.reads
        # the next epoch: micro batches as planned, whatever the reads
        sizes = [len(t) for loader in group for batch in loader for _, t in batch.micro_batches]
        assert max(sizes) == 3 and sum(sizes) == NUM_SAMPLES
        micro_batches = len(sizes)
        if sample_rows == 1:  # a read never splits a micro batch: one read each
            assert reads == micro_batches
        elif sample_rows == 7:  # two micro batches of 3 fit in 7 rows
            assert micro_batches / 2 <= reads < micro_batches
        else:  # one read per rank and pass
            assert reads == 2


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_shard_lost_during_the_run_is_named(tmp_path, id_shard_files, num_workers):
    import shutil

    from scaletrain.errors import DataError

    root, split, fields = id_shard_files
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    victim = copy / split["shards"][5]["files"]["inputs"]["path"]
    for damage in ("removed", "truncated"):
        dataset = ShardSamples(copy, split, fields, max_open=3, read_bytes=16)
        (loader,) = loaders(
            Split(None, None, dataset=dataset), world_size=1, num_workers=num_workers
        )
        good = victim.read_bytes()
        if damage == "removed":
            victim.unlink()
        else:
            victim.write_bytes(good[: len(good) // 2])
        with pytest.raises(DataError, match=rf"^{victim}: the shard cannot be read any more"):
            for _ in loader:
                pass
        victim.write_bytes(good)


def test_drop_last_drops_only_the_final_partial_step(id_shards):
    steps = global_steps(loaders(id_shards, world_size=3, num_workers=2, drop_last=True))
    order = epoch_order(NUM_SAMPLES, seed=11, epoch=0, shuffle=True).tolist()
    assert [i for step in steps for i in step] == order[: (NUM_SAMPLES // 16) * 16]


@pytest.mark.parametrize(
    ("first", "second"), [((2, 0), (3, 2)), ((1, 3), (4, 1)), ((3, 2), (1, 0))]
)
def test_resume_into_another_world_size_and_worker_count(id_shards, first, second):
    reference = global_steps(loaders(id_shards, world_size=1, num_workers=0), 20)
    run = loaders(id_shards, world_size=first[0], num_workers=first[1])
    assert global_steps(run, 9) == reference[:9]
    state = json.loads(json.dumps(run[0].state_dict()))
    assert all(loader.state_dict() == state for loader in run)
    resumed = loaders(id_shards, world_size=second[0], num_workers=second[1], micro_batch_size=4)
    for loader in resumed:
        loader.load_state_dict(state)
    assert global_steps(resumed, 11) == reference[9:]  # crosses into epoch 1


def test_balanced_sampler_is_seeded_and_evens_out_classes():
    bundle = build_data(DataConfig(name="breast_cancer", sampler="balanced"), seed=0)
    counts = torch.tensor(bundle.spec.class_counts)
    assert counts.max() > 1.4 * counts.min()  # imbalanced to begin with

    def epoch_ids(world_size: int) -> list[int]:
        group = loaders(bundle.train, world_size=world_size, num_workers=0, global_batch_size=32)
        per_rank = [[batch.sample_ids for batch in loader] for loader in group]
        return torch.cat([torch.cat(step) for step in zip(*per_rank, strict=True)]).tolist()

    drawn = torch.tensor(epoch_ids(2))
    assert len(drawn) == len(bundle.train)  # an epoch is still N draws
    per_class = torch.bincount(bundle.train.targets[drawn])
    assert abs(per_class[0] - per_class[1]) < 0.15 * len(drawn)
    assert epoch_ids(4) == drawn.tolist()  # a function of (seed, epoch) only


@pytest.mark.parametrize("world_size", [1, 3, 4])
def test_eval_over_shards_covers_each_sample_once_without_padding(id_shards, world_size):
    targets = []
    for rank in range(world_size):
        shard = EvalLoader(
            id_shards, batch_size=8, rank=rank, world_size=world_size, num_workers=rank % 2
        )
        got = [t for _, t in shard]
        assert sum(len(t) for t in got) == shard.num_samples
        targets += got
    assert torch.equal(torch.cat(targets), torch.arange(NUM_SAMPLES))


@pytest.mark.parametrize(("threads", "independent"), [(1, False), (3, False), (1, True)])
def test_read_ahead_keeps_order_raises_errors_and_stops_when_left(threads, independent):
    import threading
    import time

    from scaletrain.data.loaders.dataset_loader import read_ahead

    def slow_when_even(value):
        time.sleep(0.002 * (value % 2 == 0))  # later reads finish first on other threads
        return value

    ran_in = []

    def where(value):
        ran_in.append(threading.current_thread().name)
        return slow_when_even(value)

    ordered = read_ahead(
        (lambda value=value: where(value) for value in range(50)),
        threads=threads,
        depth=4,
        independent=independent,
    )
    assert list(ordered) == list(range(50))
    # the consumer runs reads itself only where they may run out of order
    assert ("MainThread" in ran_in) == independent

    def failing(value):
        if value == 3:
            raise ValueError("bad shard")
        return value

    got = []
    with pytest.raises(ValueError, match="bad shard"):
        for item in read_ahead(
            (lambda value=value: failing(value) for value in range(10)),
            threads=threads,
            depth=2,
            independent=independent,
        ):
            got.append(item)
    assert got == [0, 1, 2]
    started = []
    early = read_ahead(
        (lambda value=value: started.append(value) or value for value in range(10_000)),
        threads=threads,
        depth=3,
        independent=independent,
    )
    assert next(early) == 0
    early.close()  # the consumer leaves: threads end, reads beyond the window never start
    assert len(started) <= 1 + 3 + threads
    assert not any(t.name.startswith("scaletrain-read") for t in threading.enumerate())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_shard_path_prefetches_pinned_batches_equal_to_cpu(id_shards):
    import threading

    expected = loaders(id_shards, world_size=2, num_workers=0)
    on_cuda = [
        BatchLoader(
            id_shards,
            global_batch_size=16,
            micro_batch_size=3,
            shuffle=True,
            seed=11,
            drop_last=False,
            rank=rank,
            world_size=2,
            device="cuda",
        )
        for rank in range(2)
    ]
    for want_loader, got_loader in zip(expected, on_cuda, strict=True):
        for want, got in zip(want_loader, got_loader, strict=True):
            assert torch.equal(want.sample_ids, got.sample_ids)
            for (inputs, targets), (got_inputs, got_targets) in zip(
                want.micro_batches, got.micro_batches, strict=True
            ):
                assert got_inputs.is_cuda and torch.equal(inputs, got_inputs.cpu())
                assert torch.equal(targets, got_targets.cpu())
    assert not any(t.name.startswith("scaletrain-read") for t in threading.enumerate())


def test_shard_samples_name_their_files_and_rows_for_error_messages(id_shards):
    shards = id_shards.dataset
    # ids 8 and 9 live in the second shard (7 per shard) at rows 1 and 2; id 20 in the third
    text = shards.describe([8, 9, 20])
    first, second = text.split("; ")
    assert first.endswith("rows [1, 2]") and second.endswith("rows [6] (3 samples)"), text
    paths = [str(path) for path in shards.maps["inputs"].paths]
    assert first.startswith(paths[1]) and second.startswith(paths[2]), text
