"""Protocol constants (docs/protocol.md section 1). Each has a Solidity twin in
contracts/src/libraries/Constants.sol; the shared test vectors pin both to these values."""

from __future__ import annotations

from typing import Final

#: Bytes per tensor-tree leaf (a power of two). See docs/protocol.md 1.4 for the measurement.
LEAF_BYTES: Final[int] = 1024

#: Program format / descriptor encoding version committed in the program root.
PROGRAM_VERSION: Final[int] = 1

#: Domain-separation tags, one byte prepended to the hashed data.
TAG_LEAF: Final[bytes] = b"\x00"
TAG_NODE: Final[bytes] = b"\x01"
TAG_OP: Final[bytes] = b"\x02"
TAG_PROGRAM: Final[bytes] = b"\x03"

ZERO32: Final[bytes] = b"\x00" * 32
