"""User-facing errors."""


class GonioError(Exception):
    """A user-facing error: one clear paragraph saying what is wrong and what to do."""
