"""The command line: ``commands`` (the ``ladasearch`` group: run, resume, compress, ui, ...), ``export``
(export, report, measure), ``deploy`` (export-model), ``common`` (the options and one-line errors they share).

The top layer: nothing in the package imports it.  ``main`` loads on first use, so the console entry
(``ladasearch.entry``) can answer ``--help`` and ``--version`` without torch.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "main":
        from .commands import main  # on first use: the commands load torch and transformers

        return main
    raise AttributeError(f"module 'ladasearch.cli' has no attribute {name!r}")
