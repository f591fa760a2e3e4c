"""Error kinds. Callers (the Prefect layer, the CLI) decide what to retry by kind:
``InputError`` and its subclasses are never retried; they name what is wrong."""


class IrsflowError(Exception):
    """Base of every error this library raises on purpose."""


class InputError(IrsflowError, ValueError):
    """Bad input from the user: fails at once, no retry."""


class ConfigError(InputError):
    """An invalid request or config; the message names the field path."""


class DatasetError(InputError):
    """A malformed question set; the message names the file and line."""


class ModelLoadError(InputError):
    """A model that cannot be found or loaded (bad path, unreachable hub id)."""
