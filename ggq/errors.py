"""The one user-facing error type. The CLI prints it as a single line: `ggq: <file>: <what is wrong>`."""
from __future__ import annotations

import os


class GGQError(Exception):
    """Something wrong with the user's input (a file, an option, a template), worded for the user."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.message = message
        self.path = None if path is None else os.fspath(path)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message
