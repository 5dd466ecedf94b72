"""SIGTERM (``kill``, a batch scheduler's stop, a container's shutdown) stops a search the way Ctrl-C does.

Ctrl-C is handled: before the Tuner runs it raises KeyboardInterrupt (nothing recorded yet, or the parent
run is marked KILLED), while the Tuner runs, Ray Tune's SIGINT handler ends ``fit()`` with its state saved,
so the search finishes as interrupted (parent KILLED, resumable).  SIGTERM's default ends the process on the
spot and leaves the parent run RUNNING; here it is passed to whatever handles SIGINT at that moment.
"""

from __future__ import annotations

import contextlib
import signal
import threading


def _as_sigint(signum, frame) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # SIGINT ignored or left to the OS: stop like Python's default Ctrl-C
        raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_sigint():
    """Within the block SIGTERM acts as SIGINT (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _as_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
