"""SIGINT and SIGTERM end in the same clean-up path.

:func:`install` makes both raise :class:`Interrupted` in the main thread, so every ``finally`` and
``except BaseException`` on the way out runs: temporary bundles and probe folders are removed,
child processes killed. A second signal while that clean-up runs is ignored.

Some native code calls back into Python's signal check and crashes when the handler raises
(matplotlib's text layout freed a font twice: signal 11). Inside :func:`deferred` a signal is only
recorded, and raised once the block is left.
"""

from __future__ import annotations

import _thread
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; the CLI exits with 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_state: dict[str, Any] = {"installed": False, "depth": 0, "pending": None, "raised": False}


def _handler(signum: int, _frame: FrameType | None) -> None:
    if _state["raised"]:
        return  # already on the way out: let the clean-up finish
    if _state["depth"] > 0:
        _state["pending"] = _state["pending"] or signum
        return
    _state["raised"] = True
    raise Interrupted(signum)


SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
BLOCKED_ENV = "EDGEKIT_SIGNALS_BLOCKED_BY"


def install() -> Callable[[], None]:
    """Route SIGINT and SIGTERM to :class:`Interrupted`; returns a function restoring the old state.

    Both signals are blocked in every thread (native thread pools created later inherit that) and
    taken synchronously by one waiting thread, which interrupts the main thread. A signal landing
    asynchronously on a native worker thread (an OpenMP barrier, say) corrupted the heap and
    crashed the process with signal 11. Does nothing outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handler)
    _state.update(installed=True, depth=0, pending=None, raised=False)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    os.environ[BLOCKED_ENV] = str(os.getpid())  # edgekit code in a child process unblocks on import
    stop = threading.Event()

    def wait() -> None:
        while True:
            signum = signal.sigwait(SIGNALS)
            if stop.is_set():
                return
            _thread.interrupt_main(signal.Signals(signum))

    waiter = threading.Thread(target=wait, name="edgekit-signals", daemon=True)
    waiter.start()

    def restore() -> None:
        stop.set()
        if waiter.ident is not None:
            signal.pthread_kill(waiter.ident, signal.SIGTERM)  # wakes the waiter, which sees stop
        waiter.join(timeout=5)
        for s, h in old.items():
            signal.signal(s, h)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.environ.pop(BLOCKED_ENV, None)
        _state.update(installed=False, depth=0, pending=None, raised=False)

    return restore


def unblock() -> None:
    """In a child process: take SIGINT and SIGTERM normally again (the mask is inherited).

    Runs by itself in forked children (``multiprocessing``) and when a child imports edgekit; a
    child that runs other code and must be stopped by SIGTERM should be killed with SIGKILL or
    given this as ``preexec_fn``."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def _after_fork_in_child() -> None:
    if _state["installed"]:
        _state.update(installed=False, depth=0, pending=None, raised=False)
        for s in SIGNALS:
            signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
        unblock()


def unblock_if_inherited() -> None:
    """Called when edgekit is imported: unblock SIGINT/SIGTERM inherited from an edgekit parent."""
    owner = os.environ.get(BLOCKED_ENV)
    if owner and owner != str(os.getpid()):
        unblock()


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends (for native calls that must not be interrupted)."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    pending = _state["pending"]
    if pending and _state["depth"] == 0 and _state["installed"] and not _state["raised"]:
        _state.update(pending=None, raised=True)
        raise Interrupted(pending)
