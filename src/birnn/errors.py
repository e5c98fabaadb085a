"""Errors that end a stage with a one-line message instead of a traceback."""


class BirnnError(Exception):
    """A user-facing failure: bad input, missing prerequisite, unreachable service."""


class ConfigError(BirnnError):
    """``params.yaml`` is malformed or holds a bad value."""


class DataError(BirnnError):
    """A dataset file is missing, corrupt or of the wrong shape."""


class TrackingError(BirnnError):
    """The MLflow tracking store cannot be used."""
