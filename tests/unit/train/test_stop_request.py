"""SIGTERM/SIGINT as flags (train/signals.py), nested as an ensemble nests its members' loops
inside its own: real signals sent to this process."""

from __future__ import annotations

import os
import signal

import pytest

from scaletrain.train.signals import StopRequest


def _send(signum: int) -> None:
    os.kill(os.getpid(), signum)  # delivered before the next bytecode of the main thread


def test_a_signal_is_a_flag_and_the_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop.requested
        _send(signal.SIGTERM)
        assert stop.requested and stop.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_ctrl_c_interrupts_at_once():
    with StopRequest() as stop, pytest.raises(KeyboardInterrupt):
        _send(signal.SIGINT)
        assert stop.exit_code == 130
        _send(signal.SIGINT)


def test_a_signal_before_the_inner_loop_began_counts_for_it():
    with StopRequest() as outer:
        _send(signal.SIGTERM)  # a member's setup: only the ensemble listens
        with StopRequest() as inner:
            assert inner.requested and inner.exit_code == 143
        assert outer.requested


def test_a_signal_inside_the_inner_loop_reaches_the_outer():
    with StopRequest() as outer:
        with StopRequest() as inner:
            _send(signal.SIGTERM)
            assert inner.requested
        assert outer.requested and outer.exit_code == 143
        assert signal.getsignal(signal.SIGTERM) == outer._handle  # the outer listens again


def test_an_inner_loop_after_a_quiet_outer_starts_clear():
    with StopRequest() as outer, StopRequest() as inner:
        assert not inner.requested and not outer.requested
