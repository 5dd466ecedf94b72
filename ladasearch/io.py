"""Writing files that other processes may read at any moment, and probing a server before relying on it."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | Path, payload: Any, *, sort_keys: bool = False) -> Path:
    """Write ``payload`` as indented JSON to ``path`` through a temporary file and a rename.

    A reader (another trial, a cache lookup, ``ladasearch export``) sees the old file or the new one,
    never a half-written one.  Numbers numpy or torch hand over (float32 scalars) are written as floats.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=sort_keys, default=float) + "\n")
    os.replace(tmp, path)
    return path


def tcp_unreachable(host: str, port: int, timeout: float) -> str | None:
    """Why a TCP connection to ``host:port`` fails within ``timeout`` seconds (None: it connects).

    A bounded probe, so a dead head or tracking server is one clear error instead of a client library's
    minutes of retries."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.timeout:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return str(exc.strerror or exc)
