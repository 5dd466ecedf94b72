"""A search's runs folder is trusted input: ``resume`` makes Ray Tune unpickle ``<name>/tuner.pkl`` (and its
trial states), and unpickling a crafted file runs code, like loading a pickled checkpoint.

So a resume refuses state that another account could have written: the storage folder, the spec, and the
search's folder with everything in it must belong to this user (or root) and be writable by no one else
(a sticky folder such as /tmp may be world-writable: others cannot replace what is in it).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import LadaError

TUNER_STATE = "tuner.pkl"


def _problem(path: Path) -> tuple[str, str] | None:
    """(what is wrong, what the user can do if they trust it), or None."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    if info.st_uid not in (os.geteuid(), 0):
        return f"belongs to another user (uid {info.st_uid})", "copy it, or have its owner chown it to you"
    writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and not (path.is_dir() and info.st_mode & stat.S_ISVTX):
        return f"is writable by other users (mode {stat.S_IMODE(info.st_mode):o})", "chmod go-w it"
    return None


def check_trusted(storage: Path, name: str, spec: Path) -> None:
    """LadaError naming the first part of a search's saved state that others could have written."""
    folder = storage / name
    inside = (Path(root) / entry for root, dirs, files in os.walk(folder) for entry in (*dirs, *files))
    for path in (storage, spec, folder, *inside):
        problem = _problem(path)
        if problem:
            raise LadaError(f"refusing to resume from {path}: it {problem[0]} ({problem[1]} if you trust it); "
                            f"resuming unpickles Ray Tune's state ({TUNER_STATE}), which can run code")
