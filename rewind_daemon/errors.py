"""The one user-facing exception type and the exit codes it carries."""

from __future__ import annotations

EXIT_OK = 0
EXIT_PROBLEM = 1  # the operation found a problem (diff differs, guard halted, ...)
EXIT_USAGE = 2  # usage or bad input
EXIT_INCOMPLETE = 3  # a rollback or restore could not complete


class RwError(Exception):
    """An error meant for the user: one line, with an exit code."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class NotFound(RwError):
    """A session, step or other named thing does not exist."""


class DaemonUnavailable(RwError):
    """The daemon could not be reached or started."""

    exit_code = EXIT_PROBLEM


class StoreBusy(RwError):
    """Another process holds the store's write lock for longer than we wait."""

    exit_code = EXIT_PROBLEM

    def __init__(self) -> None:
        super().__init__("the store is busy (another rw is writing); try again")


class StoreError(RwError):
    """The store is unreadable, corrupt or of a newer schema."""

    exit_code = EXIT_PROBLEM
