"""Reading a search-space YAML file within bounds.

A space file is a few hundred bytes.  Unbounded, a 572-byte file of nested aliases (a "billion laughs")
expands to gigabytes, and a 50 MB file is parsed for minutes, copied into the spec and MLflow, and echoed
in a 36 MB error line.  So the file is capped at ``MAX_BYTES`` and aliases (``*name``) are refused where
they occur; nothing in a space needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import LadaError

MAX_BYTES = 1 << 20
MAX_DEPTH = 20   # a space nests 3-4 levels; deeper input would reach Python's recursion limit in the composer


class _NoAliases(yaml.SafeLoader):
    """YAML's safe loader, refusing every alias instead of expanding it, and nesting deeper than ``MAX_DEPTH``."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} is not allowed in a search space "
                                              f"(write the value out)", event.start_mark)
        depth = getattr(self, "_depth", 0)
        if depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nesting deeper than {MAX_DEPTH} levels is not allowed "
                                              f"in a search space", self.peek_event().start_mark)
        self._depth = depth + 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path`` (LadaError for a file over ``MAX_BYTES`` or not UTF-8; yaml.YAMLError
    with its line for bad YAML or an alias)."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise LadaError(f"search space {path} is {size:,} bytes; a space file may have at most "
                            f"{MAX_BYTES:,} bytes")
        raw = path.read_bytes()
    except OSError as exc:
        raise LadaError(f"cannot read search space {path} ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LadaError(f"search space {path} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return yaml.load(text, Loader=_NoAliases)  # noqa: S506 - a SafeLoader subclass
