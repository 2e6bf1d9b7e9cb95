"""Errors that the CLI turns into one clear message and a non-zero exit (no traceback)."""

from __future__ import annotations

import contextlib
import errno
import re
from collections.abc import Iterator


class MfrayError(Exception):
    """Base of every user-facing error: the message says what is wrong and where."""


class SpecError(MfrayError):
    """A spec file is missing, unreadable, or has unknown keys or bad values."""


class DataError(MfrayError):
    """An input data file cannot be read or lacks what its spec says it has."""


class StorageError(MfrayError):
    """The storage refused a write or read: full, read-only, no permission, a file where a folder goes."""


#: errors of the storage itself (not of mfray's code), as people read them
_STORAGE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                   errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                   errno.EROFS: "the file system is read-only", errno.ENOTDIR: "a part of the path is a file, not a folder",
                   errno.EISDIR: "is a folder, expected a file", errno.ENAMETOOLONG: "the file name is too long"}


def storage_error(e: BaseException, where: object = None) -> StorageError | None:
    """A :class:`StorageError` for an OSError of the storage, naming its path (the error's own file
    name, else ``where``); None for other errors (they keep their traceback: a bug to report).

    pyarrow's write errors carry the errno only in their text ("[errno 28] No space left on device")."""
    if not isinstance(e, OSError):
        return None
    code = e.errno if isinstance(e.errno, int) else None
    if code is None:
        m = re.search(r"\[errno (\d+)\]", str(e), re.IGNORECASE)
        code = int(m.group(1)) if m else None
    what = _STORAGE_ERRNOS.get(code) if code is not None else None
    if what is None:
        return None
    path = e.filename if e.filename is not None else where
    place = f"{path}: " if path is not None else ""
    advice = (" Finished work is kept: free some space and run the same command again."
              if code in (errno.ENOSPC, errno.EDQUOT) else "")
    detail = e.strerror or str(e)
    return StorageError(f"{place}{what} ({detail}).{advice}")


@contextlib.contextmanager
def storage_errors(where: object) -> Iterator[None]:
    """Turn storage OSErrors raised inside into :class:`StorageError` naming ``where`` when the
    system names no file."""
    try:
        yield
    except OSError as e:
        err = storage_error(e, where)
        if err is None:
            raise
        raise err from None
