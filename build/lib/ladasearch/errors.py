"""User-facing errors.

A :class:`LadaError` means the user asked for something that cannot be done
(bad value, missing file, unreachable target).  The CLI prints its message on
one line and exits with code 2; library callers can catch it like a ValueError.
"""


class LadaError(ValueError):
    """An error caused by the user's input, with a message naming the bad value."""
