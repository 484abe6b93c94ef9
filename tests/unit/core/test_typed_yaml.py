"""YAML read against the schema: a value is typed by its field, aliases are bounded."""

import pytest
import yaml

from scaletrain import typed_yaml
from scaletrain.config import Config, load_config
from scaletrain.errors import ConfigError


@pytest.fixture(params=["libyaml", "python"], autouse=True)
def loader(request, monkeypatch):
    """Both parsers: libyaml's where PyYAML was built with it, else the pure-Python one
    (they differ in details: a plain scalar's style is '' for one and None for the other)."""
    if request.param == "libyaml" and not hasattr(yaml, "CSafeLoader"):
        pytest.skip("PyYAML without libyaml")
    chosen = yaml.CSafeLoader if request.param == "libyaml" else yaml.SafeLoader
    monkeypatch.setattr(typed_yaml, "_Loader", chosen)


@pytest.mark.parametrize(
    ("override", "read"),
    [
        ("train.guard.nonfinite=off", lambda cfg: cfg.train.guard.nonfinite == "off"),
        ("train.precision=32", lambda cfg: cfg.train.precision == "32"),
        ("run.name=yes", lambda cfg: cfg.run.name == "yes"),
        ("run.name=32", lambda cfg: cfg.run.name == "32"),
        ("run.name=2024-01-01", lambda cfg: cfg.run.name == "2024-01-01"),
        ("run.name='007'", lambda cfg: cfg.run.name == "007"),  # quoting still works
        ("data.classes=[no, yes, 3]", lambda cfg: cfg.data.classes == ["no", "yes", "3"]),
        ("model.channels=[8, 16]", lambda cfg: cfg.model.channels == [8, 16]),
        ("optim.lr=1e-3", lambda cfg: cfg.optim.lr == 1e-3),
        ("optim.lr=2", lambda cfg: cfg.optim.lr == 2.0),
        ("optim.betas=[0.8, 0.9]", lambda cfg: cfg.optim.betas == (0.8, 0.9)),
        ("train.micro_batch_size=auto", lambda cfg: cfg.train.micro_batch_size == "auto"),
        ("train.micro_batch_size=16", lambda cfg: cfg.train.micro_batch_size == 16),
        ("train.channels_last=off", lambda cfg: cfg.train.channels_last is False),
        ("train.channels_last=auto", lambda cfg: cfg.train.channels_last == "auto"),
        ("train.guard.spike.threshold=null", lambda cfg: cfg.train.guard.spike.threshold is None),
        ("log.progress=off", lambda cfg: cfg.log.progress is False),
        ("loss.class_weights=[1, 2.5]", lambda cfg: cfg.loss.class_weights == [1.0, 2.5]),
        ("optim.schedule={name: cosine}", lambda cfg: cfg.optim.schedule.name == "cosine"),
        ("train.guard={nonfinite: off}", lambda cfg: cfg.train.guard.nonfinite == "off"),
    ],
)
def test_an_override_is_read_as_its_fields_type(override, read):
    assert read(load_config({}, [override]))


def test_the_model_named_earlier_types_its_keys():
    cfg = load_config({}, ["model.name=textcnn", "model.kernel_sizes=[2, 3]"])
    assert cfg.model.kernel_sizes == [2, 3]
    cfg = load_config({"data": {"source": "csv"}}, ["data.path=null"])
    assert cfg.data.path is None


def test_a_file_is_read_against_the_schema_too(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "run:\n  name: yes\n"
        "train:\n  precision: 32\n  guard:\n    nonfinite: off\n"
        "model:\n  name: mlp\n  hidden: [8]\n"
        "data:\n  source: csv\n  classes: [no, yes]\n"
        "unknown_later: {x: off}\n"
    )
    with pytest.raises(ConfigError, match="unknown key `unknown_later`"):
        load_config(path)
    path.write_text(path.read_text().replace("unknown_later: {x: off}\n", ""))
    cfg = load_config(path)
    assert (cfg.run.name, cfg.train.precision, cfg.train.guard.nonfinite) == ("yes", "32", "off")
    assert cfg.data.classes == ["no", "yes"] and cfg.model.hidden == [8]


def test_aliases_and_merge_keys_within_the_bound(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "base: &base {lr: 0.5, name: sgd}\n"
        "optim:\n  <<: *base\n  momentum: 0.9\n"
        "model: {channels: &widths [8, 16], head: *widths}\n"
    )
    raw = typed_yaml.load_value(path.read_text(), Config, where=str(path), file=True)
    assert raw["optim"] == {"lr": 0.5, "name": "sgd", "momentum": 0.9}
    assert raw["model"]["head"] == [8, 16]


def _bomb(levels: int, width: int = 9) -> str:
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_expands():
    text = _bomb(7)  # 1 KB, 9^7 = 4.8 million values once expanded
    assert len(text) < 1100
    with pytest.raises(ConfigError, match="more than 100000 values through aliases"):
        typed_yaml.load_value(text, Config, where="bomb.yaml", file=True)
    raw = typed_yaml.load_value(_bomb(5), None, where="ok.yaml")  # 59049: under the bound
    assert len(raw["l4"]) == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [*a]\n", "c.yaml:1: a YAML alias refers to itself"),
        ("? [a, b]\n: 1\n", "c.yaml:1: not valid YAML (a key must be a name, not a list)"),
        ("run:\n\tname: x\n", "c.yaml:2: not valid YAML"),
        ("optim:\n  lr: !!python/object/apply:os.system ['true']\n", "c.yaml:2: not valid YAML"),
        ("[" * 1200 + "]" * 1200, "c.yaml"),  # nesting: libyaml stops at 1000, Python recurses
    ],
)
def test_broken_yaml_is_one_line_naming_the_file(text, message):
    with pytest.raises(ConfigError) as info:
        typed_yaml.load_value(text, Config, where="c.yaml", file=True)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_error_quotes_at_most_200_characters_of_the_value(tmp_path):
    path = tmp_path / "c.yaml"
    nine = ", ".join
    bomb = f"[&a [{nine('x' * 9)}], &b [{nine(['*a'] * 9)}], &c [{nine(['*b'] * 9)}], *c]"
    path.write_text(f"run:\n  name: {bomb}\n")  # 1,000 values: 6,000 characters as repr
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith("run.name: input should be a valid string, got [[")
    assert message.endswith("characters)") and len(message) < 300, message
