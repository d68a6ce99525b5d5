"""Python twin of contracts/test/dispute/mocks/ToyStepper.sol: the toy op set, a toy job, and the
StepProver that encodes its one-step proofs. Test-only (imports eth_abi).

Descriptor: u32be outBytes || u32be inBytes || u8 addend; out[i] = (in[i % inBytes] + addend) & 0xff.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from eth_abi import encode

from gpumesh.client.core.constants import LEAF_BYTES
from gpumesh.client.core.game import GameSnapshot
from gpumesh.client.core.merkle import (
    ZERO32,
    inclusion_proof,
    inputs_root,
    range_proof,
    roots_levels,
    roots_root,
    roots_zero,
    tensor_depth,
    tensor_root,
)
from gpumesh.node.dispute.strategy import AgreedTrace, PlayerData, Program, UnitTrace


def desc(out_bytes: int, in_bytes: int, addend: int) -> bytes:
    return out_bytes.to_bytes(4, "big") + in_bytes.to_bytes(4, "big") + bytes([addend])


def decode(d: bytes) -> tuple[int, int, int]:
    return int.from_bytes(d[0:4], "big"), int.from_bytes(d[4:8], "big"), d[8]


def apply(d: bytes, inp: bytes) -> bytes:
    out_b, in_b, add = decode(d)
    return bytes((inp[i % in_b] + add) & 0xFF for i in range(out_b))


def rand_bytes(seed: str, n: int) -> bytes:
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}/{i}".encode()).digest()
        i += 1
    return out[:n]


@dataclass
class ToyJob:
    unit_inputs: list[bytes]
    descriptors: list[bytes]

    @classmethod
    def random(cls, seed: str, units: int, sizes: list[int]) -> ToyJob:
        inputs = [rand_bytes(f"{seed}/in/{u}", sizes[0]) for u in range(units)]
        descs = [desc(sizes[t + 1], sizes[t], (7 * t + 3) & 0xFF) for t in range(len(sizes) - 1)]
        return cls(inputs, descs)

    @property
    def program(self) -> Program:
        return Program(num_weights=0, descriptors=tuple(self.descriptors))

    def run(self, u: int) -> list[bytes]:
        outs, cur = [], self.unit_inputs[u]
        for d in self.descriptors:
            cur = apply(d, cur)
            outs.append(cur)
        return outs

    @property
    def inputs_root(self) -> bytes:
        return inputs_root([], [tensor_root(x) for x in self.unit_inputs])

    def player(self, traces: dict[int, list[bytes]] | None = None) -> PlayerData:
        """Honest data, with the given units' traces replaced (a corrupt worker)."""
        traces = dict(traces or {})
        cache: dict[int, UnitTrace] = {}

        def trace(u: int) -> UnitTrace:
            if u not in cache:
                cache[u] = UnitTrace(traces.get(u) or self.run(u))
            return cache[u]

        roots = tuple(trace(u).roots[-1] for u in range(len(self.unit_inputs)))
        return PlayerData(self.program, roots, trace)


class ToyProver:
    """StepProver for ToyStepper: proofs = abi.encode((inRoot, rootPath, weightsRoot, inLeaf, siblings))."""

    def __init__(self, job: ToyJob) -> None:
        self.job = job

    def element_bytes(self, descriptor: bytes) -> int:
        return 1

    def proofs(self, snap: GameSnapshot, descriptor: bytes, element_index: int, agreed: AgreedTrace) -> bytes:
        _, in_b, _ = decode(descriptor)
        j = element_index % in_b
        li = j // LEAF_BYTES
        if snap.op_index == 0:
            data = self.job.unit_inputs[snap.unit_index]
            roots = [tensor_root(x) for x in self.job.unit_inputs]
            path = inclusion_proof(roots_levels(roots), snap.unit_index, roots_zero)
            weights = ZERO32
            assert roots_root(roots) and tensor_depth(len(data)) == tensor_depth(in_b)
        else:
            data = agreed.own.tensors[snap.op_index - 1]
            path = agreed.slot_path(snap.op_index - 1)
            weights = ZERO32
        in_root = tensor_root(data)
        rp = range_proof(data, li, li + 1)
        return encode(
            ["(bytes32,bytes32[],bytes32,bytes,bytes32[])"],
            [(in_root, list(path), weights, rp.leaves, list(rp.siblings))],
        )
