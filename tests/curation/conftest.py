"""Fixtures shared by tests under tests/curation: the two-node Ray cluster (started on first use)."""

from __future__ import annotations

import pytest

from tests.curation.cluster import ray_multinode, stop_after_last_user  # noqa: F401  (session-scoped fixture)


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    stop_after_last_user(item, nextitem)
