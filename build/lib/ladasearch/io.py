"""Writing files that other processes may read at any moment, keeping a command's output off what it reads,
and probing a server before relying on it."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import LadaError


def umask() -> int:
    """The process's file-creation mask (reading it means setting it: set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def refuse_source_overlap(out: str | Path, sources: Iterable[str | Path | None], option: str = "--out") -> None:
    """Raise LadaError when the output folder ``out`` is one of ``sources``, lies inside one, or holds one.

    A command writes (and with --overwrite replaces) its output folder, so output there would destroy the
    model or summaries it reads, and --overwrite must not make that possible.  Paths are compared resolved
    (symlinks, ``..``); a source that is no existing path (a hub model name, a search name) cannot collide.
    Call it before loading anything, so a refused command costs nothing.
    """
    target = Path(out).expanduser().resolve()
    for source in sources:
        if not source or not Path(source).expanduser().exists():  # '' would be the working folder
            continue
        src = Path(source).expanduser().resolve()
        if target == src:
            where = "is"
        elif src in target.parents:
            where = "lies inside"
        elif target in src.parents:
            where = "holds"
        else:
            continue
        raise LadaError(f"{option} {str(out)!r} {where} the source {str(source)!r}: the output would overwrite what "
                        f"it is made from, which no option allows; give {option} a folder outside it")


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


# HTTP/2's connection preface and an empty SETTINGS frame: a gRPC server (Ray's GCS) answers with its own SETTINGS
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS = 4


def grpc_unanswered(host: str, port: int, timeout: float) -> str | None:
    """Why ``host:port`` does not answer as a gRPC server within ``timeout`` seconds (None: it does).

    A port that accepts TCP but is not gRPC (a web server, a hung process) passes a TCP probe, and Ray's client
    then blocks for many minutes; an HTTP/2 server's first frame is its SETTINGS, within a round trip."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(HTTP2_PREFACE)
            head = b""
            while len(head) < 9:
                conn.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    return "it closed the connection without an HTTP/2 answer" if not head else \
                        "it answered, but not as a gRPC server"
                head += chunk
    except socket.timeout:
        return f"it accepted a connection but gave no gRPC answer within {timeout:g} s"
    except OSError as exc:
        return str(exc.strerror or exc)
    return None if head[3] == _SETTINGS else "it answered, but not as a gRPC server (not HTTP/2)"
