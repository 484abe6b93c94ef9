"""ONNX export of each built-in model family at its default size: max abs difference to
PyTorch (fp32, up to 256 test samples) and median latency per batch of 1 and 64, PyTorch vs
onnxruntime (CPUExecutionProvider), with the file sizes. Weights after a few steps: the
figures measure the export, not the model's quality.

    .venv/bin/python -m bench.export_onnx [--out /tmp/export-bench]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import scaletrain
from bench.results import save_results

DIGITS = {"source": "builtin", "name": "digits"}
TEXT = {
    "source": "builtin",
    "name": "stdlib_text",
    "text": {"vectorizer": "byte", "max_length": 128},
}
CORPUS = {**TEXT, "task": "language_model", "context_length": 128, "text": {"vectorizer": "byte"}}
FAMILIES = {
    "mlp": ({"name": "mlp"}, DIGITS),
    "cnn": ({"name": "cnn"}, DIGITS),
    "resnet": ({"name": "resnet", "width": 16}, DIGITS),
    "textcnn": ({"name": "textcnn"}, TEXT),
    "rnn (lstm, pool max)": ({"name": "rnn", "pool": "max", "bidirectional": True}, TEXT),
    "rnn (gru, pool mean)": ({"name": "rnn", "cell": "gru", "pool": "mean"}, TEXT),
    "rnn (lstm, pool last: default)": ({"name": "rnn"}, TEXT),
    "gpt (language model)": ({"name": "gpt"}, CORPUS),
}


def measure(name: str, out: Path) -> dict:
    model, data = FAMILIES[name]
    cfg = {
        "run": {
            "name": "".join(c if c.isalnum() else "-" for c in name),
            "seed": 0,
            "out_dir": str(out),
        },
        "data": data,
        "model": model,
        "train": {"max_steps": 3, "batch_size": 32, "precision": "32"},
        "log": {"progress": False, "tensorboard": False, "report": False},
    }
    run = scaletrain.train(cfg).wait()
    onnx_path = scaletrain.export(run.run_dir, format="onnx")
    weights = scaletrain.export(run.run_dir)
    figures = json.loads(onnx_path.with_name("export.json").read_text())
    latency = figures["latency_ms"]
    return {
        "family": name,
        "exporter": figures["exporter"],
        "max_abs_diff": figures["max_abs_diff"],
        "torch_ms_b1": latency["torch"]["1"],
        "ort_ms_b1": latency["onnxruntime"]["1"],
        "torch_ms_b64": latency["torch"]["64"],
        "ort_ms_b64": latency["onnxruntime"]["64"],
        "onnx_mb": figures["file_bytes"] / 1e6,
        "safetensors_mb": weights.stat().st_size / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="Where the runs go (default: a temporary folder).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        out = Path(args.out or temporary)
        rows = [measure(name, out) for name in FAMILIES]
    print(
        "| family | exporter | max abs diff | batch 1: torch / ort (ms) | "
        "batch 64: torch / ort (ms) | .onnx MB | .safetensors MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['family']} | {row['exporter']} | {row['max_abs_diff']:.1e} | "
            f"{row['torch_ms_b1']:.3f} / {row['ort_ms_b1']:.3f} | "
            f"{row['torch_ms_b64']:.2f} / {row['ort_ms_b64']:.2f} | "
            f"{row['onnx_mb']:.2f} | {row['safetensors_mb']:.2f} |"
        )
    save_results("export_onnx", rows)


if __name__ == "__main__":
    main()
