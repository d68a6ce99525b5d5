"""Shared IPFS unit-test data."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def t0260_testdata(tmp_path_factory):
    """Kubo's sharness t0260-sharding.sh input: testdata/file1..file2000, each holding "$i\\n"."""
    d = tmp_path_factory.mktemp("t0260") / "testdata"
    d.mkdir()
    for i in range(1, 2001):
        (d / f"file{i}").write_text(f"{i}\n")
    return d
