"""User-facing errors.

Every problem a user can cause (a wrong file, a broken model bundle, a device
that is not there) raises a subclass of :class:`ProstateKDError` with a
one-line message that says what is wrong. The command line prints that line
(no traceback) and exits with the class's ``exit_code``.
"""

from __future__ import annotations


class ProstateKDError(Exception):
    """Base class of all errors meant to be shown to a user as one line."""

    exit_code: int = 1


class UsageError(ProstateKDError):
    """The command line is inconsistent (a bad option value, a missing argument)."""

    exit_code = 2


class InputError(ProstateKDError):
    """The input image is missing, unreadable or not a usable 3D MRI volume."""

    exit_code = 3


class OutputError(ProstateKDError):
    """The output cannot be written (folder missing, file exists, bad suffix)."""

    exit_code = 4


class BundleError(ProstateKDError):
    """A model bundle is missing, incomplete or does not match its network."""

    exit_code = 5


class DeviceError(ProstateKDError):
    """The requested compute device is not available."""

    exit_code = 6


class ConfigError(ProstateKDError):
    """A configuration file is invalid (the message names the offending key)."""

    exit_code = 7


class DataError(ProstateKDError):
    """A training data set is malformed (the message names the case)."""

    exit_code = 8


class CancelledError(ProstateKDError):
    """The user cancelled a long-running operation."""

    exit_code = 130


class UsageError(ProstateKDError):
    """The command line is inconsistent (options that do not go together)."""

    exit_code = 2


def error_for_exit_code(code: int | None, message: str) -> ProstateKDError:
    """The error class of ``prostatekd``'s exit ``code`` (``ProstateKDError`` for an unknown one), with ``message``.

    The instance's ``exit_code`` is ``code`` (so a child's status is passed on unchanged).
    """
    classes = (UsageError, InputError, OutputError, BundleError, DeviceError, ConfigError, DataError, CancelledError)
    error_class = next((c for c in classes if c.exit_code == code), ProstateKDError)
    error = error_class(message)
    if code is not None:
        error.exit_code = int(code)
    return error
