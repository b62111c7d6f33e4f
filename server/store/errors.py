"""Storage errors: what every store raises when it cannot do what was asked, naming the condition.

A store never reports a failed write as a success: the write's own caller gets a :class:`StorageError`, and
nothing of that write is kept. The message is for the client as it is (no file paths, no stored text); the
store logs the location beside it for the operator. :class:`StoreUnavailable` is the start-up form, for the
operator: it names the database and the reason in one line.

Conditions (:attr:`StorageError.condition`): ``disk full``, ``read-only``, ``permission denied``, ``locked``,
``I/O error``, ``corrupt``, ``cannot open``, ``invalid text`` (a string that is not valid Unicode, such as a lone
surrogate), ``conflict`` (a record with that key exists), ``closed`` (the store is shutting down), ``error``.
SQLite's result codes are read from ``sqlite3.Error.sqlite_errorname`` (https://www.sqlite.org/rescode.html),
operating-system errors from ``errno``.
"""

from __future__ import annotations

import errno

from server.errors import OrchestrationError

_EXPLAINED = {
    "disk full": "the server's storage is full",
    "read-only": "the server's storage is read-only",
    "permission denied": "the server may not write its storage",
    "locked": "the server's database is locked by another process",
    "I/O error": "the server's storage failed with an I/O error",
    "corrupt": "the server's database is damaged",
    "cannot open": "the server cannot open its database",
    "invalid text": "the text is not valid Unicode (for example a lone surrogate) and cannot be stored",
    "conflict": "a record with that key exists",
    "closed": "the store is closed (the server is shutting down)",
    "error": "the store failed",
}
# SQLite primary result code names -> condition (extended codes such as SQLITE_IOERR_WRITE start with these).
_SQLITE = (("SQLITE_FULL", "disk full"), ("SQLITE_READONLY", "read-only"), ("SQLITE_PERM", "permission denied"),
           ("SQLITE_AUTH", "permission denied"), ("SQLITE_BUSY", "locked"), ("SQLITE_LOCKED", "locked"),
           ("SQLITE_IOERR", "I/O error"), ("SQLITE_CORRUPT", "corrupt"), ("SQLITE_NOTADB", "corrupt"),
           ("SQLITE_CANTOPEN", "cannot open"), ("SQLITE_CONSTRAINT", "conflict"))
_ERRNO = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk full", errno.EROFS: "read-only",
          errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EIO: "I/O error",
          errno.ENOENT: "cannot open", errno.ENOTDIR: "cannot open", errno.EISDIR: "cannot open",
          errno.EEXIST: "cannot open"}


def explained(condition: str) -> str:
    """``condition`` in a client's words, named at the end: ``the server's storage is full (disk full)``."""
    return f"{_EXPLAINED.get(condition, _EXPLAINED['error'])} ({condition})"


class StorageError(OrchestrationError):
    """A store operation failed; a failed write kept nothing.

    Attributes:
        condition: one of the module's conditions (``disk full``, ``read-only``, ``locked`` …).
        what: what was being stored or read (``the conversation turns``).
    """

    def __init__(self, condition: str, what: str, *, write: bool = True) -> None:
        super().__init__(f"could not {'store' if write else 'read'} {what}: {explained(condition)}")
        self.condition = condition
        self.what = what

    @classmethod
    def of(cls, exc: BaseException, what: str, *, write: bool = True) -> StorageError:
        """The storage error for ``exc`` (raise it ``from exc``)."""
        if isinstance(exc, StorageError):
            return exc
        return cls(condition_of(exc), what, write=write)


class StoreUnavailable(StorageError):
    """The store could not be opened at start-up: names the database and the reason, in one line.

    Attributes:
        location: the database file (or a URL without its password).
    """

    def __init__(self, location: str, exc: BaseException) -> None:
        condition = condition_of(exc)
        reason = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).splitlines()[0]
        OrchestrationError.__init__(self, f"cannot open the database {location}: {reason} ({condition})")
        self.condition, self.what, self.location = condition, "the database", location


# PostgreSQL SQLSTATE codes (https://www.postgresql.org/docs/current/errcodes-appendix.html), longest prefix first.
_SQLSTATE = (("53100", "disk full"), ("25006", "read-only"), ("42501", "permission denied"), ("55P03", "locked"),
             ("40P01", "locked"), ("23", "conflict"), ("22021", "invalid text"), ("22P05", "invalid text"),
             ("58", "I/O error"), ("XX001", "corrupt"), ("XX002", "corrupt"), ("08", "cannot open"),
             ("57P", "cannot open"), ("3D000", "cannot open"), ("28", "permission denied"))


def condition_of(exc: BaseException) -> str:
    """The storage condition ``exc`` stands for (``error`` when it is none of the known ones)."""
    if isinstance(exc, StorageError):
        return exc.condition
    if isinstance(exc, UnicodeError):
        return "invalid text"
    sqlstate = getattr(exc, "sqlstate", None)  # a PostgreSQL error (psycopg)
    if isinstance(sqlstate, str):
        return next((condition for prefix, condition in _SQLSTATE if sqlstate.startswith(prefix)), "error")
    if type(exc).__name__ == "DataError" and "NUL" in str(exc):  # psycopg refuses NUL in text before sending it
        return "invalid text"
    name = getattr(exc, "sqlite_errorname", None)
    if isinstance(name, str):
        for prefix, condition in _SQLITE:
            if name.startswith(prefix):
                return condition
    if isinstance(exc, OSError) and exc.errno in _ERRNO:
        return _ERRNO[exc.errno]
    return "error"


STORAGE_FAILURES: tuple[type[BaseException], ...] = (OSError, UnicodeError)
"""Exceptions (besides the database driver's own) that mean the storage failed, not the code."""
