"""Errors a user can act on. Each message names the file, row or option, and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass


class OncodiffError(Exception):
    """Base class: the CLI prints these without a traceback and exits non-zero."""


class ConfigError(OncodiffError):
    """An invalid preset, option or ``--set`` override."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a cohort folder: where it is, what is wrong, and how to fix it."""

    file: str
    message: str
    fix: str = ""
    row: int | None = None  # 1-based data row in the CSV (the header is row 0), None when not a row
    column: str | None = None
    warning: bool = False  # worth a look, but the cohort is still valid

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.column:
            where += f", column {self.column!r}"
        text = f"{where}: {self.message}"
        return text + (f" Fix: {self.fix}" if self.fix else "")


class CohortError(OncodiffError):
    """A cohort folder that failed validation; carries every problem found."""

    def __init__(self, problems: list[Problem], root: str = ""):
        self.problems = list(problems)
        head = f"cohort {root} is not valid" if root else "cohort is not valid"
        body = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{head}: {len(self.problems)} problem(s)\n{body}")
