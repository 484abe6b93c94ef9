"""StalenessGate: fresh gradients apply whole; stale ones are dropped or down-weighted."""

from __future__ import annotations

import pytest

from scaletrain.parallel.ps import Decision, StalenessGate


@pytest.mark.parametrize("mode", ["drop", "scale"])
def test_within_the_bound_a_gradient_applies_unscaled(mode):
    gate = StalenessGate(2, mode)
    for staleness in range(3):
        decision = gate.decide(base_version=10, current_version=10 + staleness)
        assert decision == Decision(True, 1.0, staleness)


def test_drop_discards_everything_beyond_the_bound():
    gate = StalenessGate(2, "drop")
    assert gate.decide(base_version=10, current_version=13) == (False, 0.0, 3)
    assert gate.decide(base_version=0, current_version=100) == (False, 0.0, 100)


def test_scale_shrinks_by_tau_plus_one_over_staleness_plus_one():
    gate = StalenessGate(2, "scale")
    apply, scale, staleness = gate.decide(base_version=10, current_version=15)
    assert (apply, staleness) == (True, 5)
    assert scale == pytest.approx(3 / 6)
    scales = [gate.decide(base_version=0, current_version=s).scale for s in range(2, 20)]
    assert all(a > b > 0 for a, b in zip(scales, scales[1:], strict=False))


def test_tau_zero_scale_is_one_over_one_plus_staleness():
    gate = StalenessGate(0, "scale")
    assert gate.decide(base_version=4, current_version=4) == (True, 1.0, 0)
    assert gate.decide(base_version=4, current_version=7).scale == pytest.approx(1 / 4)


@pytest.mark.parametrize("mode", ["drop", "scale"])
def test_a_base_ahead_of_the_server_is_dropped(mode):
    # a server resumed from its last flush is behind what a worker pulled before the crash
    assert StalenessGate(3, mode).decide(base_version=12, current_version=10) == (False, 0.0, -2)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="tau"):
        StalenessGate(-1, "drop")
    with pytest.raises(ValueError, match="mode"):
        StalenessGate(1, "ignore")
