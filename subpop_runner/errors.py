"""What ends a run early: bad input (`ConfigError`: the CLI prints its message alone and exits
2) and Ctrl-C (`INTERRUPTED`)."""

import threading


class ConfigError(ValueError):
    """Wrong config value, missing file or unreachable service; the message names the fix."""


# Set by the CLI's SIGINT handler: Lightning turns Ctrl-C during training into ``exit(1)``, so
# whoever closes a run reads this to tell an interruption (KILLED) from a failure.
INTERRUPTED = threading.Event()
