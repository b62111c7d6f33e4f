"""Where the server's state lives: a SQLite file (the default) or a PostgreSQL database named by a URL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True, slots=True)
class PostgresDatabase:
    """A PostgreSQL database named by a ``postgresql://user:password@host:port/name?…`` URL (libpq's URI form,
    https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING-URIS).

    ``str()`` gives the URL with its password replaced by ``***``, so printing or logging one never shows it;
    :attr:`url` is the real one, for connecting.
    """

    url: str

    @property
    def password(self) -> str | None:
        """The URL's password (percent-decoded), if it has one."""
        password = urlsplit(self.url).password
        return unquote(password) if password else None

    @property
    def redacted(self) -> str:
        """The URL without its password."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[1]
        return parts._replace(netloc=f"{user}:***@{host}").geturl()

    def __str__(self) -> str:
        return self.redacted


DatabaseLocation = Path | PostgresDatabase
"""Where the server's state lives: a SQLite file (the default) or a PostgreSQL database (the team deployment)."""


def parse_database(text: str) -> DatabaseLocation:
    """A ``postgresql://`` (or ``postgres://``) URL as a :class:`PostgresDatabase`, anything without ``://`` as a
    SQLite file path.

    Raises:
        ValueError: a URL of any other scheme (``mysql://``, ``sqlite://`` …), or a PostgreSQL URL without a host
            or database name.
    """
    if "://" not in text:
        return Path(text).expanduser()
    scheme = text.split("://", 1)[0].lower()
    if scheme not in POSTGRES_SCHEMES:
        raise ValueError(f"unsupported database URL scheme {scheme!r}: give a SQLite file path, or a "
                         "postgresql://user:password@host:port/database URL")
    parts = urlsplit(text)
    if not parts.hostname or not parts.path.strip("/"):
        raise ValueError("a PostgreSQL URL needs a host and a database name: "
                         "postgresql://user:password@host:port/database")
    return PostgresDatabase(text)
