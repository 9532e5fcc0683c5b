"""Exceptions meant for users: one line that names the file or value and says what to do."""

from __future__ import annotations


class GtsrbKitError(Exception):
    """Base of every error gtsrb-kit reports to a user.

    The message is a single line: what is wrong, with which file or value, and what to do.
    The CLI prints it on stderr and exits with ``exit_code``.
    """

    exit_code: int = 1


class DataError(GtsrbKitError):
    """A dataset tree, CSV, image or HDF5 file is missing, malformed or inconsistent."""


class DownloadError(GtsrbKitError):
    """An archive could not be fetched, verified or extracted."""


class ConfigError(GtsrbKitError):
    """An option, plan or argument has a value gtsrb-kit cannot use."""

    exit_code = 2
