"""Errors that reach the user as one line (no traceback) with a fixed exit code."""


class UserError(Exception):
    """A problem with the user's inputs or environment; printed as one line, exit code 1."""

    exit_code = 1


class ConfigError(UserError):
    """A params problem (unknown key, wrong type, impossible value); exit code 2."""

    exit_code = 2


class IntegrityError(UserError):
    """An input folder whose files do not match its manifest; exit code 3."""

    exit_code = 3


class BadRecordError(UserError):
    """A malformed input record under `on_bad_record: abort`; exit code 4."""

    exit_code = 4
