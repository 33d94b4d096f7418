"""The one exception hierarchy: input errors carry a location, provider errors a retry policy."""

from __future__ import annotations


class IbtError(Exception):
    """Base of every error ibt raises on purpose."""


class InputError(IbtError):
    """Bad user input, located precisely so the user can fix it without guessing.

    ``source`` is a file name (or ``<stdin>``, ``<python>``), ``line`` a 1-based line or
    record number, ``field`` the offending key.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        if self.field is not None:
            where += f": field '{self.field}'"
        return f"{where}: {self.message}"


class ConfigError(InputError):
    """A bad model name, models file entry or setting; located like any input error."""


class ProviderError(IbtError):
    """A failed provider call, classified once where it happens.

    ``retryable`` says whether trying again can help (429, 5xx, timeouts, connection
    errors); ``retry_after`` is the provider's own requested delay in seconds, if any;
    ``kind`` is a short stable label for reports (``rate_limit``, ``server``, ``auth`` ...).
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        self.message = message
        self.kind = kind
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        super().__init__(message)
