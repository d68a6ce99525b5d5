"""The EVM node the integration and end-to-end tests run against: anvil (default) or Hardhat's node
(GPUMESH_TEST_CHAIN=hardhat), the same tests unchanged (issue #15). Both return an object with the
AnvilProcess interface (url, rpc, increase_time, stop); devnet-only methods are spelled with
`dev_method(node, "anvil_...")`."""

from __future__ import annotations

import os

from gpumesh.client.chain.anvil import AnvilProcess, start_anvil
from gpumesh.client.chain.hardhat import dev_method, start_hardhat

__all__ = ["CHAIN", "dev_method", "mine", "start_test_node"]

CHAIN = os.environ.get("GPUMESH_TEST_CHAIN", "anvil").strip().lower() or "anvil"
if CHAIN not in ("anvil", "hardhat"):
    raise RuntimeError(f"GPUMESH_TEST_CHAIN={CHAIN!r}: anvil or hardhat")


def start_test_node() -> AnvilProcess:
    """A fresh node of the chosen kind on a free port."""
    return start_hardhat() if CHAIN == "hardhat" else start_anvil()


def mine(node: AnvilProcess, blocks: int) -> None:
    """Mine `blocks` empty blocks (anvil_mine / hardhat_mine, whose count is a hex quantity)."""
    node.rpc(dev_method(node, "anvil_mine"), [hex(int(blocks))])
