"""The one reader of an IPFS RPC API address, as users write it: a multiaddr
(/ip4/127.0.0.1/tcp/5001, /ip6/::1/tcp/5001, /dns/host/tcp/5001, optionally ending /http or /https)
or a URL (http://127.0.0.1:5001, or host:port). Pure; any module may import it (the Kubo adapter, the
embedded node's `ipfs daemon --api`, the devnet)."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from gpumesh.ipfs.errors import IpfsError

_HOST_PROTOS = ("ip4", "ip6", "dns", "dns4", "dns6")
_WANT = "want /ip4/HOST/tcp/PORT or http://HOST:PORT"


@dataclass(frozen=True)
class ApiAddress:
    proto: str  # ip4 | ip6 | dns | dns4 | dns6
    host: str
    port: int
    scheme: str = "http"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if self.proto == "ip6" else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def multiaddr(self) -> str:
        """/PROTO/HOST/tcp/PORT/SCHEME (the form ipfshttpclient takes)."""
        return f"/{self.proto}/{self.host}/tcp/{self.port}/{self.scheme}"

    @property
    def listen_multiaddr(self) -> str:
        """/PROTO/HOST/tcp/PORT, as Kubo writes its API address."""
        return f"/{self.proto}/{self.host}/tcp/{self.port}"


def parse_api(api: str) -> ApiAddress:
    """An ApiAddress from a multiaddr or URL; an IpfsError naming both forms for anything else."""
    text = api.strip()
    if text.startswith("/"):
        parts = text.strip("/").split("/")
        if (len(parts) in (4, 5) and parts[0] in _HOST_PROTOS and parts[1] and parts[2] == "tcp"
                and (len(parts) == 4 or parts[4] in ("http", "https"))):
            return ApiAddress(parts[0], parts[1], _port(parts[3], api), parts[4] if len(parts) == 5 else "http")
        raise IpfsError(f"cannot read IPFS API address {api!r} ({_WANT})")
    u = urllib.parse.urlsplit(text if "://" in text else "http://" + text)
    try:
        port = u.port
    except ValueError:
        port = None
    if u.scheme not in ("http", "https") or not u.hostname or port is None or u.path not in ("", "/"):
        raise IpfsError(f"cannot read IPFS API address {api!r} ({_WANT})")
    host = u.hostname
    proto = "ip6" if ":" in host else ("ip4" if host.replace(".", "").isdigit() else "dns")
    return ApiAddress(proto, host, port, u.scheme)


def _port(text: str, api: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise IpfsError(f"cannot read IPFS API address {api!r}: port {text!r} ({_WANT})")
    return int(text)
