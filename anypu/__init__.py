"""anypu: run AI models on whatever processors a network of machines has.

Users write ``from anypu import sdk`` and call ``sdk.run(model, inputs)``.
The sub-packages are the architecture: ``protos``, ``devices``, ``agents``,
``scheduler``, ``placement``, ``sdk`` and ``simulations``.
"""

from anypu.errors import (
    AnypuError,
    AuthenticationError,
    ConfigError,
    ExportError,
    InputError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    MemoryExceededError,
    SchedulerUnavailableError,
    UnschedulableError,
)

__version__ = "0.1.0"
PROTOCOL_VERSION = 2  # 2: a job's outcome is one nested message

__all__ = [
    "PROTOCOL_VERSION",
    "AnypuError",
    "AuthenticationError",
    "ConfigError",
    "ExportError",
    "InputError",
    "JobCancelledError",
    "JobFailedError",
    "JobTimeoutError",
    "MemoryExceededError",
    "SchedulerUnavailableError",
    "UnschedulableError",
    "__version__",
]
