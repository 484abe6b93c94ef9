"""Worker: train one config under several parallel settings in one torchrun job.

Usage: train_variants.py OUT_DIR CONFIG_JSON NAME=OVERRIDE[,OVERRIDE...] ...
Each variant is a full `scaletrain.api.train` (own process group setup and teardown).
Every rank also writes OUT_DIR/seeds.rank<R>.json: the torch seed each variant trained with.
"""

import json
import os
import sys

import torch

from scaletrain import api


class RecordSeed:
    """Callback: the seed of torch's default generator when training starts."""

    def __init__(self):
        self.seed = None

    def on_train_start(self, state) -> None:
        self.seed = torch.initial_seed()


def main() -> None:
    out_dir, config = sys.argv[1], json.loads(sys.argv[2])
    seeds = {}
    for spec in sys.argv[3:]:
        name, _, overrides = spec.partition("=")
        config["run"] = {**config.get("run", {}), "name": name, "out_dir": out_dir}
        recorder = RecordSeed()
        overrides = [o for o in overrides.split(",") if o]
        api.train(config, overrides=overrides, overwrite=True, callbacks=[recorder])
        seeds[name] = recorder.seed
    with open(os.path.join(out_dir, f"seeds.rank{os.environ['RANK']}.json"), "w") as handle:
        json.dump(seeds, handle)


if __name__ == "__main__":
    main()
