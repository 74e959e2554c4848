"""cli.StopSignals: SIGINT and SIGTERM as one request to stop, that the server polls and a CLI render raises."""
from __future__ import annotations

import gc
import os
import signal
import weakref

import pytest

from music_mood.cli import StopSignals


class _Held:
    pass


def _signal_inside_a_weakref_callback(which: int) -> list[str]:
    """Send `which` to this process from inside a weakref callback, as a kill during model loading can land, and
    return what the callback got done (Python ignores, and prints, an exception raised in such a callback)."""
    done = []

    def callback(_):
        os.kill(os.getpid(), which)
        done.append("after the signal")

    held = _Held()
    ref = weakref.ref(held, callback)
    del held
    gc.collect()
    assert ref() is None
    return done


@pytest.mark.parametrize("which", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_the_server_polls_is_never_lost_in_a_weakref_callback(which):
    with StopSignals(raise_interrupt=False) as stop:
        done = _signal_inside_a_weakref_callback(which)
    assert stop.requested and stop.signum == which and stop.exit_status == 128 + which
    assert done == ["after the signal"]  # the code the signal landed in ran on, untouched


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # Python's "Exception ignored"
def test_the_old_way_loses_the_stop_in_the_callback():
    """What app.py did before: SIGTERM as Ctrl-C (signal.default_int_handler). The KeyboardInterrupt lands in the
    callback, Python ignores it there, and nothing else ever hears of the stop."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        done = _signal_inside_a_weakref_callback(signal.SIGTERM)  # no KeyboardInterrupt reaches this frame
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert done == []


def test_the_handlers_from_before_are_put_back():
    before = {which: signal.getsignal(which) for which in (signal.SIGINT, signal.SIGTERM)}
    with StopSignals(raise_interrupt=True), pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a bytecode boundary for the handler to run at
    assert {which: signal.getsignal(which) for which in before} == before
