"""User-facing errors: each names where the problem is, what it is, and how to fix it.

The CLI prints an ``XbenchError`` as one paragraph and exits with code 2 (no
traceback unless ``--debug``). Anything else that escapes is a bug in xbench.
"""

from __future__ import annotations

from pathlib import Path

# exit codes of the command line (see bench.cli)
EXIT_OK, EXIT_CELL_ERRORS, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


class XbenchError(Exception):
    """A problem with the user's input or environment that the user can fix.

    ``where`` names the file (and line) or object, ``field`` the setting at fault,
    ``fix`` what would make it work.
    """

    exit_code = 2

    def __init__(self, problem: str, *, where: str | None = None, field: str | None = None, fix: str | None = None):
        self.problem = problem
        self.where = where
        self.field = field
        self.fix = fix
        super().__init__(problem)

    def __str__(self) -> str:
        return self.render()

    def render(self) -> str:
        head = ""
        if self.where:
            head += f"{self.where}: "
        if self.field:
            head += f"field `{self.field}`: "
        text = head + self.problem.rstrip(".") + "."
        if self.fix:
            text += f" Fix: {self.fix.rstrip('.')}."
        return text


class ConfigError(XbenchError):
    """The suite file is malformed or names something that does not exist."""


class DataError(XbenchError):
    """A dataset, checkpoint or cache on disk is missing or unreadable."""


class OutputError(XbenchError):
    """The output location cannot be written."""


class RunInterrupted(BaseException):
    """A run stopped on SIGINT/SIGTERM after flushing what it had; ``signum`` says which (exit 128 + signum).

    A BaseException, so that no ``except Exception`` inside a cell records it as a failure."""

    def __init__(self, signum: int, run_dir: Path):
        import signal

        self.signum = signum
        self.run_dir = run_dir
        super().__init__(f"stopped by {signal.Signals(signum).name}")
