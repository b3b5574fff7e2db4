"""Built-in stages; importing this package registers them."""

from curation.stages import dedup, filters, scoring  # noqa: F401
