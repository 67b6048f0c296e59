"""User-facing errors: one line that says what is wrong and how to fix it."""


class KPruneError(Exception):
    """An error caused by the user's input or environment, shown without a traceback."""
