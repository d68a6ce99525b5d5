"""Loads the ABIs shipped in gpumesh/client/chain/abi (exported from the forge build by
export_abi). Pure file reading; imported by the chain adapter modules only."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from gpumesh.client.core.errors import ChainError

ABI_DIR = Path(__file__).resolve().parent / "abi"


@cache
def load_abi(name: str) -> tuple[dict, ...]:
    """The ABI of contract `name` (e.g. "JobMarket") as a tuple of entries."""
    path = ABI_DIR / f"{name}.json"
    try:
        return tuple(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ChainError(f"no ABI for {name} in {ABI_DIR} (run `make contracts`)") from None


def available() -> list[str]:
    return sorted(p.stem for p in ABI_DIR.glob("*.json"))
