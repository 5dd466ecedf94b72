"""Which Ray a search runs on, reached in bounded time.

Without an address a search always starts a private local Ray (``address="local"``): Ray's own default
(``ray.init()``) would silently join whatever cluster ``ray start`` recorded on this machine or
``RAY_ADDRESS`` names, and die with it.  ``--address auto`` joins that cluster on purpose, ``host:port``
joins a head's GCS, ``ray://host:10001`` goes through Ray Client.

Ray waits for an unreachable head for minutes, so an address is first probed with a plain TCP connection
bounded by ``timeout`` (``probe``): a dead head, a wrong port or a stale record is one error line before
anything is trained or recorded.  A head that answers but refuses the driver is usually token
authentication (``RAY_AUTH_MODE=token``); the error says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import LadaError
from ..io import grpc_unanswered, tcp_unreachable

LOCAL = "local"
AUTO = "auto"
DEFAULT_CONNECT_TIMEOUT = 30.0
TOKEN_HINT = ("if the cluster uses token authentication, set RAY_AUTH_MODE=token and its token "
              "(RAY_AUTH_TOKEN or ~/.ray/auth_token)")


@dataclass(frozen=True)
class RaySession:
    """The Ray a search runs on."""

    owned: bool          # this call initialised Ray in this process: shut down (or disconnect) at the end
    description: str     # for the terminal: which cluster, how big


def _endpoint(address: str) -> tuple[str, int]:
    """(host, port) of ``host:port`` or ``ray://host:port`` (LadaError naming the address otherwise)."""
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LadaError(f"Ray address {address!r} must be 'local', 'auto', HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def _resolve_auto() -> str:
    """The address ``--address auto`` means: $RAY_ADDRESS, else the cluster ``ray start`` recorded here."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        found = canonicalize_bootstrap_address(AUTO)
    except (ConnectionError, ValueError) as exc:
        raise LadaError(f"--address auto found no running Ray cluster ({str(exc).splitlines()[0]}); start one "
                        f"with `ray start --head` or pass its address") from None
    if not found:
        raise LadaError("--address auto found no running Ray cluster; start one with `ray start --head` or pass "
                        "its address")
    return found


def probe(address: str | None, timeout: float) -> None:
    """Fail within ``timeout`` seconds when ``address`` names a cluster nobody answers at (no-op for local)."""
    if not address or address == LOCAL:
        return
    if not timeout > 0:
        raise LadaError(f"the connect timeout must be > 0 seconds, got {timeout!r}")
    target = _resolve_auto() if address == AUTO else address
    host, port = _endpoint(target)
    shown = address if address == target else f"{address} ({target})"
    why = tcp_unreachable(host, port, timeout)
    if why is not None:
        raise LadaError(f"could not reach the Ray cluster at {shown}: {why}; check the address and that its head "
                        f"is up (`ray status`)")
    # a port that takes TCP but is not a Ray head would make ray.init block for many minutes
    why = grpc_unanswered(host, port, timeout)
    if why is not None:
        raise LadaError(f"{shown} is not a Ray head: {why}; check the address (a head's GCS port, 6379 by "
                        f"default), or raise --connect-timeout if the head is only slow")


def _configure() -> None:
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's default (15) starves trials on a shared machine
    # a failed trial's traceback goes to its error.txt and MLflow tag; the terminal gets one line (Progress)
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)


def _describe(private: bool, address: str | None) -> str:
    import ray

    try:
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        cpus = ray.cluster_resources().get("CPU", 0)
        gpus = ray.cluster_resources().get("GPU", 0)
        size = f"{nodes} node{'s' * (nodes != 1)}, {cpus:g} CPU{'s' * (cpus != 1)}" + (f", {gpus:g} GPU" if gpus else "")
    except Exception:  # noqa: BLE001 - Ray Client may not answer these; the size is only informative
        size = "size unknown"
    if private:
        return f"a private local Ray ({size})"
    if address:
        return f"the Ray cluster at {address} ({size})"
    return f"the Ray already running in this process ({size})"


@contextlib.contextmanager
def _stderr_held() -> Iterator[None]:
    """Ray's C++ client writes a warning line per retry straight to fd 2 while it cannot join; a failed join
    is one error line, so they are held back (and written out after a join that worked)."""
    sys.stderr.flush()
    saved = os.dup(2)
    joined = False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
            joined = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if joined:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))


def connect(address: str | None, timeout: float = DEFAULT_CONNECT_TIMEOUT,
            log: Callable[[str], None] | None = None) -> RaySession:
    """Start a private local Ray (``address`` None or 'local') or join the cluster at ``address``.

    A Ray already initialised in this process (e.g. by a benchmark running several searches) is used as is.
    """
    import ray

    _configure()
    if ray.is_initialized():
        session = RaySession(False, _describe(False, None))
    else:
        joining = bool(address) and address != LOCAL
        probe(address if joining else None, timeout)
        previous = signal.getsignal(signal.SIGTERM)
        try:
            with _stderr_held() if joining else contextlib.nullcontext():
                ray.init(address=address if joining else LOCAL, include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR", configure_logging=True)
        except Exception as exc:  # Ray raises bare Exceptions (time-outs, refused handshakes, auth)
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            if joining:
                raise LadaError(f"could not join the Ray cluster at {address!r}: {first}; {TOKEN_HINT}") from None
            raise LadaError(f"could not start a local Ray: {first}") from None
        finally:
            # ray.init makes SIGTERM exit the driver on the spot; the search's own handler stops it cleanly
            if previous is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, previous)
        session = RaySession(True, _describe(not joining, address if joining else None))
    if log is not None:
        log(f"Ray: {session.description}")
    return session


RAYLET_DIED_NOTICE = "Raylet is terminated"


def quiet_raylet_notice() -> None:
    """Drop the notice Ray's error listener prints when a raylet dies (its last 20 log lines, about 40 lines in
    all, printed before anything in this process can act): ``NodeWatch`` says it in one line.  Ray has no
    option for this listener (``log_to_driver`` covers worker output only), so its print function is wrapped;
    every other notice passes."""
    from ray._private import worker

    shown = worker.print_to_stdstream
    if getattr(shown, "quiet_raylet_notice", False):
        return

    def print_to_stdstream(data, ignore_prefix: bool):
        if data.get("pid") == "raylet" and any(RAYLET_DIED_NOTICE in line for line in data.get("lines", ())):
            return
        shown(data, ignore_prefix)

    print_to_stdstream.quiet_raylet_notice = True
    worker.print_to_stdstream = print_to_stdstream


def local_raylet():
    """The raylet of the Ray node this driver runs on (the private Ray's, or on a joined cluster the node
    ``ray start`` made on this machine: a driver always attaches to its own machine's node), or None.  Found by
    the node id it was started with (``--node_id=...``), so another Ray on the machine is never taken for it."""
    import psutil
    import ray

    flag = f"--node_id={ray.get_runtime_context().get_node_id()}"
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "raylet" and flag in (process.info["cmdline"] or ()):
            return process
    return None


NODE_DIED_EXIT = 1


class NodeWatch:
    """Watches the raylet of the Ray node this driver runs on (private or joined) from a daemon thread while a
    search runs on it.

    When the raylet dies, Ray's C++ core ends this process with exit code 1 and no Python code runs (no
    ``finally``, no ``atexit``), after its agent has printed the raylet's last 20 log lines: the parent run
    would stay RUNNING.  So the watch acts first: ``on_death(why)`` records it and returns the one line to
    print; Ray's later output is muted and the process ends itself with ``NODE_DIED_EXIT``.  ``stop()`` before
    ``ray.shutdown()``, which ends the private raylet on purpose.
    """

    def __init__(self, on_death: Callable[[str], str], interval: float = 0.2):
        import psutil

        self.raylet = local_raylet()
        private = self.raylet is not None and self.raylet.pid in {c.pid for c in psutil.Process().children(True)}
        self.whose = "the private Ray's raylet" if private else "the raylet of this machine's Ray node"
        self.on_death, self.interval = on_death, interval
        self.stopped = threading.Event()
        if self.raylet is not None:
            quiet_raylet_notice()
            threading.Thread(target=self._watch, name="ladasearch-raylet-watch", daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()

    def _alive(self) -> bool:
        import psutil

        try:
            return self.raylet.is_running() and self.raylet.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def _watch(self) -> None:
        while not self.stopped.wait(self.interval):
            if not self._alive():
                break
        if self.stopped.is_set():
            return
        why = f"{self.whose} (pid {self.raylet.pid}) died: its node and every trial on it are gone"
        # Ray's core (C++, straight to the file descriptors) and its Python threads print the raylet's log
        # tail while this records: both descriptors go to /dev/null, the one line to the saved stderr
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        err, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        try:
            line = self.on_death(why)
        except Exception as exc:  # noqa: BLE001 - the store may be gone too; the line still says what happened
            line = f"{why}; recording it failed too: {exc}"
        os.write(err, f"error: {line}\n".encode())
        os._exit(NODE_DIED_EXIT)


def init_ray(address: str | None = None, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> bool:
    """Connect to ``address`` or start a private local Ray; True when this call initialised Ray here."""
    return connect(address, timeout).owned
