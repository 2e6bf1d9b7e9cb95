"""Errors that the CLI turns into one clear message and a non-zero exit (no traceback)."""

from __future__ import annotations


class MfrayError(Exception):
    """Base of every user-facing error: the message says what is wrong and where."""


class SpecError(MfrayError):
    """A spec file is missing, unreadable, or has unknown keys or bad values."""


class DataError(MfrayError):
    """An input data file cannot be read or lacks what its spec says it has."""
