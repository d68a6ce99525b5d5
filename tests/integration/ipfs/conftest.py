"""Fixtures: a real embedded Kubo-RPC node per test module, started and stopped here."""

from __future__ import annotations

import warnings

import pytest

from gpumesh.ipfs.node import EmbeddedNode


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = EmbeddedNode(tmp_path_factory.mktemp("ipfs-repo"))
    n.start()
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
def client(node):
    import ipfshttpclient

    warnings.filterwarnings("ignore", category=FutureWarning, module="urllib3")
    # Client(), not connect(): connect() refuses every daemon version >= 0.8.0.
    c = ipfshttpclient.Client(node.api_multiaddr)
    yield c
    c.close()
