"""The one error type a user sees: a problem with their input, reported in one line, exit code 2."""


class UsageError(Exception):
    """Bad input (a name, a value, a file). The message names the problem and the fix, in one line."""

    exit_code = 2


class Interrupted(Exception):
    """SIGINT / SIGTERM stopped a run after a step, with last.pt written. Exit code 128 + the signal's number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class TrainingError(Exception):
    """A run that cannot go on (a non-finite loss); the last good checkpoint is kept. Exit code 1."""

    exit_code = 1
