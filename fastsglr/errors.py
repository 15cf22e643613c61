"""The one error type a user sees: a problem with their input, reported in one line, exit code 2."""


class UsageError(Exception):
    """Bad input (a name, a value, a file). The message names the problem and the fix, in one line."""

    exit_code = 2


class TrainingError(Exception):
    """A run that cannot go on (a non-finite loss); the last good checkpoint is kept. Exit code 1."""

    exit_code = 1
