"""The `distill` section: defaults, bounds, and each combination refused in one line naming
its key, at config time (before any data is read or file written)."""

import pytest

from scaletrain.config import load_config
from scaletrain.errors import ConfigError


def _config(**distill) -> dict:
    return {"distill": {"teacher": "runs/teacher", **distill}}


def test_absent_section_is_no_distillation_and_defaults_are_the_issues():
    assert load_config({}).distill is None
    distill = load_config(_config()).distill
    assert (distill.temperature, distill.alpha, distill.precompute) == (2.0, 0.5, False)
    assert distill.logits_dir is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["distill.temperature=0"], r"^distill\.temperature: .*greater than 0"),
        (["distill.alpha=1.5"], r"^distill\.alpha: .*less than or equal to 1"),
        (["distill.alpha=-0.1"], r"^distill\.alpha: .*greater than or equal to 0"),
        (["distill.teeacher=x"], r"did you mean `distill\.teacher`"),
        (["parallel.strategy=pp"], r"^distill\.teacher: not with parallel\.strategy=pp"),
        (["parallel.strategy=async_ps"], r"^distill\.teacher: not with .*=async_ps"),
        (["parallel.strategy=local_sgd"], r"^distill\.teacher: not with .*=local_sgd"),
        (["parallel.strategy=diloco"], r"^distill\.teacher: not with .*=diloco"),
        (
            ["parallel.strategy=fsdp", "parallel.dims.tp=2", "model.name=gpt"],
            r"^distill\.teacher: not with parallel\.dims\.tp=2",
        ),
        (["data.task=regression"], r"^distill\.teacher: .*regression"),
        (
            ["distill.precompute=true", "data.augment.noise_std=0.1"],
            r"^distill\.precompute: .*data\.augment\.noise_std",
        ),
        (["distill.logits_dir=somewhere"], r"^distill\.logits_dir: only used with"),
        (["distill.logits_dtype=float16"], r"^distill\.logits_dtype: only used with"),
    ],
)
def test_refused_in_one_line_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message) as refused:
        load_config(_config(), overrides)
    assert "\n" not in str(refused.value)


def test_teacher_is_required_in_the_section():
    with pytest.raises(ConfigError, match=r"^distill\.teacher: ") as refused:
        load_config({"distill": {"alpha": 0.5}})
    assert "\n" not in str(refused.value)


def test_precompute_with_its_folder_and_live_teacher_with_augmentation_are_fine():
    cfg = load_config(_config(precompute=True, logits_dir="cache"))
    assert cfg.distill.logits_dir == "cache"
    cfg = load_config(_config(), ["data.augment.noise_std=0.1", "parallel.strategy=fsdp"])
    assert cfg.distill.precompute is False
