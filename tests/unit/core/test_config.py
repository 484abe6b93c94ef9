import pytest
from pydantic import ValidationError

from scaletrain.config import Config, load_config
from scaletrain.errors import ConfigError


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optim.lrr=1"], "unknown key `optim.lrr`; did you mean `optim.lr`?"),
        (["optim.lr=-1"], "optim.lr: input should be greater than 0, got -1"),
        (["model.name=mlp", "model.hiden=3"], "did you mean `model.hidden`?"),
        (["model.name=foo"], "model.name: unknown model 'foo'"),
        (["train.precision=16-mixed", "train.device=cpu"], "train.precision"),
        (["optim.schedule.warmup_step=3"], "did you mean `optim.schedule.warmup_steps`?"),
        (["train.batch_size=abc"], "train.batch_size: input should be a valid integer"),
        (["data.val_fraction=0.5", "data.test_fraction=0.6"], "data.val_fraction"),
        (["trian.max_epochs=3"], "unknown key `trian`; did you mean `train`?"),
        (["optim.lr"], "expected KEY=VALUE"),
    ],
)
def test_bad_config_names_the_key(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config({}, overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_defaults_and_overrides_round_trip(tmp_path):
    cfg = load_config({}, ["optim.lr=3e-4", "train.max_epochs=5", "model.name=mlp"])
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.train.max_epochs == 5
    assert cfg.model.name == "mlp" and cfg.model.hidden == [128, 128]
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(ValidationError):
        cfg.optim.lr = 1.0  # type: ignore[misc]


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml:"):
        load_config(bad)


def test_shipped_configs_are_valid():
    from pathlib import Path

    configs = sorted(Path(__file__).parents[3].joinpath("configs").glob("*.yaml"))
    assert configs, "no configs shipped"
    for path in configs:
        load_config(path)


def test_documented_words_need_no_quotes(tmp_path):
    """YAML reads `off` as False and `32` as an int; their keys take them as written."""
    cfg = load_config({}, ["train.guard.nonfinite=off", "train.precision=32", "run.name=yes"])
    assert (cfg.train.guard.nonfinite, cfg.train.precision, cfg.run.name) == ("off", "32", "yes")
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  precision: 32\n  guard:\n    nonfinite: off\n")
    assert load_config(path).train.guard.nonfinite == "off"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.batch_size=1000000000000"], "less than or equal to 16777216"),
        (["run.seed=4294967296"], "run.seed: input should be less than or equal to 4294967295"),
        (["train.max_steps=2147483648"], "less than or equal to 2147483647"),
        (["train.batch_size=true"], "train.batch_size: expected a number, not a boolean"),
        (["optim.lr=.inf"], "optim.lr: input should be a finite number, got inf"),
        (["train.micro_batch_size=65"], "larger than train.batch_size (64)"),
        (["data.path=x.csv"], "data.path: data.source=builtin does not read it (got 'x.csv')"),
    ],
)
def test_bounds_booleans_infinities_and_ignored_keys(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config({}, overrides)
    assert expected in str(info.value)


def test_keys_of_the_source_shards_were_prepared_from_stay():
    """One config prepares shards from a source, then trains on them with source=shards."""
    data = {"source": "builtin", "name": "wine", "shards": {"verify": "size"}}
    assert load_config({"data": data}).data.shards.verify == "size"
    cfg = load_config({"data": data}, ["data.source=shards", "data.path=sh"])
    assert cfg.data.name == "wine"


def test_an_empty_file_is_refused_and_an_empty_mapping_is_the_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# only a comment\n")
    with pytest.raises(ConfigError, match="the config is empty"):
        load_config(path)
    path.write_text("{}\n")
    assert load_config(path) == Config()
