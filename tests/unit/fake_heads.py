"""A fake HeadSource for daemon unit tests (gpumesh.client.chain.provider.HeadSource)."""

from __future__ import annotations

import itertools

from gpumesh.client.chain.provider import Head


class NewBlocks:
    """A HeadSource that sees a new block at every tick (so no tick is skipped as idle)."""

    def __init__(self) -> None:
        self.n = itertools.count()

    def head(self) -> Head:
        n = next(self.n)
        return Head(n, f"0x{n:064x}", 0)
