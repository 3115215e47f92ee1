"""The one exception type for bad input: the CLI prints its message alone and exits 2."""


class ConfigError(ValueError):
    """A wrong config value, a missing file or an unreachable service; the message names the fix."""
