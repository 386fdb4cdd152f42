"""Errors raised by the history store (all user-facing :class:`GonioError` subclasses)."""

from gonio.core.errors import GonioError


class HistoryError(GonioError):
    """Something about the session history cannot be done or read."""


class NoSessionError(HistoryError):
    """The folder holds no gonio session (and creating one was not asked for)."""


class CorruptHistoryError(HistoryError):
    """The history database or a stored artifact is unreadable or damaged."""


class NewerHistoryError(HistoryError):
    """The history was written by a newer gonio with a schema this one cannot read."""


class MissingBlobError(CorruptHistoryError):
    """A step refers to an artifact whose file is not in the blob store."""


class NoSuchStepError(HistoryError):
    """A step number that is not in the history."""


class NoSuchArtifactError(HistoryError):
    """A step has no artifact of the requested name."""


class NothingToUndoError(HistoryError):
    """``undo`` at the start of the session."""


class NothingToRedoError(HistoryError):
    """``redo`` at a step without later steps."""


class ReadOnlyHistoryError(HistoryError):
    """A change to a session opened read-only (or in a folder that is not writable)."""


class WriteFailedError(HistoryError):
    """A step could not be written (disk full, file size limit, I/O error)."""


class ForgetRefusedError(HistoryError):
    """``forget`` of a step the current head descends from."""


class UnsafeArtifactError(CorruptHistoryError):
    """A stored artifact holds something other than the data gonio writes (e.g. a pickle)."""
