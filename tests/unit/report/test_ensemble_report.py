"""The ensemble page from an ensemble directory's files alone (report/ reads run files only)."""

import json
import re

from scaletrain.report import write_report


def split(accuracy: float) -> dict:
    return {"accuracy": accuracy, "loss": 1 - accuracy}


def _ensemble_dir(tmp_path, *, finished: bool = True, record: dict | None = None):
    root = tmp_path / "ens"
    members = [{"name": f"m{i}", "dir": f"members/m{i}"} for i in range(2)]
    (root / "members" / "m0").mkdir(parents=True)
    (root / "members" / "m1").mkdir(parents=True)
    (root / "config.yaml").write_text("ensemble: {members: 2}\n")
    record = {"members": members, "weights": None, **(record or {})}
    (root / "ensemble.json").write_text(json.dumps(record))
    for index, accuracy in enumerate((0.8, 0.7)):
        records = [
            {"split": "val", "epoch": epoch, "step": 10 * epoch, "loss": 1.0 / epoch,
             "metrics": {"accuracy": accuracy * epoch / 2}}
            for epoch in (1, 2)
        ]  # fmt: skip
        text = "".join(json.dumps(r) + "\n" for r in records)
        (root / "members" / f"m{index}" / "metrics.jsonl").write_text(text)
    summary = {
        "status": "finished" if finished else "interrupted",
        "name": "ens",
        "method": "bagging",
        "combine": "mean",
        "num_members": 2,
        "nproc": 2,
        "train_wall_s": 3.5,
        "ensemble": {"val": split(0.9), "test": split(0.85)} if finished else {},
        "members": [
            {"val": split(0.8), "test": split(0.8)},
            {"val": split(0.7), "test": split(0.75)},
        ]
        if finished
        else [],
        "mean_member": {"val": split(0.75), "test": split(0.775)} if finished else {},
        "diversity": {"test": {"disagreement": 0.25, "agreement_matrix": [[1, 0.75], [0.75, 1]]}}
        if finished
        else {},
    }
    (root / "summary.json").write_text(json.dumps(summary))
    return root


def test_page_shows_members_against_the_ensemble_and_their_agreement(tmp_path):
    page = write_report(_ensemble_dir(tmp_path)).read_text()
    sections = re.findall(r'<section id="([a-z]+)">', page)
    assert sections == ["members", "curves", "agreement"]
    assert "mean member" in page and "0.8500" in page  # the ensemble's test accuracy
    assert "members disagree on 25.0% of samples" in page
    assert page.count("<svg") == 2


def test_unfinished_ensemble_page_says_so(tmp_path):
    page = write_report(_ensemble_dir(tmp_path, finished=False)).read_text()
    assert "The ensemble did not finish." in page


def test_page_shows_each_members_weight_and_the_combiner(tmp_path):
    combiner = {"kind": "linear", "file": "combiner.safetensors", "num_rows": 251}
    record = {"weights": [1.7346, 0.4125], "combiner": {**combiner, "train_loss": 0.3141}}
    page = write_report(_ensemble_dir(tmp_path, record=record)).read_text()
    headers = re.findall(r'<th scope="col"[^>]*>(\w+)</th>', page)
    assert headers[:3] == ["model", "weight", "accuracy"]
    assert "1.7346" in page and "0.4125" in page  # boosting's alphas, one per member row
    for fact in ("combiner", "linear", "251", "0.3141"):
        assert fact in page, fact


def test_page_without_weights_has_no_weight_column(tmp_path):
    page = write_report(_ensemble_dir(tmp_path)).read_text()
    assert "weight</th>" not in page
