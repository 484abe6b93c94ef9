"""Worker: train one config under DDP and FSDP and keep this rank's buffers after every step.

Usage: train_buffers.py OUT_DIR CONFIG_JSON
Writes OUT_DIR/<strategy>.rank<R>.safetensors: `<step>/<buffer name>` for each step.
"""

import json
import os
import sys

from safetensors.torch import save_file

from scaletrain import api


class KeepBuffers:
    """Callback: a copy of the model's buffers (BatchNorm statistics) after each step."""

    def __init__(self):
        self.kept = {}

    def on_step_end(self, state) -> None:
        for name, buffer in state.model.named_buffers():
            name = name.removeprefix("module.")  # DistributedDataParallel's wrapper
            self.kept[f"{state.step}/{name}"] = buffer.detach().clone().contiguous()


def main() -> None:
    out_dir, config = sys.argv[1], json.loads(sys.argv[2])
    for strategy in ("ddp", "fsdp"):
        config["run"] = {**config.get("run", {}), "name": strategy, "out_dir": out_dir}
        keeper = KeepBuffers()
        api.train(config, overrides=[f"parallel.strategy={strategy}"], callbacks=[keeper])
        name = f"{strategy}.rank{os.environ['RANK']}.safetensors"
        save_file(keeper.kept, os.path.join(out_dir, name))


if __name__ == "__main__":
    main()
