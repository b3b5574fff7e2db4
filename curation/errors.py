"""Error taxonomy shared by config loading, stages and executors.

The executor maps these to a retry policy: ``RetryableError`` is retried with backoff,
``ShardError`` fails one shard fast with a message naming shard and document, and
``FatalError`` / ``ConfigError`` stop the run before any work is done.
"""

from __future__ import annotations


class CurationError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(CurationError, ValueError):
    """A user-facing configuration problem (unknown key, wrong type, bad stage name)."""


class FatalError(CurationError):
    """The run cannot continue (changed config on relaunch, corrupt run directory)."""


class ShardError(CurationError):
    """One shard failed for a non-transient reason; the message names the shard and document."""


class RetryableError(CurationError):
    """A transient failure (network, overloaded endpoint) that may succeed when retried."""
