"""Exceptions every public entry point raises for bad input; the CLI prints them without a traceback."""

from __future__ import annotations


class LmrecError(Exception):
    """Base class: a problem the user can fix, reported as one clear message."""


class DataError(LmrecError, ValueError):
    """Input data is missing or malformed; the message names the file and line."""


class BundleError(LmrecError):
    """A bundle is corrupted, incomplete or does not match what it is used with."""


class UnknownItemError(LmrecError, KeyError):
    """An item id that is not in the catalogue (or was deleted)."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""

    @classmethod
    def of(cls, field: str, unknown: list[str]) -> UnknownItemError:
        """The error for a list `field` with the ids `unknown` (the first named, the rest counted)."""
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        return cls(f"{field}: unknown item id {unknown[0]!r}{more}")


class StateError(LmrecError):
    """A state directory is damaged, in use, or belongs to another bundle."""


class MissingDependencyError(LmrecError, ImportError):
    """An optional extra is needed for this feature; the message names it."""


def require(module: str, extra: str, feature: str) -> None:
    """Raise a MissingDependencyError naming `extra` when `module` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"{feature} needs the '{module}' package: pip install 'lmrec[{extra}]'"
        )
