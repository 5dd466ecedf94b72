"""``python -m ladasearch.cli``: the same commands as the ``ladasearch`` console script."""

from .commands import main

main()
