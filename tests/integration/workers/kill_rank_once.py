"""Worker: `python -m scaletrain ...` under torchrun, but one rank SIGKILLs itself once.

Test-only fault injection, read from the environment here and nowhere in scaletrain:
  KILL_RANK=R  KILL_AT_STEP=N  KILL_MARKER=PATH
Rank R dies right after optimizer update N (the absolute step), unless PATH exists; it
writes N to PATH first, so the group the elastic agent restarts runs to the end.
"""

import os
import signal
import sys
from pathlib import Path

from torch.optim.optimizer import register_optimizer_step_post_hook

from scaletrain.cli import main


def _kill_once(step: int, marker: Path) -> None:
    def after_step(optimizer, args, kwargs) -> None:
        states = [s for s in optimizer.state.values() if "step" in s]
        if states and int(states[0]["step"]) == step and not marker.exists():
            marker.write_text(str(step))
            os.kill(os.getpid(), signal.SIGKILL)  # no handler, no cleanup, no flush

    register_optimizer_step_post_hook(after_step)


if __name__ == "__main__":
    if os.environ["RANK"] == os.environ["KILL_RANK"]:
        _kill_once(int(os.environ["KILL_AT_STEP"]), Path(os.environ["KILL_MARKER"]))
    sys.exit(main(sys.argv[1:]))
