"""Config fuzz: every refused config or override is exit 2 and one line naming the key (or
the file), with no traceback and no run directory left behind. In-process through the same
`main` the console script runs, so each case costs milliseconds, not an interpreter start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from scaletrain.cli import main

ROOT = Path(__file__).parents[3]
DEFAULT = ROOT / "configs" / "default.yaml"
# A case that wrongly trains stops after one step, quietly.
QUIET = ("train.device=cpu", "train.max_steps=1", "log.progress=false", "log.report=false")


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...] = ()
    culprit: str = ""  # "{config}": the config file's path
    config: bytes | None = None  # written as the config file; None: configs/default.yaml


def override(name: str, *args: str, culprit: str | None = None) -> Case:
    """Overrides on the default config; the culprit is the last override's key by default."""
    return Case(name, args, culprit or args[-1].partition("=")[0])


def config_file(name: str, text: bytes | str, culprit: str = "{config}") -> Case:
    return Case(name, (), culprit, text if isinstance(text, bytes) else text.encode())


def _bomb(levels: int, width: int = 9) -> str:
    """A YAML value of `width ** levels` items written in about 30 * levels characters."""
    items = ", ".join(["x"] * width)
    parts = [f"&a0 [{items}]"]
    for level in range(1, levels):
        parts.append(f"&a{level} [{', '.join([f'*a{level - 1}'] * width)}]")
    return f"[{', '.join(parts)}]"


FILE_BOMB = "\n".join(
    [f"a0: &a0 [{', '.join(['x'] * 9)}]"]
    + [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 7)]
)

CASES = [
    # --- the file itself
    config_file("binary", b"\x00\x01\x02\xff\xfe\x00"),
    config_file("latin-1", b"run:\n  name: caf\xe9\n"),
    config_file("nul-byte", b"run:\n  name: a\x00b\n"),
    config_file("empty", b""),
    config_file("only-comments", "# nothing here\n"),
    config_file("a-list", "- 1\n- 2\n"),
    config_file("a-scalar", "hello\n"),
    config_file("unclosed-bracket", "train: [unclosed\n"),
    config_file("tab-indent", "run:\n\tname: x\n"),
    config_file("alias-bomb", FILE_BOMB + "\n"),
    config_file("recursive-alias", "run: &r\n  name: *r\n"),
    config_file("python-tag", "optim:\n  lr: !!python/object/apply:os.system ['true']\n"),
    config_file("deep-nesting", "optim:\n  lr: " + "[" * 2000 + "]" * 2000 + "\n"),
    config_file("list-as-key", "? [a, b]\n: 1\n"),
    config_file("unknown-section", "trian:\n  max_epochs: 3\n", "trian"),
    config_file("file-bool-batch", "train:\n  batch_size: yes\n", "train.batch_size"),
    config_file("file-inf-lr", "optim:\n  lr: .inf\n", "optim.lr"),
    config_file("file-empty-channels", "model:\n  channels: []\n", "model.channels"),
    config_file("file-capped-echo", f"run:\n  name: {_bomb(3)}\n", "run.name"),
    # --- overrides that are not YAML, or not KEY=VALUE
    override("unclosed-list", "optim.lr=[1,"),
    override("bell-in-name", "run.name=a\x07b"),
    override("mapping-in-name", "run.name=a: b: c"),
    override("newline-in-name", "run.name=a\nb"),
    override("no-equals", "optim.lr"),
    override("no-key", "=3", culprit="=3"),
    override("empty-part", "optim..lr=1", culprit="optim..lr"),
    override("below-a-leaf", "optim.lr.x=1", culprit="optim.lr"),
    override("override-alias-bomb", f"optim.betas={_bomb(6)}"),
    override("override-python-tag", "optim.lr=!!python/object/apply:os.system ['true']"),
    override("name-escapes", "run.name=../escape"),
    override("name-hidden", "run.name=.hidden"),
    override("name-separator", "run.name=a/b"),
    override("name-empty", "run.name="),
    override("name-too-long", "run.name=" + "x" * 200),
    # --- integers: booleans, bounds, overflow
    override("batch-huge", "train.batch_size=99999999999999999999999999999"),
    override("batch-1e12", "train.batch_size=1000000000000"),
    override("batch-true", "train.batch_size=true"),
    override("batch-false", "train.batch_size=false"),
    override("batch-zero", "train.batch_size=0"),
    override("batch-negative", "train.batch_size=-1"),
    override("batch-fraction", "train.batch_size=1.5"),
    override("batch-word", "train.batch_size=abc"),
    override("seed-2^64", "run.seed=18446744073709551616"),
    override("seed-negative", "run.seed=-1"),
    override("seed-true", "run.seed=true"),
    override("max-steps-2^31", "train.max_steps=2147483648"),
    override("micro-above-batch", "train.micro_batch_size=128"),
    override("micro-true", "train.micro_batch_size=true"),
    override("context-length-huge", "data.context_length=99999999999999999999"),
    override("log-every-off", "log.every_steps=off"),
    override("keep-last-1e3", "checkpoint.keep_last=1e3"),
    override("batch-5000-digits", "train.batch_size=" + "9" * 5000),
    config_file("file-seed-bad-date", "run:\n  seed: 2024-13-45\n"),
    # --- floats: infinities, NaN, booleans
    override("lr-inf", "optim.lr=.inf"),
    override("lr-1e400", "optim.lr=1e400"),
    override("lr-nan", "optim.lr=.nan"),
    override("lr-minus-inf", "optim.lr=-.inf"),
    override("lr-true", "optim.lr=true"),
    override("lr-400-digits", "optim.lr=" + "1" * 400),
    override("lr-bad-date", "optim.lr=2024-13-45"),
    override("betas-inf", "optim.betas=[0.9, .inf]", culprit="optim.betas"),
    override("impute-nan", "data.source=csv", "data.table.impute_value=.nan"),
    override("clip-1e999", "optim.clip.max=1e999"),
    override("weight-decay-minus-inf", "optim.weight_decay=-.inf"),
    # --- lists that need an item, or are not lists
    override("channels-empty", "model.channels=[]"),
    override("channels-zero", "model.channels=[0]", culprit="model.channels"),
    override("channels-bool", "model.channels=[true]", culprit="model.channels"),
    override("channels-scalar", "model.channels=16"),
    override("kernel-sizes-empty", "model.name=textcnn", "model.kernel_sizes=[]"),
    override("classes-empty", "data.classes=[]"),
    override("features-empty", "data.source=csv", "data.features=[]"),
    override("class-weights-empty", "loss.class_weights=[]"),
    # --- data keys the chosen source ignores
    override("path-with-builtin", "data.path=x.csv"),
    override("label-with-builtin", "data.label=target"),
    override("features-with-builtin", "data.features=[a]"),
    override("table-with-builtin", "data.table.impute=mean"),
    override("name-with-csv", "data.source=csv", "data.name=iris"),
    override("image-with-csv", "data.source=csv", "data.image.mode=L"),
    override("label-with-images", "data.source=image_folder", "data.label=y"),
    override("features-with-npy", "data.source=npy", "data.features=[a]"),
    override("text-with-csv", "data.source=csv", "data.text.lowercase=true"),
    # --- where the run directory would go
    override("out-dir-a-file", "run.out_dir={tmp}/a-file"),
    override("out-dir-under-dev-null", "run.out_dir=/dev/null/x"),
    override("out-dir-in-proc", "run.out_dir=/proc/self/scaletrain"),
    Case("out-flag-a-file", ("--out", "{tmp}/a-file"), "run.out_dir"),
    # --- sections and names
    override("section-a-number", "optim=3"),
    override("section-a-word", "model=cnn"),
    override("section-a-list", "train=[1]"),
    override("unknown-model", "model.name=resnet9000"),
    override("unknown-key", "optim.lrr=1"),
    override("typo-in-section", "trian.max_epochs=3", culprit="trian"),
    override("guard-yes", "train.guard.nonfinite=yes"),
    override("precision-64", "train.precision=64"),
    override("fp16-on-cpu", "train.precision=16-mixed"),
]


def test_at_least_sixty_cases_with_distinct_names():
    names = [case.name for case in CASES]
    assert len(names) >= 60 and len(set(names)) == len(names)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_refused_config_is_one_line_exit_2_and_leaves_nothing(case, tmp_path, capsys):
    runs = tmp_path / "runs"
    (tmp_path / "a-file").write_text("not a folder\n")
    config = DEFAULT
    if case.config is not None:
        config = tmp_path / "c.yaml"
        config.write_bytes(case.config)
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in case.args]
    culprit = case.culprit.replace("{config}", str(config))
    capsys.readouterr()
    code = main(["train", str(config), f"run.out_dir={runs}", *QUIET, *args])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert culprit in lines[0], lines[0]
    assert "Traceback" not in err + out and len(lines[0]) <= 1100, lines[0][:300]
    assert not runs.exists() or not any(runs.iterdir()), "a refused config left a run directory"
    assert (tmp_path / "a-file").read_text() == "not a folder\n"
    assert not Path("/dev/null/x").exists()
