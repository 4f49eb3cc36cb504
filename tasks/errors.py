"""Project exceptions.

Every error a user can cause or fix derives from :class:`SegmentsError`; its message is one line that
says what was wrong and what to change. The CLI prints that line and exits non-zero. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class SegmentsError(Exception):
    """An error with a one-line, user-facing message."""


class ConfigurationError(SegmentsError):
    """A setting has a bad value; the message names the environment variable or option to fix."""


class SourceError(SegmentsError):
    """The transaction source is missing, mis-mapped or has an unusable column type."""


class EmptySourceError(SegmentsError):
    """The source holds no rows usable for the requested window."""


class DatabaseUnavailableError(SegmentsError):
    """The database cannot be reached (refused, unknown host, bad credentials). Usually transient."""


class LockTimeoutError(SegmentsError):
    """The write waited too long for a lock another session holds on an output table; nothing was
    written. Usually transient (a long BI query): retried."""


class IndexBuildInProgressError(SegmentsError):
    """Another session is building the covering index of the same source; wait for it."""


class ExtractTimeoutError(SegmentsError):
    """The database stopped the extract's aggregation at its time limit; nothing was written."""


class ModelError(SegmentsError):
    """The data cannot be segmented as asked (e.g. fewer customers than segments)."""


class DataGateError(SegmentsError):
    """The input looks wrong (too many rejected rows, too many customers gone); nothing was written."""


class OutputCheckError(SegmentsError):
    """The rows about to be committed break an output check; the transaction was rolled back."""


class PublishError(SegmentsError):
    """The outputs were written (the run succeeded) but its report, artifacts or event failed."""
