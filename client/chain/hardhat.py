"""Start and stop Hardhat's node (EDR), gpumesh's second EVM node (issue #15).

The integration and end-to-end tests run unchanged against it when GPUMESH_TEST_CHAIN=hardhat
(tests/chain_node.py); the product itself takes any EVM JSON-RPC URL. `start_hardhat()` runs the
npm-installed `hardhat node` with tools/hardhat/hardhat.config.js (chain id 31337, the anvil dev
mnemonic, automine, cancun) on 127.0.0.1 and returns a `HardhatProcess`, which has the interface of
`AnvilProcess` (url, rpc, increase_time, stop, ...) so fixtures can hold either.

Differences met (docs/protocol.md 4.9): the devnet-only methods are named hardhat_* instead of
anvil_* (`dev_method` maps them); evm_snapshot / evm_revert / evm_increaseTime / evm_mine are the same.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import deque
from pathlib import Path
from threading import Thread

from gpumesh.client.chain.anvil import (  # the one start-up toolkit of both nodes
    DEFAULT_CHAIN_ID,
    AnvilError,
    AnvilProcess,
    _drain,
    free_port,
    port_is_free,
    wait_until_answers,
)

CONFIG = Path("tools") / "hardhat" / "hardhat.config.js"


class HardhatProcess(AnvilProcess):
    """A running `hardhat node`. Use as a context manager or call stop()."""

    kind = "hardhat"


def dev_method(node: AnvilProcess, name: str) -> str:
    """The node's name of a devnet-only method given by its anvil name (anvil_setBalance ->
    hardhat_setBalance on Hardhat's node)."""
    if isinstance(node, HardhatProcess) and name.startswith("anvil_"):
        return "hardhat_" + name[len("anvil_"):]
    return name


def find_hardhat() -> tuple[Path, Path]:
    """(the hardhat launcher, its config) from the repository's node_modules."""
    for parent in Path(__file__).resolve().parents:
        exe = parent / "node_modules" / ".bin" / "hardhat"
        if exe.is_file() and os.access(exe, os.X_OK) and (parent / CONFIG).is_file():
            return exe, parent / CONFIG
    raise AnvilError("hardhat not found: run `make npm` (node_modules/.bin/hardhat)")


def start_hardhat(port: int | None = None, startup_timeout: float = 60.0) -> HardhatProcess:
    """Start Hardhat's node on 127.0.0.1:`port` (a free port when None) and wait until it answers."""
    exe, config = find_hardhat()
    if not shutil.which("node"):
        raise AnvilError("hardhat needs Node.js on PATH")
    if port is None or port == 0:
        port = free_port()
    elif not port_is_free(port):
        raise AnvilError(f"port {port} on 127.0.0.1 is already in use")
    env = dict(os.environ, HARDHAT_DISABLE_TELEMETRY_PROMPT="true", DO_NOT_TRACK="1")
    proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        [str(exe), "--config", str(config), "node", "--hostname", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        cwd=config.parent, env=env, start_new_session=True,
    )
    output: deque[str] = deque(maxlen=200)
    Thread(target=_drain, args=(proc, output), daemon=True).start()
    node = HardhatProcess(proc, port, DEFAULT_CHAIN_ID, output)
    wait_until_answers(node, "hardhat", startup_timeout)
    return node
