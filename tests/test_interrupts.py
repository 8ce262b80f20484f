"""Ctrl-C and SIGTERM at any moment of a command-line run: held over JAX's import, never swallowed."""

from __future__ import annotations

import os
import signal
import time

import pytest

from dlchapter import cli
from dlchapter.reporting.run_guard import Terminated, ctrl_c_noticed, interrupts_deferred, sigterm_unwinds


def _send(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # the handler runs at the next bytecode boundary


def test_a_ctrl_c_inside_the_deferred_block_is_raised_when_it_ends():
    reached_end = False
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            _send(signal.SIGINT)
            reached_end = True  # no KeyboardInterrupt in the middle (of an extension's initialisation)
    assert reached_end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_sigterm_inside_the_deferred_block_unwinds_as_terminated_when_it_ends():
    with sigterm_unwinds():
        with pytest.raises(Terminated), interrupts_deferred():
            _send(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_nothing_held_means_nothing_raised():
    with interrupts_deferred():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_that_a_library_swallows_still_ends_the_run_with_130(capsys):
    """A bare `except:` (as around some optional imports) ate the KeyboardInterrupt: the run went on to exit 0."""
    finished = []

    def main(argv):
        try:
            _send(signal.SIGINT)
        except:  # noqa: E722  (what the library did)
            pass
        finished.append(True)

    assert cli.launch(main, []) == cli.EXIT_CTRL_C
    assert finished == [True]
    assert capsys.readouterr().err.startswith("interrupted (Ctrl-C) before the run finished")


def test_a_run_without_ctrl_c_is_untouched_and_the_handler_is_restored():
    assert cli.launch(lambda argv: None, []) == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with ctrl_c_noticed() as arrived:
        pass
    assert arrived == []


def test_another_handler_of_the_caller_is_kept():
    calls = []
    previous = signal.signal(signal.SIGINT, lambda *a: calls.append("theirs"))
    try:
        with ctrl_c_noticed() as arrived:
            _send(signal.SIGINT)
        assert calls == ["theirs"] and arrived == []
    finally:
        signal.signal(signal.SIGINT, previous)
