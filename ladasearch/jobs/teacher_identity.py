"""Which teacher a search distils from: its folder and a hash of its weights, saved in the spec.

Every trial of a search must distil the same teacher.  A resume gets its teacher again (from the cache, or
by fine-tuning it anew when the cache is elsewhere), so it compares the hash with the saved one and
refuses another teacher unless told to (``allow_other``): mixed teachers make the trials incomparable.
Fine-tuning is seeded, so the same settings give the same weights wherever the cache is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LadaError


@dataclass(frozen=True)
class TeacherIdentity:
    path: str
    sha256: str   # of the state dict: names, dtypes, shapes and bytes, in name order

    @classmethod
    def of(cls, path: str, state: Mapping[str, Any]) -> TeacherIdentity:
        import torch

        digest = hashlib.sha256()
        for name in sorted(state):
            tensor = state[name].detach().cpu().contiguous()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype, bf16 too
        return cls(str(Path(path).resolve()), digest.hexdigest())

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: Any, where: str) -> TeacherIdentity | None:
        if data is None:
            return None  # a spec written before teachers were recorded
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("path", "sha256")):
            raise LadaError(f"{where}: teacher must be an object with string 'path' and 'sha256', got {data!r:.80}")
        return cls(data["path"], data["sha256"])

    def check(self, current: TeacherIdentity, allow_other: bool, log: Callable[[str], None]) -> None:
        """LadaError when ``current`` is another teacher than this one (the saved) and that is not allowed."""
        if current.sha256 == self.sha256:
            if current.path != self.path:
                log(f"teacher: the same weights as the search's, now at {current.path} (was {self.path})")
            return
        if not allow_other:
            raise LadaError(f"the teacher is not the one this search started with (weights {current.sha256[:12]}, "
                            f"the search's {self.sha256[:12]}); restore it or pass --allow-other-teacher to mix "
                            f"teachers in one search (teacher now at {current.path})")
        log(f"teacher: another teacher than the search started with ({current.sha256[:12]} at {current.path}, "
            f"was {self.sha256[:12]} at {self.path}), allowed by --allow-other-teacher")
