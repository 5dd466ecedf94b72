"""User-facing errors.

A :class:`LadaError` means the user asked for something that cannot be done
(bad value, missing file, unreachable target).  The CLI prints its message on
one line and exits with code 2; library callers can catch it like a ValueError.
"""


class LadaError(ValueError):
    """An error caused by the user's input, with a message naming the bad value."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, short enough for one `error:` line."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
