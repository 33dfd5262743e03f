"""User-facing errors: one line that names the problem and the fix.

CLIs catch :class:`UserError` and print ``error: <message>`` without a traceback;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, bad config)."""


class ConfigError(UserError):
    """Unknown key, wrong type or out-of-range value in a config or search space."""


class DataError(UserError):
    """A dataset that is missing, unreadable or holds a malformed record."""


class CheckpointError(UserError):
    """A checkpoint that is missing, unsafe to load, or from another model."""


class TrackingError(UserError):
    """An MLflow tracking store or server that cannot be reached."""


class ResourceError(UserError):
    """Not enough CPUs/GPUs for what a trial asks for."""


# engine.train's exit status after a SIGTERM checkpoint (EX_TEMPFAIL of sysexits.h: try again, it resumes)
PREEMPTED_EXIT_CODE = 75


class Preempted(Exception):  # noqa: N818 (a state, not a failure: the run is saved and resumes)
    """The trial got a SIGTERM, saved at the next step boundary and stopped; running it again resumes there.

    Not a :class:`UserError`: ``engine.train`` exits with :data:`PREEMPTED_EXIT_CODE` (75), and
    in a sweep the trial fails so that Tune's ``FailureConfig(max_failures)`` retries it from the checkpoint.
    """
