"""Every error anypu raises to a user, in one place.

::

    AnypuError                      base of everything below
    ├── ExportError                 the model cannot be turned into a portable artifact
    ├── InputError                  inputs are not tensors or do not fit the model
    ├── ConfigError                 a flag, file or setting is wrong (devices.yaml, network.yaml, …)
    ├── SchedulerUnavailableError   no scheduler answers at the configured address
    ├── AuthenticationError         the token was refused
    ├── UnschedulableError          no device in the network can hold the job (per-node reasons)
    │   └── DeadlineUnreachableError  none is predicted to finish it within its deadline_ms
    ├── JobFailedError              the model raised while running; carries the remote text
    │   └── MemoryExceededError     it used more memory than its share; its agent stopped it
    ├── JobCancelledError           the job was cancelled before it finished
    └── JobTimeoutError             waiting for the job's result took longer than asked

Each message says what was wrong and what to change.  The command line prints the
message (never a traceback) and exits with status 2.
"""

from __future__ import annotations

__all__ = [
    "AnypuError",
    "AuthenticationError",
    "ConfigError",
    "DeadlineUnreachableError",
    "ExportError",
    "InputError",
    "JobCancelledError",
    "JobFailedError",
    "JobTimeoutError",
    "MemoryExceededError",
    "SchedulerUnavailableError",
    "UnschedulableError",
]


class AnypuError(Exception):
    """Base class of every error anypu raises on purpose."""


class ExportError(AnypuError):
    """The model could not be exported to a portable artifact."""


class InputError(AnypuError, TypeError):
    """The inputs are not tensors, or do not match what the model accepts."""


class ConfigError(AnypuError, ValueError):
    """A command-line flag, configuration file or setting is invalid."""


class SchedulerUnavailableError(AnypuError, ConnectionError):
    """No scheduler answered at the configured address."""


class AuthenticationError(AnypuError, PermissionError):
    """The scheduler refused the token."""


class UnschedulableError(AnypuError):
    """No device in the network can hold the job.

    ``reasons`` maps each node id to why it was rejected.
    """

    def __init__(self, message: str, reasons: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reasons = dict(reasons or {})


class DeadlineUnreachableError(UnschedulableError):
    """No device is predicted to finish the job within its ``deadline_ms``: it failed at
    once instead of running late. The message names the best prediction and its parts
    (``best is edge-1/cpu0 (edge) at 84 ms: 31 ms network from home, 53 ms compute``);
    ``reasons`` maps that node to the same. Pass ``best_effort=True`` to run such a job
    where it finishes first anyway.
    """


class JobFailedError(AnypuError):
    """The job ran and the model raised.

    ``remote_type`` is the exception's class name on the worker and
    ``remote_traceback`` its formatted traceback there.
    """

    def __init__(
        self, message: str, remote_type: str = "", remote_traceback: str = "", job_id: str = ""
    ) -> None:
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
        self.job_id = job_id


class JobCancelledError(AnypuError):
    """The job was cancelled before it produced a result."""


class JobTimeoutError(AnypuError, TimeoutError):
    """The job did not finish within the time the caller allowed."""


class MemoryExceededError(JobFailedError):
    """The job used more memory than its share of the device, and its agent stopped it
    before its neighbours were harmed. The message says how much of how much, where."""
