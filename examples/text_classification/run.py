"""Text classification from a CSV of (text, label): count vectorizer with English stop words
and 1-2-grams, TextCNN, test evaluation, exported model, classification report and confusion
matrix (the run's report.html draws it as a heatmap).

    PYTHONPATH=src python examples/text_classification/run.py [--out runs/examples]
        [--rows N] [--set KEY=VALUE ...]

Run from the repository root (textcnn.yaml names the CSV relative to it). The training is the
command a user would type: `python -m scaletrain train examples/text_classification/textcnn.yaml`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from make_reviews import write_reviews
from sklearn.metrics import classification_report, confusion_matrix

HERE = Path(__file__).resolve().parent


def scaletrain(*args: str) -> None:
    print("$", " ".join(["scaletrain", *args]), flush=True)
    subprocess.run([sys.executable, "-m", "scaletrain", *args], check=True)


def vocabulary_facts(run_dir: Path) -> dict:
    """What the count vectorizer kept: size, how many bigrams, a few of each."""
    encoder = json.loads((run_dir / "preprocess.json").read_text())["encoder"]
    vocabulary = encoder["vocabulary"]
    bigrams = [gram for gram in vocabulary if " " in gram]
    return {
        "size": len(vocabulary),
        "bigrams": len(bigrams),
        "sample_words": [gram for gram in vocabulary if " " not in gram][:8],
        "sample_bigrams": bigrams[:5],
    }


def print_test_report(run_dir: Path) -> None:
    """scikit-learn's classification report and confusion matrix of the test split."""
    names = json.loads((run_dir / "data_spec.json").read_text())["class_names"]
    with np.load(run_dir / "predictions" / "test.npz") as predictions:
        target, pred = predictions["target"], predictions["pred"]
    labels = list(range(len(names)))
    print(classification_report(target, pred, labels=labels, target_names=names, digits=3))
    print("confusion matrix (rows: true, columns: predicted):", ", ".join(names))
    print(confusion_matrix(target, pred, labels=labels))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/examples", help="parent of the run directory")
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="train on a fresh CSV of N generated reviews instead of reviews.csv",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override, e.g. train.max_epochs=2",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    data = HERE / "reviews.csv"
    if args.rows:
        out.mkdir(parents=True, exist_ok=True)
        data = write_reviews(out / "reviews.csv", num_rows=args.rows)
    config = HERE / "textcnn.yaml"
    scaletrain("train", str(config), "--out", str(out), "--overwrite", f"data.path={data}",
               *args.set)  # fmt: skip
    run_dir = out / "textcnn-reviews"
    scaletrain("export", str(run_dir))  # -> model.safetensors (weights only, no pickle)
    print("vocabulary:", json.dumps(vocabulary_facts(run_dir)))
    print_test_report(run_dir)
    print(f"saved model: {run_dir / 'model.safetensors'}")
    print(f"report with the confusion-matrix heatmap: {run_dir / 'report.html'}")
    return run_dir


if __name__ == "__main__":
    main()
