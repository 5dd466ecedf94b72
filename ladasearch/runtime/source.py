"""What `export-model` exports: a compressed model folder and its record, from a folder or from a search.

A SOURCE is
    a folder            written by ``ladasearch compress --out`` (or any ``save_compressed`` folder with a
                        compression record in ``ladasearch.json``)
    a search            its name or its MLflow parent run id: the best model the search logged to the
                        parent run as the artifact ``best_model/`` (downloaded to a scratch folder)
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import LadaError
from ..models import load_tokenizer
from ..serialize import META, saved_summary
from ..summary import TrialSummary
from ..tracking import Tracker, resolve_tracking_uri

BEST_MODEL = "best_model"


@dataclass(frozen=True)
class ModelSource:
    """A ladasearch model folder, its compression record and where it came from (for the model card)."""

    folder: Path
    summary: TrialSummary
    origin: str            # the folder, or "search NAME (MLflow run ID)"


def _from_folder(folder: Path, origin: str) -> ModelSource:
    if not (folder / META).is_file():
        raise LadaError(f"{str(folder)!r} is not a ladasearch model folder (no {META} in it); give a "
                        f"`ladasearch compress --out` folder, a search name or a search's MLflow run id")
    summary = saved_summary(folder)
    if summary is None:
        raise LadaError(f"{folder / META} holds no compression record (summary); the model card needs it")
    return ModelSource(folder, summary, origin)


def _download_best(source: str, tracking_uri: str | None, scratch: Path) -> ModelSource:
    uri = resolve_tracking_uri(tracking_uri, create=False)
    tracker = Tracker.existing(uri)
    parent = tracker.find_search(source)
    if parent is None:
        raise LadaError(f"{source!r} is neither a model folder nor a search (no MLflow parent run with that "
                        f"id or name in {uri})")
    tracker.require_artifacts(parent, parent.name or source)
    try:
        local = tracker.download(parent.run_id, BEST_MODEL, scratch)
    except Exception as exc:  # noqa: BLE001 - MLflow raises several kinds for a missing artifact
        raise LadaError(f"search {source!r} (MLflow run {parent.run_id}) has no {BEST_MODEL}/ artifact "
                        f"({type(exc).__name__}); did any trial finish?") from None
    return _from_folder(Path(local), f"search {parent.name or source} (MLflow run {parent.run_id})")


def _unpinned(tokenizer):
    """The tokenizer without the fixed padding/truncation a training run left in its saved state."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_padding()
        backend.no_truncation()
    return tokenizer


def source_tokenizer(source: ModelSource):
    """The tokenizer saved with the model, else the teacher's, else the base model's (all offline-capable)."""

    if (source.folder / "tokenizer_config.json").is_file():
        return _unpinned(load_tokenizer(str(source.folder)))
    for name in (source.summary.teacher, source.summary.model):
        if name and (not Path(name).is_absolute() or Path(name).is_dir()):
            with contextlib.suppress(LadaError):
                return _unpinned(load_tokenizer(name))
    raise LadaError(f"{source.origin} has no tokenizer saved with it, and neither its teacher "
                    f"({source.summary.teacher}) nor its base model ({source.summary.model}) gives one")


@contextlib.contextmanager
def open_source(source: str | Path, tracking_uri: str | None = None) -> Iterator[ModelSource]:
    """The model of SOURCE (see the module docstring); a downloaded one lives until the block ends."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        yield _from_folder(path, str(path))
        return
    if path.exists():
        raise LadaError(f"{text!r} is a file; give a model folder, a search name or a search's MLflow run id")
    if "/" in text or "\\" in text or text.startswith(".") or not text:
        raise LadaError(f"{text!r} is not a folder (no such folder) nor a search name")
    with tempfile.TemporaryDirectory(prefix="ladasearch-best-model-") as scratch:
        yield _download_best(text, tracking_uri, Path(scratch))
