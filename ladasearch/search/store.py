"""The MLflow store a search writes to: checked in bounded time before any work, created once.

MLflow retries an unreachable tracking server for minutes and answers a damaged SQLite file with a
SQLAlchemy traceback, both only when the first run is written, after the teacher was fine-tuned.  So
before anything else: a tracking server must accept a connection within ``timeout`` and answer one
request without retries; a SQLite file must be a sound database; and the store's tables and the
experiment are made here, under a lock, so two searches started together on a new store do not both
run MLflow's schema migration.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path

from ..errors import LadaError, first_line
from ..tracking import Tracker
from ..tracking.server import check_server, no_retries, store_timeout
from .locks import store_lock

def check_sqlite(db: Path) -> None:
    """LadaError when ``db`` exists but is not a sound SQLite database (truncated, overwritten, not SQLite)."""
    if not db.exists() or db.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)) as con:
            verdict = con.execute("PRAGMA quick_check").fetchone()
    except sqlite3.Error as exc:
        verdict = (str(exc),)
    if not verdict or verdict[0] != "ok":
        raise LadaError(f"the MLflow store {db} is damaged ({(verdict or ['no answer'])[0]}); restore it from a "
                        f"backup or pass another --tracking-uri")


def open_store(uri: str, experiment: str, timeout: float | None = None) -> Tracker:
    """A tracker on a usable store ``uri`` with ``experiment`` made (LadaError naming the store otherwise)."""
    tracker = Tracker(uri, experiment)
    if uri.startswith(("http://", "https://")):
        timeout = store_timeout() if timeout is None else timeout
        check_server(uri, timeout)
        with no_retries(timeout):
            _experiment(tracker, uri)
    elif uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        with store_lock(db):
            check_sqlite(db)
            _experiment(tracker, uri)
    else:
        _experiment(tracker, uri)
    return tracker


def _experiment(tracker: Tracker, uri: str) -> None:
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables..." lines
    try:
        tracker.experiment_id  # noqa: B018 - makes the store's tables and the experiment when missing
    except LadaError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow and SQLAlchemy raise many kinds; the first line says which
        raise LadaError(f"the MLflow store {uri} is not usable: {first_line(exc)}") from None
