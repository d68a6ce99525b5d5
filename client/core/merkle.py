"""Merkle commitments of docs/protocol.md section 1: tensor roots over LEAF_BYTES leaves, range
proofs, and trees of 32-byte roots (program, inputs, result and trace roots).

Pure: hashing only. The Solidity twin is contracts/src/libraries/LibMerkle.sol; tests/vectors/
keeps them identical. Positions are 0-based leaf indices; depth d means 2^d leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sha3  # safe-pysha3: the C Keccak with Ethereum's original padding (0x01), keccak_256

from gpumesh.client.core.constants import LEAF_BYTES, TAG_LEAF, TAG_NODE, TAG_OP, TAG_PROGRAM, ZERO32


def keccak256(data: bytes | bytearray | memoryview) -> bytes:
    """keccak256 (Ethereum's) of `data`."""
    return sha3.keccak_256(data).digest()


def hash_rows(msgs: np.ndarray) -> np.ndarray:
    """keccak256 of every row of a C-contiguous uint8 array [k, m] -> uint8 [k, 32]: the batch form
    of the honest path (unit output roots, result root), hashing views of the array (no copy of a
    row); equal to keccak256 row by row."""
    if msgs.dtype != np.uint8 or msgs.ndim != 2 or not msgs.flags.c_contiguous:
        raise ValueError("hash_rows takes a C-contiguous uint8 [k, m] array")
    k, m = msgs.shape
    flat = memoryview(msgs.reshape(-1))
    h = sha3.keccak_256
    digests = bytearray(b"".join([h(flat[i * m : (i + 1) * m]).digest() for i in range(k)]))
    return np.frombuffer(digests, dtype=np.uint8).reshape(k, 32)


def leaf_hash(leaf: bytes) -> bytes:
    if len(leaf) != LEAF_BYTES:
        raise ValueError(f"a leaf is exactly {LEAF_BYTES} bytes, got {len(leaf)}")
    return keccak256(TAG_LEAF + leaf)


def node_hash(left: bytes, right: bytes) -> bytes:
    return keccak256(TAG_NODE + left + right)


def depth_for(count: int) -> int:
    """Depth of the complete tree over `count` items (count >= 1 -> ceil(log2(count)))."""
    if count < 1:
        count = 1
    return (count - 1).bit_length()


def leaf_count(nbytes: int) -> int:
    """Leaves holding `nbytes` of tensor data before padding to a power of two (at least 1)."""
    return max(1, -(-nbytes // LEAF_BYTES))


def tensor_depth(nbytes: int) -> int:
    return depth_for(leaf_count(nbytes))


# Empty-subtree values: ZERO_SUBTREE[i] is the root of 2^i all-zero leaves.
_ZERO_SUBTREE: list[bytes] = []


def zero_subtree(level: int) -> bytes:
    while len(_ZERO_SUBTREE) <= level:
        if not _ZERO_SUBTREE:
            _ZERO_SUBTREE.append(keccak256(TAG_LEAF + bytes(LEAF_BYTES)))
        else:
            z = _ZERO_SUBTREE[-1]
            _ZERO_SUBTREE.append(node_hash(z, z))
    return _ZERO_SUBTREE[level]


def tensor_levels(data: bytes) -> list[list[bytes]]:
    """All levels of a tensor tree, leaves first; the last level holds the root alone.

    Only the data-bearing prefix of each level is materialised; missing right-hand nodes are the
    empty-subtree values (so the tree is complete over 2^d leaves without hashing the padding).
    """
    n = leaf_count(len(data))
    depth = depth_for(n)
    h, tag, full = keccak256, TAG_LEAF, len(data) // LEAF_BYTES * LEAF_BYTES
    level = [h(tag + data[i : i + LEAF_BYTES]) for i in range(0, full, LEAF_BYTES)]
    if len(level) < n:  # the last, partial leaf is zero-padded
        level.append(h(tag + data[full:] + bytes(LEAF_BYTES - (len(data) - full))))
    return _build_up(level, depth, zero_subtree)


def tensor_root(data: bytes) -> bytes:
    if len(data) <= LEAF_BYTES:  # one leaf (small unit outputs): no tree to build
        return keccak256(TAG_LEAF + data + bytes(LEAF_BYTES - len(data)))
    return tensor_levels(data)[-1][0]


def tensor_roots(data: np.ndarray) -> list[bytes]:
    """Tensor roots of k equal-size tensors, the rows of a C-contiguous array [k, ...] (the honest
    path's unit outputs): the same as [tensor_root(row.tobytes()) for row in data], hashed level
    by level in batches (hash_rows)."""
    k = data.shape[0]
    if k == 0:
        return []
    flat = np.ascontiguousarray(data).reshape(k, -1).view(np.uint8)
    n = flat.shape[1]
    leaves = leaf_count(n)
    full = n // LEAF_BYTES
    step = max(1, _BATCH_BYTES // (leaves * (1 + LEAF_BYTES)))  # bounded memory: tensors per batch
    roots: list[bytes] = []
    for a in range(0, k, step):
        part = flat[a : a + step]
        msgs = np.zeros((len(part), leaves, 1 + LEAF_BYTES), dtype=np.uint8)  # zero padding
        msgs[:, :, 0] = TAG_LEAF[0]
        if full:
            msgs[:, :full, 1:] = part[:, : full * LEAF_BYTES].reshape(len(part), full, LEAF_BYTES)
        if n > full * LEAF_BYTES:
            msgs[:, full, 1 : 1 + n - full * LEAF_BYTES] = part[:, full * LEAF_BYTES :]
        level = hash_rows(msgs.reshape(len(part) * leaves, 1 + LEAF_BYTES)).reshape(len(part), leaves, 32)
        roots += [bytes(r) for r in _batch_up(level, depth_for(leaves), zero_subtree)]
    return roots


#: Bytes of leaf messages tensor_roots assembles at once (the outputs of a big job are hashed in
#: batches, not copied whole with their padding).
_BATCH_BYTES = 8 << 20


def _batch_up(level: np.ndarray, depth: int, pad) -> np.ndarray:
    """Roots [k, 32] of k trees whose data-bearing level-0 nodes are `level` [k, n, 32], complete
    over 2^depth leaves with `pad(h)` for the missing right-hand subtrees at height h."""
    k = level.shape[0]
    tag = TAG_NODE[0]
    for h in range(depth):
        n = level.shape[1]
        pairs = (n + 1) // 2
        msgs = np.empty((k, pairs, 65), dtype=np.uint8)
        msgs[:, :, 0] = tag
        msgs[:, :, 1:33] = level[:, 0::2]
        msgs[:, : n // 2, 33:] = level[:, 1::2]
        if n & 1:
            msgs[:, -1, 33:] = np.frombuffer(pad(h), dtype=np.uint8)
        level = hash_rows(msgs.reshape(k * pairs, 65)).reshape(k, pairs, 32)
    return level.reshape(k, 32)


def _build_up(level: list[bytes], depth: int, pad) -> list[list[bytes]]:
    levels = [level]
    k, tag = keccak256, TAG_NODE
    for h in range(depth):
        cur = levels[-1]
        nxt = [k(tag + cur[i] + cur[i + 1]) for i in range(0, len(cur) - 1, 2)]
        if len(cur) & 1:
            nxt.append(k(tag + cur[-1] + pad(h)))
        levels.append(nxt)
    return levels


def roots_levels(values: list[bytes]) -> list[list[bytes]]:
    """Levels of a roots tree: the values are the leaves, padded with bytes32(0) subtrees."""
    if not values:
        raise ValueError("a roots tree needs at least one value")
    for v in values:
        if len(v) != 32:
            raise ValueError("roots-tree leaves are 32-byte values")
    zeros = [ZERO32]

    def pad(h: int) -> bytes:
        while len(zeros) <= h:
            zeros.append(node_hash(zeros[-1], zeros[-1]))
        return zeros[h]

    return _build_up(list(values), depth_for(len(values)), pad)


def roots_root(values: list[bytes]) -> bytes:
    if len(values) >= 64 and all(len(v) == 32 for v in values):  # many roots: batched levels
        level = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(1, len(values), 32)
        return bytes(_batch_up(level, depth_for(len(values)), roots_zero)[0])
    return roots_levels(values)[-1][0]


def roots_zero(level: int) -> bytes:
    """Root of 2^level bytes32(0) leaves (padding of a roots tree)."""
    z = ZERO32
    for _ in range(level):
        z = node_hash(z, z)
    return z


def inclusion_proof(levels: list[list[bytes]], index: int, pad) -> list[bytes]:
    """Sibling path of leaf `index`, bottom first. `pad(h)` gives the empty subtree at height h."""
    proof = []
    for h in range(len(levels) - 1):
        sib = index ^ 1
        lvl = levels[h]
        proof.append(lvl[sib] if sib < len(lvl) else pad(h))
        index >>= 1
    return proof


def verify_inclusion(root: bytes, leaf: bytes, index: int, proof: list[bytes]) -> bool:
    node = leaf
    for sib in proof:
        node = node_hash(sib, node) if index & 1 else node_hash(node, sib)
        index >>= 1
    return index == 0 and node == root


@dataclass(frozen=True)
class RangeProof:
    """Leaves [start, end) of a depth-`depth` tensor tree and the boundary siblings that rebuild
    the root: per level, bottom first, the left sibling (if the range starts on a right child)
    then the right sibling (if it ends on a left child)."""

    depth: int
    start: int
    end: int
    leaves: bytes
    siblings: tuple[bytes, ...]


def range_proof(data: bytes, start: int, end: int, levels: list[list[bytes]] | None = None) -> RangeProof:
    levels = levels or tensor_levels(data)
    depth = len(levels) - 1
    if not 0 <= start < end <= (1 << depth):
        raise ValueError(f"leaf range [{start},{end}) outside a tree of {1 << depth} leaves")
    padded = data + bytes(max(0, end * LEAF_BYTES - len(data)))
    leaves = padded[start * LEAF_BYTES : end * LEAF_BYTES]
    sibs: list[bytes] = []
    lo, hi = start, end - 1
    for h in range(depth):
        lvl = levels[h]

        def at(i: int, lvl=lvl, h=h) -> bytes:
            return lvl[i] if i < len(lvl) else zero_subtree(h)

        if lo & 1:
            sibs.append(at(lo - 1))
        if not hi & 1:
            sibs.append(at(hi + 1))
        lo >>= 1
        hi >>= 1
    return RangeProof(depth, start, end, leaves, tuple(sibs))


def verify_range(root: bytes, proof: RangeProof) -> bool:
    """Rebuild the root from a range proof (the on-chain check, step for step)."""
    depth, start, end = proof.depth, proof.start, proof.end
    if not 0 <= start < end <= (1 << depth) or len(proof.leaves) != (end - start) * LEAF_BYTES:
        return False
    nodes = [leaf_hash(proof.leaves[i : i + LEAF_BYTES]) for i in range(0, len(proof.leaves), LEAF_BYTES)]
    sibs = list(proof.siblings)
    lo, hi = start, end - 1
    for _ in range(depth):
        if lo & 1:
            if not sibs:
                return False
            nodes.insert(0, sibs.pop(0))
            lo -= 1
        if not hi & 1:
            if not sibs:
                return False
            nodes.append(sibs.pop(0))
            hi += 1
        nodes = [node_hash(nodes[i], nodes[i + 1]) for i in range(0, len(nodes), 2)]
        lo >>= 1
        hi >>= 1
    return not sibs and len(nodes) == 1 and nodes[0] == root


def op_leaf(descriptor: bytes) -> bytes:
    return keccak256(TAG_OP + descriptor)


def program_root(version: int, num_ops: int, num_weights: int, ops_root: bytes) -> bytes:
    return keccak256(
        TAG_PROGRAM
        + version.to_bytes(4, "big")
        + num_ops.to_bytes(4, "big")
        + num_weights.to_bytes(4, "big")
        + ops_root
    )


def inputs_root(weight_roots: list[bytes], unit_input_roots: list[bytes]) -> bytes:
    """nodeHash(weightsRoot, unitInputsRoot); a program with no weights uses bytes32(0)."""
    weights = roots_root(weight_roots) if weight_roots else ZERO32
    return node_hash(weights, roots_root(unit_input_roots))
