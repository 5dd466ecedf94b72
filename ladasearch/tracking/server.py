"""A tracking server checked in bounded time: MLflow's HTTP client retries an unreachable or silent server for
minutes, so every command that talks to one (a search before any work, the readers before they read) asks it
first, within a deadline (``$LADASEARCH_MLFLOW_TIMEOUT``, 10 s), and says so in one line when it does not answer.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from urllib.parse import urlsplit

from ..errors import LadaError
from ..io import tcp_unreachable

TIMEOUT_ENV, STORE_TIMEOUT_S = "LADASEARCH_MLFLOW_TIMEOUT", 10.0


def store_timeout() -> float:
    """Seconds a tracking server gets to accept a connection and to answer each request
    (``$LADASEARCH_MLFLOW_TIMEOUT``, default 10)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or not raw.strip():
        return STORE_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= 3600:
        raise LadaError(f"{TIMEOUT_ENV}={raw!r} must be a number of seconds in (0, 3600]")
    return value


@contextlib.contextmanager
def no_retries(timeout: float) -> Iterator[None]:
    """MLflow's HTTP client without its minutes of retries, for bounded requests."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(timeout)))}
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_server(uri: str, timeout: float) -> None:
    """LadaError, within ``timeout``, when nothing accepts a connection at the tracking server ``uri``."""
    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    why = tcp_unreachable(parts.hostname or "localhost", port, timeout)
    if why is not None:
        raise LadaError(f"the MLflow tracking server {uri} is not reachable ({why}, waited up to {timeout:g} s); "
                        f"start it, pass another --tracking-uri, or set {TIMEOUT_ENV} to wait longer")


def check_reader_server(uri: str) -> None:
    """A tracking server a reader (export, export-model, report) will use: it must accept a connection and answer
    one request as MLflow within the deadline.  Its later requests keep the deadline, with one retry, so a
    server that goes away mid-command costs seconds, not MLflow's minutes of back-off."""
    from mlflow.tracking import MlflowClient

    timeout = store_timeout()
    check_server(uri, timeout)
    with no_retries(timeout):
        try:
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except Exception:  # noqa: BLE001 - a timeout, a refused request or a server that is not MLflow
            raise LadaError(f"the MLflow tracking server {uri} accepted a connection but gave no MLflow answer "
                            f"within {timeout:g} s; start it, pass another --tracking-uri, or set {TIMEOUT_ENV} "
                            f"to wait longer") from None
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, math.ceil(timeout))))
