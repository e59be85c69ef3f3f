"""Development tools shared by the tests and the benchmarks."""

from assistant.environment import (
    QUIET_OFFLINE as QUIET_ENV,
)  # servers and models started by tests and benchmarks

__all__ = ["QUIET_ENV"]
