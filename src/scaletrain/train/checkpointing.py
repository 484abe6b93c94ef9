"""When and how the loop saves and reloads a TrainState: policy, stall timing, resume, rollback."""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path

from scaletrain.checkpoint import CheckpointStore, CheckpointWarning
from scaletrain.config import CheckpointConfig, Config
from scaletrain.errors import CheckpointError
from scaletrain.fileio import read_jsonl
from scaletrain.rundir import RunDir, append_record, truncate_metrics
from scaletrain.train.best import BestWeights, Snapshot
from scaletrain.train.extend import RunFinished, schedule_needs_total
from scaletrain.train.guards import StepGuard
from scaletrain.train.ledger import Ledger
from scaletrain.train.state import TrainState


class Checkpointer:
    """The loop's one door to checkpoints (collective: every rank calls the same methods)."""

    def __init__(
        self,
        cfg: CheckpointConfig,
        *,
        run: RunDir,
        state: TrainState,
        strategy,
        guard: StepGuard,
        ledger: Ledger,
        config_hash: str,
        total_steps: int,
    ):
        self.cfg = cfg
        self.config_hash = config_hash
        self.run = run
        self.state = state
        self.strategy = strategy
        self.guard = guard
        self.ledger = ledger
        self.total_steps = total_steps
        self.store = CheckpointStore(run.checkpoints, keep_last=cfg.keep_last)
        self.last_step: int | None = None
        self.last_path: Path | None = None
        self._saved_config_hash: str | None = None  # of the checkpoint loaded last
        self._last_save_time = time.monotonic()
        # one process: a new best is a CPU copy, written before the next step checkpoint
        self.best = BestWeights() if strategy.world_size == 1 else None
        # the model weights of the best snapshot written last: the final evaluation loads
        # them from memory instead of reading back (and re-hashing) what was just saved
        self.written_best: tuple[int, dict] | None = None

    def due_by_time(self) -> bool:
        """Rank 0's clock only: ranks agree through the guard's step-boundary reduction."""
        minutes = self.cfg.every_minutes
        return minutes is not None and time.monotonic() - self._last_save_time >= 60 * minutes

    def due(self, step: int, *, epoch_end: bool, minutes_up: bool) -> str | None:
        """Why a checkpoint is due after update `step`, or None. `minutes_up`: the
        every_minutes clock ran out on rank 0 (the guard's reduction told every rank).
        The end of the run has its own (final) checkpoint."""
        if self.cfg.every_steps and step % self.cfg.every_steps == 0:
            return "every_steps"
        if minutes_up:
            return "every_minutes"
        every = self.cfg.every_epochs
        if epoch_end and every and self.state.epoch % every == 0 and step < self.total_steps:
            return "every_epochs"
        return None

    def save(
        self, *, pending_loss: float, pending_steps: int, background: bool = False
    ) -> tuple[Path, float | None]:
        """Save the state unless it was saved at this step already; (path, stall seconds).
        `background` (or `checkpoint.async_save`): copy, then write and commit in a thread."""
        state = self.state
        if self.last_step == state.step:
            return self.last_path, None
        # the partial log window survives a resume
        state.pending_loss, state.pending_steps = pending_loss, pending_steps
        self.ledger.flush()  # the ledger covers at least what the checkpoint holds
        arguments = {
            "step": state.step,
            "tensors": state.tensors(),
            "side_state": {**state.side_state(), "config_sha256": self.config_hash},
            "strategy": self.strategy,
        }
        started = time.perf_counter()
        if self.cfg.async_save or background:
            result = self.store.save_async(**arguments)
            path, stall = result.path, result.stall_s
        else:
            path = self.store.save(**arguments)
            stall = time.perf_counter() - started
        self.last_step, self.last_path = state.step, path
        self._last_save_time = time.monotonic()
        return path, stall

    def mark_best(self, *, metric: str) -> None:
        if self.strategy.is_main:
            self.store.mark_best(self.state.step, metric=metric, value=self.state.best_value)

    def keep_best(self, *, pending_loss: float, pending_steps: int, metric: str) -> None:
        """Remember the state at a new best in CPU memory (see train/best.py)."""
        state = self.state
        state.pending_loss, state.pending_steps = pending_loss, pending_steps
        side_state = {**state.side_state(), "config_sha256": self.config_hash}
        self.best.keep(state, metric=metric, side_state=side_state)

    def take_best(self) -> Snapshot | None:
        return self.best.take() if self.best is not None else None

    def save_snapshot(self, snapshot: Snapshot, *, background: bool = False) -> tuple[Path, float]:
        """Write a best snapshot as the checkpoint of its step, marked best; (path, seconds
        the caller waited). `background`: written in a thread, the next save (the final
        one) committing after it, both while the final evaluation runs (`finish` waits)."""
        started = time.perf_counter()
        # named before it exists: the prune after this save keeps what best.json names
        self.store.mark_best(snapshot.step, metric=snapshot.metric, value=snapshot.value)
        self.written_best = (snapshot.step, snapshot.tensors["model"])
        if self.last_step == snapshot.step:  # saved at that step already
            return self.last_path, 0.0
        self.ledger.flush()
        arguments = {
            "step": snapshot.step,
            "tensors": snapshot.tensors,
            "side_state": snapshot.side_state,
            "strategy": self.strategy,
        }
        if background:
            return self.store.save_async(**arguments, owned=True).path, 0.0
        path = self.store.save(**arguments)  # an async save in flight commits first
        return path, time.perf_counter() - started

    def finish(self) -> None:
        """Wait for a background save; raise CheckpointError (on every rank) if it failed."""
        self.store.wait(self.strategy)

    def drain(self) -> None:
        """On the way out after an error: let a background save end, without collectives."""
        self.store.drain()

    def resume(self) -> Path:
        """Load the newest valid checkpoint; forget metric and ledger lines logged after it."""
        self.store.check_folder()  # a bad best.json or a linked folder: refused before training
        path = self._load()
        if self.strategy.is_main and self._saved_config_hash not in (None, self.config_hash):
            warnings.warn(
                f"{path} was saved under another config: {self.run.config.name} changed "
                "since (data, model, optim, loss, train or run.seed); resuming with it as is",
                CheckpointWarning,
                stacklevel=2,
            )
        if self.state.step >= self.total_steps:  # before any file of the run is touched
            # every process meets the barrier first: an async_ps server or spare, which
            # loads no checkpoint, waits there for the workers and would wait forever
            self.strategy.barrier()
            raise RunFinished(self.state.step, self.state.epoch)
        # a resumed process killed before its next save left its count only in metrics.jsonl
        logged = _count_events(self.run.metrics, "resume") if self.strategy.is_main else 0
        self.state.counters["restarts"] = max(self.state.counters["restarts"], logged) + 1
        if self.strategy.is_main:  # the metrics logger is not open yet: rewrite the file
            truncate_metrics(self.run.metrics, after_step=self.state.step)
            self.ledger.truncate(after_step=self.state.step)
            event = {"event": "resume", "step": self.state.step, "detail": path.name}
            append_record(self.run.metrics, event)
        self.strategy.barrier()
        return path

    def rollback(self, *, lr_backoff: float) -> Path:
        """Reload the last good checkpoint; keep the counters and the list of batches to
        skip; lower the learning rate (kept in the state, so a resume keeps it too)."""
        state = self.state
        counters, skip_spans = dict(state.counters), [*state.skip_spans]
        skip_spans += [span for span in self.guard.bad_spans if span not in skip_spans]
        backoff = state.schedule.backoff * lr_backoff
        snapshot = self.take_best()  # on disk first, as a best saved at once would be
        if snapshot is not None:
            self.save_snapshot(snapshot)
        path = self._load()
        state.counters = {**counters, "rollbacks": counters["rollbacks"] + 1}
        state.skip_spans = skip_spans
        state.schedule.set_backoff(backoff)
        self.guard.rolled_back()
        self.last_step = None  # the state at the restored step differs now (lr, skips)
        if self.strategy.is_main:  # metrics.jsonl keeps the undone steps: they happened
            self.ledger.truncate(after_step=state.step)
        return path

    def _load(self) -> Path:
        self.finish()
        path = self.store.latest_valid()
        if path is None:
            raise CheckpointError(f"no valid checkpoint to load in {self.store.root}")
        if self.state.replicas is not None:  # which tensors it reads depends on the saver
            saved = self.store.side_state(path, rank=self.strategy.rank).get("replicas")
            saved = saved if isinstance(saved, dict) else None
            self.state.replicas.prepare_load(saved, source=str(path))
        tensors = self.state.tensors()
        side = self.store.load(path, tensors=tensors, rank=self.strategy.rank)
        self.state.load_tensors(tensors)
        try:
            self.state.load_side_state(side)
        except _MALFORMED as exc:  # the file passed its checksum: written so, or resealed
            name = f"rank_{self.strategy.rank:05d}.json"
            file = path / (name if (path / name).is_file() else "rank_00000.json")
            raise CheckpointError(f"{file}: side state is malformed ({_reason(exc)})") from None
        self._saved_config_hash = side.get("config_sha256")
        return path


# what restoring side state raises on values of the wrong type, shape or size
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError)


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"lacks {exc.args[0]!r}"[:80]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:120]


def _count_events(path: Path, event: str) -> int:
    """`event` records in a metrics.jsonl (a line cut short by a crash is not one)."""
    return sum(record.get("event") == event for record in read_jsonl(path))


def config_hash(cfg: Config) -> str:
    """SHA-256 of what decides the training math; `parallel` (world size, strategy), `log`,
    `checkpoint`, the run's name and folder, validation cadence, early stopping and (unless
    the schedule spreads over the total steps) the run's length may change between save and
    resume (train/extend.py)."""
    kept = {k: v for k, v in cfg.to_dict().items() if k not in ("parallel", "log", "checkpoint")}
    kept["run"] = {"seed": cfg.run.seed}
    dropped = {"eval_every_steps", "early_stopping"}
    if schedule_needs_total(cfg.optim.schedule) is None:
        dropped |= {"max_epochs", "max_steps"}
    kept["train"] = {k: v for k, v in kept["train"].items() if k not in dropped}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()
