"""Bad ensemble input from the command line: one line naming the culprit, exit 2, and no
run directory left behind (nothing trains in these tests)."""

import yaml

from scaletrain.cli import main


def _config(tmp_path, **ensemble) -> str:
    config = {
        "run": {"name": "ens", "out_dir": str(tmp_path / "runs")},
        "model": {"name": "mlp", "hidden": [8]},
        "log": {"progress": False},
        "ensemble": {"members": 2, **ensemble},
    }
    path = tmp_path / "ens.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _run(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


def test_bad_member_override_names_the_member(tmp_path, capsys):
    config = _config(tmp_path, member_overrides=[[], ["optim.lr=-1"]])
    code, err = _run(capsys, "train", config)
    assert code == 2
    assert err.startswith("error: ensemble.member_overrides.1: optim.lr") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_vote_on_a_regression_task_is_refused_before_any_file(tmp_path, capsys):
    config = _config(tmp_path, combine="vote")
    code, err = _run(capsys, "train", config, "data.name=diabetes")
    assert code == 2 and "ensemble.combine: `vote` needs classes" in err, err
    assert not (tmp_path / "runs").exists()


def test_a_classification_boosting_option_on_a_regression_task_is_refused(tmp_path, capsys):
    config = _config(tmp_path, method="boosting", boosting={"algorithm": "samme_r"})
    code, err = _run(capsys, "train", config, "data.name=diabetes")
    assert code == 2 and "ensemble.boosting.algorithm: set, but it does not apply" in err, err
    assert err.count("\n") == 1 and not (tmp_path / "runs").exists()


def test_boosting_options_without_boosting_are_refused(tmp_path, capsys):
    config = _config(tmp_path, method="voting", boosting={"learning_rate": 0.3})
    code, err = _run(capsys, "train", config)
    assert code == 2 and "ensemble.boosting: set, but ensemble.method is `voting`" in err, err
    assert not (tmp_path / "runs").exists()


def test_bad_node_flags_are_refused_for_ensembles(tmp_path, capsys):
    code, err = _run(capsys, "train", _config(tmp_path), "--nnodes", "2")
    assert code == 2 and "--nnodes 2 needs HOST:PORT of node 0" in err, err
    code, err = _run(capsys, "train", _config(tmp_path), "--nnodes", "1:2")
    assert code == 2 and "--nnodes 1:2: an ensemble runs on a fixed number of nodes" in err, err
    flags = ("--nnodes", "2", "--rdzv-endpoint", "127.0.0.1:1", "--node-rank", "1")
    code, err = _run(capsys, "train", _config(tmp_path, method="boosting"), *flags)
    assert code == 2 and "--nnodes 2: ensemble.method `boosting` runs its rounds" in err, err
    assert not (tmp_path / "runs").exists()


def test_config_check_lists_ensemble_problems(tmp_path, capsys):
    code, err = _run(capsys, "config", "check", _config(tmp_path, members=0))
    assert code == 2 and "ensemble.members" in err, err


def test_single_run_api_refuses_an_ensemble_config(tmp_path):
    import pytest

    from scaletrain import api
    from scaletrain.errors import ConfigError

    with pytest.raises(ConfigError, match="scaletrain.train"):
        api.train(_config(tmp_path))


def test_nproc_not_a_multiple_of_member_nproc_is_refused(tmp_path, capsys):
    for nproc in ("1", "3"):
        code, err = _run(capsys, "train", _config(tmp_path, member_nproc=2), "--nproc", nproc)
        assert code == 2 and err.startswith(f"error: --nproc {nproc}: each member is a 2-process")
        assert err.count("\n") == 1 and not (tmp_path / "runs").exists()


def test_member_jobs_need_a_multi_process_strategy(tmp_path, capsys):
    config = _config(tmp_path, member_nproc=2)
    code, err = _run(capsys, "train", config, "parallel.strategy=single")
    assert code == 2 and "parallel.strategy: `single` with ensemble.member_nproc 2" in err, err
    assert err.count("\n") == 1 and not (tmp_path / "runs").exists()
    overrides = [[], ["parallel.strategy=single"]]
    config = _config(tmp_path, member_nproc=2, member_overrides=overrides)
    code, err = _run(capsys, "config", "check", config, "parallel.strategy=ddp")
    assert code == 2 and err.startswith("error: ensemble.member_overrides.1: parallel.strategy")


def test_a_member_batch_that_member_nproc_does_not_divide_is_refused_at_config_time(
    tmp_path, capsys
):
    code, err = _run(capsys, "train", _config(tmp_path, member_nproc=3), "--nproc", "3")
    assert code == 2, err
    assert err.startswith("error: ensemble member 0: train.batch_size: 64 is not divisible by ")
    assert "ensemble.member_nproc 3" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
    overrides = [[], ["train.batch_size=63"]]
    config = _config(tmp_path, member_nproc=2, member_overrides=overrides)
    code, err = _run(capsys, "config", "check", config)
    assert code == 2 and err.startswith("error: ensemble.member_overrides.1: train.batch_size: 63")
    code, err = _run(
        capsys, "config", "check", _config(tmp_path, member_nproc=3), "train.batch_size=63"
    )
    assert code == 0, err
