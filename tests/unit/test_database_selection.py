"""Choosing the database: a SQLite file by default, PostgreSQL by URL from the flag, the environment or the file;
any other URL scheme refused; the password never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.app.assembly import open_store
from server.app.cli import main
from server.config import PostgresDatabase, database_path, load_config
from server.errors import ConfigError

URL = "postgresql://team:s3cr3t-pw@db.internal:5432/orchestration"


def test_sqlite_stays_the_default_and_a_postgres_url_selects_postgres_from_each_source(tmp_path: Path) -> None:
    config = load_config(None, {})
    assert database_path(config, {"HOME": str(tmp_path)}) == tmp_path / ".local/share/ai-orchestration-mcp/state.db"
    assert database_path(config, {}, URL) == PostgresDatabase(URL)
    assert database_path(config, {"AI_ORCHESTRATION_DB": "postgres://u@h/d"}) == PostgresDatabase("postgres://u@h/d")
    path = tmp_path / "c.toml"
    path.write_text(f'[server]\ndatabase = "{URL}"\n')
    assert database_path(load_config(path, {}), {}) == PostgresDatabase(URL)
    assert database_path(load_config(path, {}), {}, str(tmp_path / "x.db")) == tmp_path / "x.db"  # flag first


@pytest.mark.parametrize("value", ["mysql://u:p@h/d", "sqlite:///tmp/x.db", "http://h/d"])
def test_other_url_schemes_are_refused_naming_the_scheme_and_the_source(value: str, tmp_path: Path) -> None:
    scheme = value.split("://")[0]
    with pytest.raises(ConfigError, match=rf"--database: unsupported database URL scheme '{scheme}'"):
        database_path(load_config(None, {}), {}, value)
    with pytest.raises(ConfigError, match="AI_ORCHESTRATION_DB: unsupported"):
        database_path(load_config(None, {}), {"AI_ORCHESTRATION_DB": value})
    path = tmp_path / "c.toml"
    path.write_text(f'[server]\ndatabase = "{value}"\n')
    with pytest.raises(ConfigError, match="server.database: .*unsupported database URL scheme"):
        load_config(path, {})


def test_a_postgres_url_needs_a_host_and_a_database() -> None:
    with pytest.raises(ConfigError, match="needs a host and a database name"):
        database_path(load_config(None, {}), {}, "postgresql://u:p@h")


def test_the_url_prints_without_its_password() -> None:
    database = PostgresDatabase("postgresql://team:p%40ss@db:5432/o?sslmode=require")
    assert str(database) == "postgresql://team:***@db:5432/o?sslmode=require"
    assert database.password == "p@ss"
    assert str(PostgresDatabase("postgresql://team@db/o")) == "postgresql://team@db/o"


def test_check_prints_the_database_url_without_the_password_and_the_replica_id(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--database", URL, "--replica-id", "replica-a"]) == 0
    out = capsys.readouterr()
    assert "database: postgresql://team:***@db.internal:5432/orchestration" in out.out
    assert "replica id: replica-a" in out.out
    assert "s3cr3t-pw" not in out.out + out.err


def test_check_refuses_another_scheme_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--database", "mysql://u:p@h/d"]) == 2
    err = capsys.readouterr().err
    assert "unsupported database URL scheme 'mysql'" in err and "p@h" not in err


def test_simple_mode_refuses_a_postgres_database() -> None:
    from server.app.simple import state_path

    with pytest.raises(ConfigError, match="simple mode keeps its state in a JSON file") as refused:
        state_path(load_config(None, {}), {}, URL)
    assert "s3cr3t-pw" not in str(refused.value)


def test_a_bad_replica_id_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--database", URL, "--replica-id", "bad id!"]) == 2
    assert "--replica-id: a replica id is 1-63 letters" in capsys.readouterr().err


def test_open_store_reads_a_url_string_as_a_database_never_as_a_sqlite_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A development state of the store once opened SQLite at a test's PostgreSQL URL, and left files under
    # ./postgresql:/ that were committed by mistake.
    monkeypatch.chdir(tmp_path)
    opened: list[PostgresDatabase] = []
    monkeypatch.setattr("server.store.postgres.PostgresStore", lambda database: opened.append(database) or "pg")
    assert open_store(URL) == "pg"
    assert opened == [PostgresDatabase(URL)]
    with pytest.raises(ValueError, match="unsupported database URL scheme 'mysql'"):
        open_store("mysql://u:p@h/d")
    assert list(tmp_path.iterdir()) == []
