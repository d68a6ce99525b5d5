"""Connecting to the configured chain with a clear error when it is unreachable or is not the
chain the profile expects. Thin on purpose; the transport (HTTP or websocket, counted) is
gpumesh.client.chain.provider, typed contract wrappers live in gpumesh.client.chain."""

from __future__ import annotations

from gpumesh.client.core.errors import ChainError
from gpumesh.client.core.settings import NetworkProfile


def connect(network: NetworkProfile, timeout: float = 10.0):
    from gpumesh.client.chain.contracts import open_web3
    from gpumesh.client.chain.provider import RpcUnavailable

    try:
        w3, chain_id = open_web3(network.rpc_url, timeout)  # http(s):// or ws(s)://, every request counted
    except RpcUnavailable as exc:
        raise ChainError(f"{exc}{unreachable_hint(network.rpc_url)}") from None
    if network.chain_id is not None and chain_id != network.chain_id:
        raise ChainError(
            f"RPC at {network.rpc_url} serves chain id {chain_id}, but network '{network.name}' expects "
            f"{network.chain_id}"
        )
    return w3


def unreachable_hint(rpc_url: str) -> str:
    """What to do about an unreachable RPC: a local URL is most likely a devnet that is not up."""
    from urllib.parse import urlparse

    host = urlparse(rpc_url).hostname or ""
    if host in ("localhost", "::1") or host.startswith("127."):
        return ": start the local devnet with `gpumesh devnet up` (or pass --rpc-url)"
    return ": check --rpc-url or the network profile (docs/networks.md)"
