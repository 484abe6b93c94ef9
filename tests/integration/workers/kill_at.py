"""Worker: `python -m scaletrain ...`, but the process SIGKILLs itself at a chosen moment.

Test-only fault injection, read from the environment here and nowhere in scaletrain:
  KILL_AT_STEP=N         die right after optimizer update N (counted from the restored
                         state, so it is the run's absolute step), before anything is logged
                         or saved for it.
  KILL_IN_SAVE_STEP=N    die while checkpoint step_N is being saved: its tensor files are
                         written, its manifest (the commit record) is not.
The kill is a real SIGKILL of this process: no handler, no cleanup, no flush.
"""

import os
import signal
import sys

from torch.optim.optimizer import register_optimizer_step_post_hook

import scaletrain.checkpoint.commit as commit
from scaletrain.cli import main


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_at_step(step: int) -> None:
    def after_step(optimizer, args, kwargs) -> None:
        states = [s for s in optimizer.state.values() if "step" in s]
        if states and int(states[0]["step"]) == step:  # adam(w): the absolute update count
            _die()

    register_optimizer_step_post_hook(after_step)


def _kill_in_save(step: int) -> None:
    write_manifest = commit.write_manifest

    def dying_write_manifest(directory, *, step: int) -> None:
        if step == target:
            _die()
        write_manifest(directory, step=step)

    target = step
    commit.write_manifest = dying_write_manifest


if __name__ == "__main__":
    if "KILL_AT_STEP" in os.environ:
        _kill_at_step(int(os.environ["KILL_AT_STEP"]))
    if "KILL_IN_SAVE_STEP" in os.environ:
        _kill_in_save(int(os.environ["KILL_IN_SAVE_STEP"]))
    sys.exit(main(sys.argv[1:]))
