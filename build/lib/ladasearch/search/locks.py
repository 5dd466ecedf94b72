"""File locks between ladasearch processes on one machine (or one shared folder).

Two ``run``s with the same ``--name`` would both pass the "already exists" check (the spec is written only
once the search starts) and share one Ray Tune folder; two ``run``s on a new MLflow store would both try to
create its tables.  ``search_lock`` makes the first claim of a name win and the second fail at once;
``store_lock`` makes the second store user wait until the first has created the store.

The lock file is removed while still held, so a failed or finished command leaves nothing behind; a
process that opened the old file meanwhile sees it unlinked and locks a fresh one (``filelock`` checks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ..errors import LadaError

STORE_WAIT_S = 180.0   # making an MLflow store's tables takes seconds, on a busy machine a minute


@contextlib.contextmanager
def _held(path: Path, wait: float, busy: str) -> Iterator[None]:
    from filelock import FileLock, Timeout

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LadaError(f"cannot create the folder {path.parent} ({exc.strerror or exc})") from None
    lock = FileLock(str(path), timeout=wait)
    try:
        lock.acquire(blocking=wait > 0)
    except Timeout:
        raise LadaError(busy) from None
    except OSError as exc:
        raise LadaError(f"cannot lock {path} ({exc.strerror or exc})") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        lock.release()


def search_lock(storage: Path, name: str) -> contextlib.AbstractContextManager[None]:
    """Held while a search named ``name`` in ``storage`` runs or resumes; LadaError at once when taken."""
    return _held(Path(storage) / f".{name}.lock", 0,
                 f"the search name {name!r} is taken: another ladasearch process is running or resuming it "
                 f"in {storage}; pick another --name or wait for it")


def store_lock(db: Path) -> contextlib.AbstractContextManager[None]:
    """Held while the MLflow SQLite store ``db`` is checked and, the first time, created."""
    return _held(db.with_name(db.name + ".lock"), STORE_WAIT_S,
                 f"the MLflow store {db} stayed locked by another ladasearch process for {STORE_WAIT_S:g} s")
