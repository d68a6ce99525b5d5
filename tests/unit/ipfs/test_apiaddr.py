"""The one reader of IPFS API addresses: every form users write, and one line for anything else."""

from __future__ import annotations

import pytest

from gpumesh.ipfs.apiaddr import ApiAddress, parse_api
from gpumesh.ipfs.errors import IpfsError


@pytest.mark.parametrize(("text", "want"), [
    ("/ip4/127.0.0.1/tcp/5001", ApiAddress("ip4", "127.0.0.1", 5001)),
    ("/ip4/127.0.0.1/tcp/5001/http", ApiAddress("ip4", "127.0.0.1", 5001)),
    ("/ip6/::1/tcp/5001", ApiAddress("ip6", "::1", 5001)),
    ("/dns/ipfs.example.org/tcp/443/https", ApiAddress("dns", "ipfs.example.org", 443, "https")),
    ("http://127.0.0.1:5001", ApiAddress("ip4", "127.0.0.1", 5001)),
    ("http://127.0.0.1:5001/", ApiAddress("ip4", "127.0.0.1", 5001)),
    ("https://[::1]:5001", ApiAddress("ip6", "::1", 5001, "https")),
    ("localhost:5002", ApiAddress("dns", "localhost", 5002)),
])
def test_forms(text, want):
    assert parse_api(text) == want


def test_url_and_multiaddr():
    assert parse_api("/ip6/::1/tcp/5001").url == "http://[::1]:5001"
    assert parse_api("http://127.0.0.1:5001").multiaddr == "/ip4/127.0.0.1/tcp/5001/http"
    assert parse_api("http://127.0.0.1:0").listen_multiaddr == "/ip4/127.0.0.1/tcp/0"


@pytest.mark.parametrize("text", ["/ip4/x", "/ip4/127.0.0.1/udp/5001", "/ip4/127.0.0.1/tcp/port",
                                  "/ip4/127.0.0.1/tcp/99999", "http://127.0.0.1", "ftp://h:1", "http://h:1/api",
                                  "/unix/tmp/sock/tcp/1"])
def test_refused_in_one_line(text):
    with pytest.raises(IpfsError, match="want /ip4/HOST/tcp/PORT or http://HOST:PORT"):
        parse_api(text)
