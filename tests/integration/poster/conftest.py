"""Poster tests use the worker folder's fixtures (which build on the shared node devnet)."""

from tests.integration.worker.conftest import *  # noqa: F403 - shared worker/poster fixtures
