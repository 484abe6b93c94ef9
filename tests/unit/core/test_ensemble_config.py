"""The `ensemble` section: members derived from it, and one line naming each bad key."""

import pytest

from scaletrain.config import load_config, member_configs
from scaletrain.errors import ConfigError


def _ensemble(**section) -> dict:
    return {"run": {"name": "ens", "seed": 7, "out_dir": "out"}, "ensemble": section}


def test_absent_section_is_one_model():
    assert load_config({}).ensemble is None


def test_members_are_runs_inside_the_ensemble_with_own_seeds_and_one_split():
    cfg = load_config(_ensemble(method="bagging", members=3, sample_fraction=0.5))
    members = member_configs(cfg)
    assert [m.run.name for m in members] == ["m0", "m1", "m2"]
    assert {m.run.out_dir for m in members} == {"out/ens/members"}
    assert [m.run.seed for m in members] == [7, 8, 9]
    assert {m.data.split_seed for m in members} == {7}  # the ensemble's split for all
    assert [m.data.subsample.seed for m in members] == [7, 8, 9]
    assert {m.data.subsample.fraction for m in members} == {0.5}
    assert all(m.ensemble is None for m in members)


def test_voting_members_train_on_the_whole_train_split():
    members = member_configs(load_config(_ensemble(method="voting", members=2)))
    assert [m.data.subsample for m in members] == [None, None]


def test_stacking_members_all_leave_out_the_combiners_rows():
    cfg = load_config(_ensemble(method="stacking", members=3, combiner_fraction=0.25))
    assert cfg.ensemble.combine == "learned" and cfg.ensemble.combiner == "linear"
    samples = [m.data.subsample for m in member_configs(cfg)]
    assert [s.seed for s in samples] == [7, 8, 9]
    assert {(s.holdout, s.holdout_seed, s.fraction, s.replacement) for s in samples} == {
        (0.25, 7, 1.0, False)
    }


def test_boosting_members_weigh_their_loss_or_draw_rows_by_their_rounds_weights():
    cfg = load_config(_ensemble(method="boosting", members=2))
    assert cfg.ensemble.combine == "boosted" and cfg.ensemble.boosting.weights == "loss"
    samples = [m.data.subsample for m in member_configs(cfg)]
    assert [s.weights_file for s in samples] == [
        "out/ens/boosting/round_0.npy",
        "out/ens/boosting/round_1.npy",
    ]
    assert [s.seed for s in samples] == [7, 8] and {s.weights_use for s in samples} == {"loss"}
    cfg = load_config(_ensemble(method="boosting", members=2, boosting={"weights": "resample"}))
    assert {m.data.subsample.weights_use for m in member_configs(cfg)} == {"draw"}


def test_gradient_boosting_members_after_the_first_fit_residual_files():
    raw = _ensemble(method="boosting", members=3)
    cfg = load_config({**raw, "data": {"name": "diabetes", "task": "regression"}})
    samples = [m.data.subsample for m in member_configs(cfg)]
    assert [s.residuals_file for s in samples] == [
        None,
        "out/ens/boosting/residuals_1.safetensors",
        "out/ens/boosting/residuals_2.safetensors",
    ]
    assert all(s.weights_file is None and s.fraction == 1.0 for s in samples)


def test_an_older_boosting_config_with_combine_vote_still_loads():
    assert load_config(_ensemble(method="boosting", combine="vote")).ensemble.combine == "vote"


def test_member_overrides_apply_to_their_member_only():
    cfg = load_config(
        _ensemble(members=3, member_overrides=[["model.name=mlp", "model.hidden=[16]"], []])
    )
    members = member_configs(cfg)
    assert members[0].model.name == "mlp" and members[0].model.hidden == [16]
    assert members[1].model.name == members[2].model.name == "cnn"


@pytest.mark.parametrize(
    ("section", "culprit"),
    [
        ({"members": 0}, "ensemble.members"),
        ({"method": "stackin"}, "ensemble.method"),
        ({"method": "boosting", "combine": "mean"}, "ensemble.combine: `mean` with ensemble"),
        ({"combine": "boosted"}, "ensemble.combine: `boosted` with ensemble.method `voting`"),
        ({"method": "boosting", "boosting": {"algorithm": "adaboost"}}, "boosting.algorithm"),
        ({"method": "boosting", "boosting": {"learning_rate": 0}}, "boosting.learning_rate"),
        ({"combine": "learned"}, "ensemble.combine: `learned` with ensemble.method `voting`"),
        ({"method": "stacking", "combine": "mean"}, "ensemble.combine: `mean` with ensemble"),
        ({"method": "stacking", "combiner": "tree"}, "ensemble.combiner"),
        ({"method": "stacking", "combiner_fraction": 0}, "ensemble.combiner_fraction"),
        ({"method": "stacking", "combiner_fraction": 0.6}, "ensemble.combiner_fraction"),
        ({"sample_fraction": 0}, "ensemble.sample_fraction"),
        ({"sample_fraction": 1.5}, "ensemble.sample_fraction"),
        ({"member_nproc": 0}, "ensemble.member_nproc"),
        ({"members": 1, "member_overrides": [[], []]}, "ensemble.member_overrides"),
        ({"member_overrides": [["data.name=iris"]]}, "ensemble.member_overrides.0: data.name"),
        ({"member_overrides": [[], ["run.seed=3"]]}, "ensemble.member_overrides.1: run.seed"),
        ({"member_overrides": [["optim.lr"]]}, "ensemble.member_overrides.0: expected KEY=VALUE"),
        ({"member_overrides": [[], ["optim.lr=-1"]]}, "ensemble.member_overrides.1: optim.lr"),
        ({"member_overrides": [["optim.lrr=1"]]}, "ensemble.member_overrides.0: unknown key"),
        ({"memberz": 2}, "unknown key `ensemble.memberz`"),
    ],
)
def test_bad_ensemble_keys_are_one_line_naming_the_key(section, culprit):
    with pytest.raises(ConfigError) as error:
        load_config(_ensemble(**section))
    message = str(error.value)
    assert culprit in message and "\n" not in message, message


def test_subsample_fraction_bounds():
    with pytest.raises(ConfigError, match="data.subsample.fraction"):
        load_config({"data": {"subsample": {"fraction": 0, "seed": 1}}})


def test_snapshot_is_one_run_with_a_cycle_and_a_checkpoint_per_member():
    cfg = load_config({**_ensemble(method="snapshot", members=3), "train": {"max_epochs": 6}})
    (run,) = member_configs(cfg)
    assert run.run.name == "m0" and run.run.seed == 7
    assert run.optim.schedule.name == "cosine_restarts" and run.optim.schedule.cycles == 3
    assert run.checkpoint.every_epochs == 2 and run.checkpoint.keep_last == 3
    assert run.checkpoint.every_minutes is None and not run.checkpoint.save_best


@pytest.mark.parametrize(
    ("train", "section", "culprit"),
    [
        ({"max_epochs": 5}, {}, "set train.max_epochs to a multiple of 3"),
        ({"max_epochs": 6, "max_steps": 10}, {}, "leave train.max_steps unset"),
        ({"max_epochs": 6}, {"combine": "weighted"}, "ensemble.combine: `weighted`"),
        ({"max_epochs": 6}, {"member_overrides": [["optim.lr=1"]]}, "one run"),
    ],
)
def test_snapshot_refusals(train, section, culprit):
    raw = {**_ensemble(method="snapshot", members=3, **section), "train": train}
    with pytest.raises(ConfigError, match=culprit.replace("`", ".").replace(".", ".")):
        load_config(raw)
