"""User-facing errors: one line that says what is wrong and how to fix it."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for the
    parenthesis of a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class KPruneError(Exception):
    """An error caused by the user's input or environment, shown without a traceback."""
