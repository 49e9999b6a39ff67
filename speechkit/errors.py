"""Errors a user can hit. Each message is one line naming the thing and what to do."""


class SpeechkitError(Exception):
    """Base class: the CLI prints ``str(err)`` on one line and exits non-zero."""


class AudioError(SpeechkitError):
    """Audio that cannot be read or used (missing, corrupt, empty, non-finite, wrong rate)."""


class CheckpointError(SpeechkitError):
    """A checkpoint directory or file that is missing, malformed or inconsistent."""


class ConfigError(SpeechkitError):
    """A configuration value out of range or inconsistent with another."""


class DataError(SpeechkitError):
    """A corpus file, manifest or records file that is missing or malformed (messages name file:line)."""


class DeviceMemoryError(SpeechkitError):
    """The accelerator ran out of memory on work that cannot be split further (one clip)."""
