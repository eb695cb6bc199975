"""Exceptions shared by every face of the package (CLI exit codes hang off these)."""

from __future__ import annotations


class DkpError(Exception):
    """Base class for errors this package raises on purpose."""


class InputError(DkpError, ValueError):
    """Bad user input: a file that is missing, malformed, inconsistent or of an unknown kind (CLI exit 2)."""

    def __init__(self, message: str, path: object | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ValidationFailed(DkpError):
    """A converted model does not compute what its source computes (CLI exit 1)."""
