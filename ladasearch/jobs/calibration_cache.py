"""Calibration statistics gathered once per teacher and data, cached beside the teacher, reused by later runs.

Where an entry lives:
    a teacher of the cache (``<cache>/teachers/<key>/``)   ``<that folder>/calibration/<key>/<needs>/``
    a teacher folder the user gave (``--teacher DIR``)    ``<cache>/calibration/<key>/<needs>/``; the key then
                                                          holds the sha256 of the teacher's weights (the user's
                                                          folder is never written to)
The key covers what changes the numbers: the train rows (their fingerprint), ``max_length``, the number of
batches, the batch size and the seed of the batch draw.  The statistics gathered (``needs``) name the entry
inside a key, and an entry gathered for more serves a request for fewer (``CalibrationStats.covers``): the
union a search gathers also serves a later ``compress`` with one of its plug-ins.

The statistics are float32 whatever the training precision (``collect_statistics`` runs the teacher without
autocast), so bf16 runs share the entries of fp32 runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError

from ..compress import calibration
from ..compress.calibration import CalibrationStats
from ..errors import LadaError
from .teacher import Teacher, default_cache_dir
from .teacher_identity import TeacherIdentity

if TYPE_CHECKING:
    from .pipeline import Prepared

_KEY_FORMAT = 1
_MIB = 2 ** 20


@dataclass(frozen=True)
class CalibrationRequest:
    """How the statistics are drawn: ``batches`` seeded batches of ``batch_size`` train rows of ``max_length``."""

    needs: frozenset[str]
    batches: int
    batch_size: int
    max_length: int
    seed: int = 0

    def describe(self) -> str:
        return f"{', '.join(sorted(self.needs))} from {self.batches} batches of {self.batch_size}"


def _digest(ident: dict) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def cache_folder(teacher: Teacher, train_fingerprint: str, request: CalibrationRequest,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the entries of this teacher, train data and request (entries: one per ``needs``)."""
    root = Path(cache_dir or default_cache_dir())
    draw = {k: v for k, v in asdict(request).items() if k != "needs"}
    ident = {"format": _KEY_FORMAT, "train": train_fingerprint, **draw}
    teacher_folder = Path(teacher.path).resolve()
    if teacher_folder.parent == (root / "teachers").resolve():  # ours: the statistics live beside the teacher
        return teacher_folder / "calibration" / _digest(ident)

    weights = TeacherIdentity.of(str(teacher_folder), teacher.model.state_dict()).sha256
    return root / "calibration" / _digest({**ident, "teacher_sha256": weights})


def _entry_name(needs: frozenset[str]) -> str:
    return "+".join(sorted(needs))


def _cached(folder: Path, needs: frozenset[str], log: Callable[[str], None]) -> CalibrationStats | None:
    """The smallest entry of ``folder`` that covers ``needs`` (None: none, or none readable)."""
    entries = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else ():
        try:
            have = frozenset(json.loads((entry / "statistics.json").read_text())["needs"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a partial write of another process, or not an entry
        if needs <= have:
            entries.append((len(have), entry))
    for _, entry in sorted(entries):
        try:
            return CalibrationStats.load(entry)
        except (LadaError, OSError, ValueError, KeyError, SafetensorError) as exc:
            log(f"calibration: the cached statistics in {entry} are unreadable ({exc}); gathering them anew")
    return None


def _store(stats: CalibrationStats, folder: Path, log: Callable[[str], None]) -> Path | None:
    """Write ``stats`` as the entry of its needs: complete or not at all (written aside, then renamed)."""
    final = folder / _entry_name(stats.needs)
    partial = folder / f".partial-{os.getpid()}-{final.name}"
    try:
        shutil.rmtree(partial, ignore_errors=True)
        stats.save(partial)
        if final.exists():  # another process finished first; theirs holds the same numbers
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.rename(final)
        return final
    except OSError as exc:  # a read-only cache still gives the run its statistics
        shutil.rmtree(partial, ignore_errors=True)
        log(f"calibration: could not cache the statistics in {folder}: {exc}")
        return None


def cached_statistics(teacher: Teacher, prepared: Prepared, request: CalibrationRequest, device,
                      cache_dir: str | os.PathLike | None = None,
                      log: Callable[[str], None] = print) -> CalibrationStats | None:
    """The statistics ``request`` asks for, from the cache or gathered once (and cached); None when it needs none.

    Gathered on ``device`` from the teacher and ``prepared.train`` by ``calibration.collect_statistics``.
    """
    if not request.needs:
        return None
    folder = cache_folder(teacher, prepared.data.train_fingerprint, request, cache_dir)
    stats = _cached(folder, request.needs, log)
    if stats is not None:
        log(f"calibration: {request.describe()} reused from {folder} ({stats.nbytes() / _MIB:.1f} MiB)")
        return stats
    stats = calibration.collect_statistics(teacher.model, prepared.train, request.needs, batches=request.batches,
                                           batch_size=request.batch_size, device=device, task=prepared.data.task,
                                           seed=request.seed)
    where = _store(stats, folder, log)
    log(f"calibration: {request.describe()} gathered in {stats.seconds:.1f}s ({stats.nbytes() / _MIB:.1f} MiB)"
        + (f", cached in {where.parent}" if where is not None else ""))
    return stats
