"""Errors of the pattern library, under the server's one root (:class:`server.errors.OrchestrationError`).

Messages are written for the caller (often a model): they name the pattern, the variable or the position at
fault and say what to do instead. They never quote a variable's value.
"""

from __future__ import annotations

from server.errors import OrchestrationError


class PatternError(OrchestrationError):
    """Root of the pattern library's errors.

    Attributes:
        pattern: the pattern's name, when one is concerned.
    """

    def __init__(self, message: str, *, pattern: str | None = None) -> None:
        super().__init__(message)
        self.pattern = pattern


class InvalidPattern(PatternError):
    """A pattern (name, template, variables, metadata or globs) does not validate; nothing was stored."""


class TemplateSyntaxError(InvalidPattern):
    """A template does not parse (unterminated ``{{``, an expression instead of a name …).

    Attributes:
        line / column: 1-based position of the offending ``{{``.
    """

    def __init__(self, message: str, *, line: int, column: int, pattern: str | None = None) -> None:
        super().__init__(f"{message} (line {line}, column {column})", pattern=pattern)
        self.line = line
        self.column = column


class PatternNotFound(PatternError):
    """No pattern (or no such version of it) is stored.

    Attributes:
        version: the version asked for, when one was.
    """

    def __init__(self, message: str, *, pattern: str, version: int | None = None) -> None:
        super().__init__(message, pattern=pattern)
        self.version = version


class RenderError(PatternError):
    """A pattern cannot be rendered with the values given (missing, unknown or unusable variable).

    Attributes:
        variable: the variable (or dotted path) at fault.
    """

    def __init__(self, message: str, *, variable: str, pattern: str | None = None) -> None:
        super().__init__(message, pattern=pattern)
        self.variable = variable


class CopilotFormatError(PatternError):
    """A GitHub Copilot file cannot be imported, or a pattern cannot be exported without losing content.

    Attributes:
        path: the file concerned, relative to the folder imported or exported.
    """

    def __init__(self, message: str, *, path: str, pattern: str | None = None) -> None:
        super().__init__(f"{path}: {message}", pattern=pattern)
        self.path = path
