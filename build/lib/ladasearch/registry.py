"""One registry for every kind of plug-in (factorizers, pruning scores, unit scores, compression methods), and
the entry points that bring plug-ins from other packages into every process.

A plug-in is named by a spec: ``"name"``, or ``"name:key=value,key=value"`` for constructor arguments (values
read as Python literals, else kept as text), or a mapping ``{"name": ..., key: value}`` (search-space YAML).
``canonical`` turns any of them into the one string a config, an Optuna choice and an MLflow param hold.

Plug-ins from another package register themselves when the module named by an entry point of the group
``ladasearch.plugins`` is imported (or call the function it names)::

    # the plug-in package's pyproject.toml
    [project.entry-points."ladasearch.plugins"]
    mine = "my_package.ladasearch_plugins"

``load_plugins`` imports them: the CLI does before any command, and every Ray worker before its trial, so a
name given on the command line resolves in the workers too.
"""

from __future__ import annotations

import ast
import importlib.metadata
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from .errors import LadaError

T = TypeVar("T")
ENTRY_POINT_GROUP = "ladasearch.plugins"


def parse_spec(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, constructor arguments)`` of a spec; LadaError naming what is malformed."""
    if isinstance(spec, Mapping):
        if not isinstance(spec.get("name"), str) or not spec["name"]:
            raise LadaError(f"a plug-in spec mapping needs a string 'name', got {dict(spec)!r:.80}")
        return spec["name"], {k: v for k, v in spec.items() if k != "name"}
    if not isinstance(spec, str) or not spec.strip():
        raise LadaError(f"a plug-in spec is a name or 'name:key=value,...', got {spec!r:.80}")
    name, _, args = spec.strip().partition(":")
    kwargs: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in args.split(","))):
        key, equals, text = part.partition("=")
        if not equals or not key.strip().isidentifier():
            raise LadaError(f"plug-in spec {spec!r}: {part!r} is not key=value")
        try:
            kwargs[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            kwargs[key.strip()] = text.strip()
    return name.strip(), kwargs


def canonical(spec: str | Mapping[str, Any]) -> str:
    """The spec as one string, its arguments in name order: ``"activation"``, ``"mine:alpha=0.5,k=2"``."""
    name, kwargs = parse_spec(spec)
    return name + (":" + ",".join(f"{k}={kwargs[k]!r}" if isinstance(kwargs[k], str) else f"{k}={kwargs[k]}"
                                  for k in sorted(kwargs)) if kwargs else "")


class Registry(Generic[T]):
    """Plug-ins of one kind by name: classes (built with the spec's arguments) or ready instances.

    A name is registered once: another class under a taken name is refused (registering the same class again,
    as a re-imported module does, is a no-op)."""

    def __init__(self, kind: str, base: type):
        self.kind, self.base = kind, base
        self._entries: dict[str, Any] = {}

    def register(self, entry):
        """Register a subclass of ``base`` (usable as a decorator) or an instance of it; returns it."""
        is_class = isinstance(entry, type)
        if not (issubclass(entry, self.base) if is_class else isinstance(entry, self.base)):
            raise LadaError(f"a {self.kind} must be a {self.base.__name__}, got {entry!r:.80}")
        name = getattr(entry, "name", "")
        if not isinstance(name, str) or not name or ":" in name or "," in name:
            raise LadaError(f"a {self.kind} needs a non-empty `name` without ':' or ',', "
                            f"{getattr(entry, '__name__', entry)!r} has {name!r}")
        taken = self._entries.get(name)
        if taken is not None and not _same(taken, entry):
            raise LadaError(f"{self.kind} {name!r} is registered already (by {_where(taken)}); "
                            f"{_where(entry)} needs another name")
        self._entries[name] = entry
        return entry

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def entry(self, spec: str | Mapping[str, Any]):
        """The registered class or instance a spec names (LadaError listing the registered names)."""
        return self._named(parse_spec(spec)[0])

    def _named(self, name: str):
        if name not in self._entries:
            raise LadaError(f"unknown {self.kind} {name!r}; allowed: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def create(self, spec: str | Mapping[str, Any]) -> T:
        """The plug-in a spec names, built with its arguments."""
        name, kwargs = parse_spec(spec)
        entry = self._named(name)
        if not isinstance(entry, type):
            if kwargs:
                raise LadaError(f"{self.kind} {name!r} takes no arguments, got {sorted(kwargs)}")
            return entry
        try:
            return entry(**kwargs)
        except TypeError as exc:
            raise LadaError(f"{self.kind} {name!r} does not take the arguments {kwargs}: {exc}") from None


def _same(a, b) -> bool:
    # a module imported again (pytest's rootdir, a worker) defines an equal class: same module and name
    if a is b:
        return True
    return (isinstance(a, type) and isinstance(b, type) and a.__module__ == b.__module__
            and a.__qualname__ == b.__qualname__)


def _where(entry) -> str:
    cls = entry if isinstance(entry, type) else type(entry)
    return f"{cls.__module__}.{cls.__qualname__}"


_loaded: dict[str, str] = {}


def load_plugins(log: Callable[[str], None] | None = None) -> dict[str, str]:
    """Import every ``ladasearch.plugins`` entry point once per process; ``{entry point: value}`` loaded.

    An entry point that fails to load is a LadaError naming it: a plug-in a run may name must not go
    missing silently in one process and not another."""
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _loaded:
            continue
        try:
            target = ep.load()
            if callable(target) and not isinstance(target, type):
                target()
        except LadaError:
            raise
        except Exception as exc:  # noqa: BLE001  (any import error of someone else's package)
            raise LadaError(f"plug-in entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP!r} "
                            f"failed to load: {type(exc).__name__}: {exc}") from None
        _loaded[ep.name] = ep.value
        if log is not None:
            log(f"plug-in {ep.name}: {ep.value}")
    return dict(_loaded)
