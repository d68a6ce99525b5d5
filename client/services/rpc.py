"""Connecting to the configured chain with a clear error when it is unreachable or is not the
chain the profile expects. Thin on purpose; typed contract wrappers live in gpumesh.client.chain."""

from __future__ import annotations

from gpumesh.client.core.errors import ChainError
from gpumesh.client.core.settings import NetworkProfile


def connect(network: NetworkProfile, timeout: float = 10.0):
    from web3 import HTTPProvider, Web3

    w3 = Web3(HTTPProvider(network.rpc_url, request_kwargs={"timeout": timeout}))
    try:
        chain_id = w3.eth.chain_id
    except Exception as exc:  # noqa: BLE001 - requests/aiohttp/JSON errors: all mean "not reachable"
        reason = _reason(exc)
        raise ChainError(f"RPC at {network.rpc_url} is unreachable ({reason}){unreachable_hint(network.rpc_url)}") \
            from None
    if network.chain_id is not None and chain_id != network.chain_id:
        raise ChainError(
            f"RPC at {network.rpc_url} serves chain id {chain_id}, but network '{network.name}' expects "
            f"{network.chain_id}"
        )
    return w3


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for needle, short in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                          ("Name or service not known", "unknown host")):
        if needle in text:
            return short
    return type(exc).__name__


def unreachable_hint(rpc_url: str) -> str:
    """What to do about an unreachable RPC: a local URL is most likely a devnet that is not up."""
    from urllib.parse import urlparse

    host = urlparse(rpc_url).hostname or ""
    if host in ("localhost", "::1") or host.startswith("127."):
        return ": start the local devnet with `gpumesh devnet up` (or pass --rpc-url)"
    return ": check --rpc-url or the network profile (docs/networks.md)"
