"""Watchtower integration tests use the shared node fixtures (tests/integration/nodes/conftest.py)."""

from tests.integration.nodes.conftest import *  # noqa: F403 - shared node fixtures
