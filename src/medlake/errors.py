"""The one tree of errors medlake raises.

Every error a user can cause or meet derives from :class:`MedlakeError`, so the CLI
turns each into one line and an exit code in one place, and the server into an RFC 9457
problem document in one place. ``exit_code`` follows the BSD sysexits convention where
one fits.
"""

from __future__ import annotations


class MedlakeError(Exception):
    """Base of every error medlake raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(MedlakeError):
    """The command was called wrongly (bad option value, missing argument)."""

    exit_code = 64  # EX_USAGE


class InputError(MedlakeError):
    """An input file or value is malformed; the message names the file, line or field."""

    exit_code = 65  # EX_DATAERR


class NotAWorkspaceError(MedlakeError):
    """The directory given as workspace has no ``medlake.toml``."""

    exit_code = 66  # EX_NOINPUT


class WorkspaceExistsError(MedlakeError):
    """``medlake init`` was pointed at a directory that already is a workspace."""

    exit_code = 73  # EX_CANTCREAT


class ConfigError(MedlakeError):
    """``medlake.toml`` is unreadable or has a setting with a bad value."""

    exit_code = 78  # EX_CONFIG


class EngineError(MedlakeError):
    """A statement failed on the engine; carries the statement that failed."""

    exit_code = 70  # EX_SOFTWARE

    def __init__(self, message: str, *, statement: str | None = None, engine: str = "") -> None:
        detail = message if statement is None else f"{message}\n  statement: {statement}"
        super().__init__(detail)
        self.statement = statement
        self.engine = engine


class WriteConflictError(EngineError):
    """Another transaction changed the same rows first (DuckDB: "Conflict on tuple ...",
    e.g. a write while the lake's person-order rewrite holds that table); nothing of this
    statement was written and running it again is safe."""

    exit_code = 75  # EX_TEMPFAIL: try again


class LakeBusyError(WriteConflictError):
    """A write waited longer than ``[layout] write_wait_seconds`` for a table's rewrite
    (or a rewrite for the writes before it): nothing was written, running it again is
    safe (:mod:`medlake.engine.rewrite_gate`)."""


class EngineCapabilityError(EngineError):
    """The engine cannot do what was asked (e.g. transactions on Spark)."""


class SchemaVersionError(MedlakeError):
    """The lake's schema version differs from the one this medlake expects."""

    exit_code = 75  # EX_TEMPFAIL: fixable by running the migration


class MissingDependencyError(MedlakeError):
    """An optional extra (spark, mysql, gpu) is needed but not installed."""

    exit_code = 69  # EX_UNAVAILABLE


class WorkspaceFrozenError(MedlakeError):
    """The ransomware watch froze the workspace read-only; writes wait for ``watch clear``."""

    exit_code = 77  # EX_NOPERM


class AccessDeniedError(MedlakeError):
    """The user's role or project membership does not allow the action; says which."""

    exit_code = 77  # EX_NOPERM


class AuthenticationError(MedlakeError):
    """No known, enabled user (or a bad token) for the call."""

    exit_code = 77  # EX_NOPERM


class BackupError(MedlakeError):
    """A backup, restore or repository check could not be done; says why in one line."""

    exit_code = 74  # EX_IOERR


class JobCancelledError(MedlakeError):
    """A background job was cancelled: its progress callback raises this, so the long
    work stops at its next progress report (services must let it propagate)."""

    exit_code = 75  # EX_TEMPFAIL


class NotFoundError(UsageError):
    """The thing asked for (a job, a cohort definition, a result) does not exist."""

    exit_code = 66  # EX_NOINPUT
