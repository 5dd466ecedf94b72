"""`ladasearch ui`'s server: MLflow's UI in a child process that must answer within a deadline.

`mlflow ui` imports its whole server stack before it listens (37 s on a loaded machine), and a server that never
comes up used to leave `ui` silent for good.  The child runs in its own process group because MLflow starts its web
server as a grandchild: a deadline, Ctrl-C or SIGTERM then stops all of it, and nothing is left holding the port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

from ..errors import LadaError
from ..search.signals import sigterm_as_sigint

HEALTH = "/health"     # MLflow's server answers 200 here once its routes are up
STOP_GRACE_S = 10.0    # SIGTERM first (MLflow's server exits cleanly), SIGKILL after this
INTERRUPTED = 130


def serve(args: Sequence[str], base: str, start_timeout: float, log: Callable[[str], None] = print) -> int:
    """Run ``args`` (an MLflow server), wait until ``base`` answers, then until it exits; its exit code, or 130
    after Ctrl-C/SIGTERM.  LadaError, with the server stopped, when it exits or stays silent before answering."""
    child = subprocess.Popen(list(args), start_new_session=True)
    try:
        with sigterm_as_sigint():
            waited = wait_until_serving(child, base, start_timeout)
            log(f"serving on {base} (answered after {waited:.1f} s); Ctrl-C stops it")
            return child.wait()
    except KeyboardInterrupt:
        return INTERRUPTED
    finally:
        stop(child)


def wait_until_serving(child: subprocess.Popen, base: str, start_timeout: float) -> float:
    """Seconds until ``base + HEALTH`` answered 200."""
    url = base + HEALTH
    started = time.monotonic()
    while True:
        code = child.poll()
        if code is not None:
            raise LadaError(f"the MLflow UI exited with code {code} before it answered on {base} (its output is "
                            f"above)")
        waited = time.monotonic() - started
        if _answers(url, max(0.1, min(2.0, start_timeout - waited))):
            return time.monotonic() - started
        if time.monotonic() - started >= start_timeout:
            raise LadaError(f"the MLflow UI did not answer on {url} within {start_timeout:g} s, so it was stopped; "
                            f"a loaded machine can take longer: raise --start-timeout")
        time.sleep(0.25)


def _answers(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):  # not listening yet, reset, or a half-started server
        return False


def stop(child: subprocess.Popen) -> None:
    """Stop ``child``'s whole process group: SIGTERM, then SIGKILL after ``STOP_GRACE_S``."""
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
        try:
            os.killpg(child.pid, sig)
        except (ProcessLookupError, PermissionError):  # the group is gone (the server exited and took its workers)
            break
        try:
            child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        if not _group_alive(child.pid):
            break


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
