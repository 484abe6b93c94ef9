"""Worker: train one config under several parallel settings in one torchrun job.

Usage: train_variants.py OUT_DIR CONFIG_JSON NAME=OVERRIDE[,OVERRIDE...] ...
Each variant is a full `scaletrain.api.train` (own process group setup and teardown).
"""

import json
import sys

from scaletrain import api


def main() -> None:
    out_dir, config = sys.argv[1], json.loads(sys.argv[2])
    for spec in sys.argv[3:]:
        name, _, overrides = spec.partition("=")
        config["run"] = {**config.get("run", {}), "name": name, "out_dir": out_dir}
        api.train(config, overrides=[o for o in overrides.split(",") if o], overwrite=True)


if __name__ == "__main__":
    main()
