"""CheckpointStore: sync and async saves, commit order, keep_last, symlinks."""

import threading
import warnings

import pytest
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict

from scaletrain.checkpoint import CheckpointStore
from scaletrain.checkpoint.manifest import sha256_file
from scaletrain.errors import CheckpointError
from scaletrain.parallel import SingleStrategy

STRATEGY = SingleStrategy(torch.device("cpu"))


def _trained(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(5, 6)).sum().backward()
    optimizer.step()
    return model, optimizer


def _tensors(model, optimizer):
    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optim": optim_state}


def _save(store, step, model, optimizer, *, asynchronous=False):
    arguments = {
        "step": step,
        "tensors": _tensors(model, optimizer),
        "side_state": {"step": step},
        "strategy": STRATEGY,
    }
    return store.save_async(**arguments) if asynchronous else store.save(**arguments)


def _loaded_weights(store, path):
    model, optimizer = _trained(seed=1)  # different weights: the load must overwrite them
    tensors = _tensors(model, optimizer)
    side = store.load(path, tensors=tensors, rank=0)
    return tensors["model"], side


def test_async_save_writes_the_state_as_it_was_when_called(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints")
    model, optimizer = _trained()
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    result = _save(store, 3, model, optimizer, asynchronous=True)
    with torch.no_grad():  # training goes on while the background thread writes
        for parameter in model.parameters():
            parameter.add_(1.0)
    assert store.wait(STRATEGY) == result.path
    assert result.stall_s >= 0 and result.path.name == "step_00000003"
    weights, side = _loaded_weights(store, result.path)
    assert side == {"step": 3}
    for name, value in expected.items():
        assert torch.equal(weights[name], value), name


def test_keep_last_one_keeps_the_only_complete_checkpoint_while_another_is_in_flight(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep_last=1)
    model, optimizer = _trained()
    first = _save(store, 1, model, optimizer)
    first_hash = sha256_file(next(first.glob("*.safetensors")))
    with store._lock:  # hold the commit step: the new save stays in flight
        result = _save(store, 2, model, optimizer, asynchronous=True)
        names = sorted(p.name for p in store.root.iterdir())
        assert names == ["step_00000001", "step_00000002.tmp"]
        assert store.latest_valid() == first  # still complete and verifiable
        assert sha256_file(next(first.glob("*.safetensors"))) == first_hash
    store.wait(STRATEGY)
    assert [p.name for p in store.committed()] == ["step_00000002"]  # pruned after commit
    assert result.path.is_dir() and not first.exists()


def test_a_snapshot_and_the_save_after_it_are_in_flight_together_and_commit_in_order(
    tmp_path, monkeypatch
):
    """The end of a run: the best snapshot (a copy of its own) and the final checkpoint are
    written at once while the final evaluation runs; the final commits after the best."""
    store = CheckpointStore(tmp_path / "checkpoints", keep_last=1)
    commits = []
    real_commit = store._commit

    def recorded(tmp, final, step):
        commits.append(step)
        real_commit(tmp, final, step)

    monkeypatch.setattr(store, "_commit", recorded)
    torch.manual_seed(0)
    big = nn.Linear(1024, 2048)  # the snapshot: 8 MB, slower to write than the final
    snapshot = {"model": {k: v.detach().clone() for k, v in big.state_dict().items()}}
    model, optimizer = _trained()
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    store.mark_best(2, metric="val/loss", value=0.1)  # named before it exists, as in a run
    started = {}

    def start_both():
        store.save_async(
            step=2, tensors=snapshot, side_state={"step": 2}, strategy=STRATEGY, owned=True
        )
        started["final"] = _save(store, 3, model, optimizer, asynchronous=True)

    with store._lock:  # hold both commits: two saves in flight
        starter = threading.Thread(target=start_both)
        starter.start()
        starter.join(timeout=60)  # a save that waited for the snapshot would wait forever
        assert not starter.is_alive(), "the final save waited for the snapshot's commit"
        result = started["final"]
        names = sorted(p.name for p in store.root.iterdir())
        assert names == ["best.json", "step_00000002.tmp", "step_00000003.tmp"]  # none removed
    assert store.wait(STRATEGY) == result.path
    assert commits == [2, 3]
    assert [p.name for p in store.committed()] == ["step_00000002", "step_00000003"]  # best kept
    weights, side = _loaded_weights(store, result.path)
    assert side == {"step": 3}
    for name, value in expected.items():
        assert torch.equal(weights[name], value), name
    loaded = {"model": {k: torch.zeros_like(v) for k, v in snapshot["model"].items()}}
    store.load(store.find("best"), tensors=loaded, rank=0)
    for name, value in snapshot["model"].items():
        assert torch.equal(loaded["model"][name], value), name


def test_a_save_after_a_save_in_flight_waits_for_it_unless_that_one_is_a_snapshot(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints")
    model, optimizer = _trained()
    _save(store, 1, model, optimizer, asynchronous=True)
    _save(store, 2, model, optimizer, asynchronous=True)  # waited for step 1 first
    assert (store.root / "step_00000001").is_dir() and len(store._in_flight) == 1
    store.wait(STRATEGY)
    assert [p.name for p in store.committed()] == ["step_00000001", "step_00000002"]


def test_keep_last_and_best_survive_pruning(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep_last=2)
    model, optimizer = _trained()
    for step in (1, 2, 3, 4, 5):
        _save(store, step, model, optimizer)
        if step == 2:
            store.mark_best(2, metric="val/loss", value=0.5)
    assert [p.name for p in store.committed()] == [
        "step_00000002",
        "step_00000004",
        "step_00000005",
    ]
    assert store.find("best").name == "step_00000002"
    assert store.find("last").name == "step_00000005"


def test_leftover_tmp_folders_are_not_checkpoints_and_are_cleaned(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints")
    model, optimizer = _trained()
    good = _save(store, 1, model, optimizer)
    crashed = store.root / "step_00000002.tmp"  # a save killed before its manifest
    crashed.mkdir()
    (crashed / "__0_0.distcp").write_bytes(b"partial")
    assert store.committed() == [good] and store.latest_valid() == good
    _save(store, 3, model, optimizer)
    assert not crashed.exists()


def test_symlinked_checkpoint_is_refused(tmp_path):
    store = CheckpointStore(tmp_path / "run" / "checkpoints")
    elsewhere = CheckpointStore(tmp_path / "elsewhere")
    model, optimizer = _trained()
    _save(store, 1, model, optimizer)
    outside = _save(elsewhere, 7, model, optimizer)
    (store.root / "step_00000007").symlink_to(outside, target_is_directory=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.latest_valid().name == "step_00000001"
    assert any("link out of" in str(w.message) for w in caught)
    with pytest.raises(CheckpointError, match="link out of"):
        store.find("step_00000007")


def _link_to_elsewhere(tmp_path, store, name, model, optimizer):
    """`store.root/name` -> a real checkpoint folder outside the store; its files' hashes."""
    elsewhere = CheckpointStore(tmp_path / "elsewhere")
    outside = _save(elsewhere, 9, model, optimizer)
    store.root.mkdir(parents=True, exist_ok=True)
    (store.root / name).symlink_to(outside, target_is_directory=True)
    return outside, {p.name: sha256_file(p) for p in outside.iterdir()}


@pytest.mark.parametrize("name", ["step_00000002", "step_00000002.tmp"])
def test_a_save_onto_a_link_is_refused_and_leaves_it_alone(tmp_path, name):
    store = CheckpointStore(tmp_path / "run" / "checkpoints")
    model, optimizer = _trained()
    _save(store, 1, model, optimizer)
    outside, hashes = _link_to_elsewhere(tmp_path, store, name, model, optimizer)
    with pytest.raises(CheckpointError, match=f"{name}: a symbolic link") as caught:
        _save(store, 2, model, optimizer)
    assert "\n" not in str(caught.value)
    assert (store.root / name).is_symlink() and (store.root / name).resolve() == outside
    assert {p.name: sha256_file(p) for p in outside.iterdir()} == hashes
    with pytest.raises(CheckpointError, match=f"{name}: a symbolic link"):
        store.check_folder()  # what a resume asks before it trains


def test_pruning_never_deletes_through_a_link(tmp_path):
    store = CheckpointStore(tmp_path / "run" / "checkpoints", keep_last=1)
    model, optimizer = _trained()
    outside, hashes = _link_to_elsewhere(tmp_path, store, "step_00000001", model, optimizer)
    for step in (2, 3):
        _save(store, step, model, optimizer)
    assert (store.root / "step_00000001").is_symlink()
    assert {p.name: sha256_file(p) for p in outside.iterdir()} == hashes
    assert [p.name for p in store.committed()] == ["step_00000001", "step_00000003"]


@pytest.mark.parametrize(
    "content", ["{not json", '{"step": "../../x"}', "[40]", '{"step": -1}', '{"step": true}']
)
def test_a_damaged_best_json_is_one_line(tmp_path, content):
    store = CheckpointStore(tmp_path / "checkpoints")
    model, optimizer = _trained()
    _save(store, 1, model, optimizer)
    (store.root / "best.json").write_text(content)
    for call in (store.best_step, lambda: store.find("best"), store.check_folder):
        with pytest.raises(CheckpointError, match="best.json: expected") as caught:
            call()
        assert "\n" not in str(caught.value)
