"""The one exception type for bad input: the CLI prints its message alone and exits 2."""


class ConfigError(ValueError):
    """Wrong config value, missing file or unreachable service; the message names the fix."""
