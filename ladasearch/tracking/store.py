"""Where the MLflow records live: the store's URI (created only when asked), checked before use, and a copied
or moved SQLite store re-pointed at its own artifacts."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import LadaError
from .server import check_reader_server

DEFAULT_STORE = Path("mlruns")


def resolve_tracking_uri(uri: str | None = None, *, create: bool = True) -> str:
    """Explicit URI, else $MLFLOW_TRACKING_URI, else the project-local SQLite store ``mlruns/mlflow.db``.

    ``create``: make the store folder and check that it is writable (a search, the UI), so an unusable
    store fails before any work; readers pass False, which never writes anything.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = DEFAULT_STORE.resolve()
    if not create:
        return f"sqlite:///{store / 'mlflow.db'}"
    if store.exists() and not store.is_dir():
        raise LadaError(f"the MLflow store {store} exists and is not a folder; move it or pass --tracking-uri")
    try:
        store.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=store, prefix=".write-check-")
        probe.close()
    except OSError as exc:
        raise LadaError(f"the MLflow store folder {store} is not writable ({exc.strerror}); "
                        f"fix its permissions or pass --tracking-uri") from None
    return f"sqlite:///{store / 'mlflow.db'}"


def check_store(uri: str) -> None:
    """LadaError naming the store when ``uri`` points at nothing (a reader never creates one)."""
    if uri.startswith(("http://", "https://")):
        check_reader_server(uri)
    elif uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise LadaError(f"no MLflow store at {db} (tracking URI {uri}); pass --tracking-uri or set "
                            f"MLFLOW_TRACKING_URI")
    elif uri.startswith("file:") or "://" not in uri:
        path = Path(uri.removeprefix("file://").removeprefix("file:"))
        if not path.is_dir():
            raise LadaError(f"no MLflow store at {path} (tracking URI {uri})")


def file_folder(location: str | None) -> Path | None:
    """The local folder of a ``file:`` artifact location (None for any other kind)."""
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(location).path)) if (location or "").startswith("file:") else None


@dataclass(frozen=True)
class Relocation:
    """An experiment of a copied or moved store whose artifact root now points into the store's own folder."""

    experiment: str
    was: str
    now: str


def relocate_artifacts(db: Path) -> list[Relocation]:
    """Make a copied or moved SQLite store self-contained.

    MLflow records absolute artifact locations, so a copy would go on reading (and writing) the original's
    artifacts, and find nothing once the original is gone.  Our stores keep an experiment's artifacts in
    ``artifacts/<experiment>`` beside ``mlflow.db``; where that folder exists and is not the recorded one, the
    experiment's and its runs' locations are rewritten to it, so a copy reads its own.  An experiment with no
    such folder (made elsewhere, or copied without its artifacts) is left as it is.
    """
    import sqlite3

    if not db.is_file():
        return []
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        try:
            if not con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='experiments'").fetchone():
                return []
            rows = con.execute("SELECT experiment_id, name, artifact_location FROM experiments").fetchall()
        except sqlite3.Error as exc:
            raise LadaError(f"the MLflow store {db} cannot be read ({exc}); is it an MLflow SQLite store?") from None
        moves = []
        for exp_id, name, location in rows:
            was = file_folder(location)
            if was is None:
                continue
            now = db.parent / "artifacts" / name
            if now.is_dir() and not (was.exists() and was.samefile(now)):
                moves.append((exp_id, Relocation(name, str(was), str(now)), location, now.as_uri()))
        if not moves:
            return []
        try:
            with con:   # one transaction: a store is rewritten whole or not at all
                for exp_id, _, old, new in moves:
                    con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (new, exp_id))
                    con.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) WHERE experiment_id = ? "
                                "AND substr(artifact_uri, 1, ?) = ?", (new, len(old) + 1, exp_id, len(old), old))
        except sqlite3.Error as exc:
            raise LadaError(f"the MLflow store {db} was copied or moved and its artifact folders must be re-pointed "
                            f"to {db.parent / 'artifacts'}, but the store cannot be written ({exc}); make it "
                            f"writable") from None
    return [m[1] for m in moves]
