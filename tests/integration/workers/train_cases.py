"""Worker: train several complete configs in sequence in one torchrun job.

Usage: train_cases.py CASES_JSON   ({name: config}; each config names its own run directory)
Each case is a full `scaletrain.api.train` (own process group setup and teardown). A case
that raises is recorded and the next one runs, so one failure names its case instead of
ending the job; every rank writes CASES_JSON's folder/outcomes.rank<R>.json:
{name: {"status": ...} | {"error": traceback}}.
"""

import json
import os
import sys
import traceback
from pathlib import Path

from scaletrain import api


def main() -> None:
    cases_file = Path(sys.argv[1])
    outcomes = {}
    for name, config in json.loads(cases_file.read_text()).items():
        try:
            outcomes[name] = {"status": api.train(config, overwrite=True).status}
        except Exception:  # a peer stuck in a collective gives up after parallel.timeout_s
            outcomes[name] = {"error": traceback.format_exc()}
    out = cases_file.parent / f"outcomes.rank{os.environ['RANK']}.json"
    out.write_text(json.dumps(outcomes, indent=1))


if __name__ == "__main__":
    main()
