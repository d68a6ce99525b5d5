"""One-step gas of Int8Verifier on anvil for linear with K = 1,024 and K = 4,096 (goal:
<= 1M for K = 1,024) and for one representative element of every op. Each op is placed in the
reference job of docs/protocol.md 5.6: 1,024 units, 1,024 ops (input 0 is agreed trace slot 1,022
of op 1,023, depth 10), 64 weights. Two figures per element:
  tx    eth_estimateGas of a direct `verify` transaction: 21k base + calldata + execution. Under
        Prague's EIP-7623 calldata floor (anvil's default fork) large proofs cost their floor.
  exec  gas a contract pays for the `verify` call (GasProbe: gasleft() around the call): what
        DisputeGame.step spends on the verdict beyond its own calldata.
Prints both, the calldata bytes, and each op's figures as a ratio of the cheapest one-step (relu:
one byte, one leaf) measured in the same run.

    .venv/bin/python bench/bench_onestep_gas.py [--json]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from web3 import Web3

from gpumesh.client.chain.anvil import start_anvil
from gpumesh.client.core import merkle
from gpumesh.client.core.constants import LEAF_BYTES
from gpumesh.client.core.ops.reference import compute_element, element_ranges
from gpumesh.client.core.ops.types import DType, Opcode, ReqMode, Requant, SlotKind, SlotRef, TensorType
from gpumesh.node.dispute.int8_prover import JobInputs, SlotSource, encode_proofs
from gpumesh.node.runtime.randprog import OpCase, _case

ROOT = Path(__file__).resolve().parents[1]
UNITS, OPS, WEIGHTS = 1024, 1024, 64
OP_INDEX, X_SLOT, UNIT = OPS - 1, OPS - 2, 513
I8, I32 = DType.INT8, DType.INT32
GOAL_K1024 = 1_000_000


def _rng(tag: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(tag.encode()).digest()[:8], "big"))


def _arr(tag: str, t: TensorType) -> np.ndarray:
    g = _rng(tag)
    if t.dtype == I8:
        return g.integers(-128, 128, t.shape).astype(np.int8)
    return g.integers(-(2**24), 2**24, t.shape).astype(np.int32)


def _qp(n: int) -> np.ndarray:
    g = _rng(f"qp{n}")
    return np.stack([g.integers(2**29, 2**31 - 1, n), g.integers(30, 40, n)], axis=1).astype(np.int32)


def linear(k: int, mode: ReqMode) -> OpCase:
    x, w, b = TensorType(I8, (64, k)), TensorType(I8, (256, k)), TensorType(I32, (256,))
    types, arrs = [x, w, b], [_arr("x", x), _arr("w", w), _arr("b", b)]
    req = Requant()
    if mode == ReqMode.PER_CHANNEL:
        types.append(TensorType(I32, (256, 2)))
        arrs.append(_qp(256))
        req = Requant(mode, 0, 0, 3, -128, 127)
    return _case(Opcode.LINEAR, types, arrs, x_zp=-5, requant=req)


def cases() -> dict[str, tuple[OpCase, int]]:
    img = TensorType(I8, (1, 28, 28, 16))
    pool = TensorType(I8, (1, 28, 28, 64))
    win = {"kh": 3, "kw": 3, "sh": 2, "sw": 2, "ph": 1, "pw": 1}
    t64 = TensorType(I8, (64, 1024))
    i32 = TensorType(I32, (64, 256))
    ap = TensorType(I8, (1, 8, 8, 256))
    tr = TensorType(I8, (1, 32, 32, 64))
    lg = TensorType(I32, (1, 1000))
    return {
        "relu [64,1024]": (_case(Opcode.RELU, [t64], [_arr("r", t64)], zp=0), 40_000),
        "linear K=1024 per-channel": (linear(1024, ReqMode.PER_CHANNEL), 64 * 256 // 2 + 77),
        "linear K=1024 int32 out": (linear(1024, ReqMode.NONE), 64 * 256 // 2 + 77),
        "linear K=4096 per-channel": (linear(4096, ReqMode.PER_CHANNEL), 64 * 256 // 2 + 77),
        "linear K=4096 int32 out": (linear(4096, ReqMode.NONE), 64 * 256 // 2 + 77),
        "requant [64,256] per-channel": (_case(Opcode.REQUANT, [i32, TensorType(I32, (256, 2))],
                                               [_arr("q", i32), _qp(256)],
                                               requant=Requant(ReqMode.PER_CHANNEL, 0, 0, 0, -128, 127)), 9_000),
        "add [64,1024]": (_case(Opcode.ADD, [t64, t64], [_arr("a", t64), _arr("b", t64)], za=1, zb=-2,
                                ma=2**30, mb=2**29, shift=31, zy=4, lo=-128, hi=127), 40_000),
        "im2col 3x3 [1,28,28,16]": (_case(Opcode.IM2COL, [img], [_arr("i", img)], pad=0,
                                          **{**win, "sh": 1, "sw": 1}), 100_000),
        "maxpool 3x3/2 [1,28,28,64]": (_case(Opcode.MAXPOOL, [pool], [_arr("m", pool)], **win), 7_000),
        "avgpool global [1,8,8,256]": (_case(Opcode.AVGPOOL, [ap], [_arr("g", ap)], x_zp=3,
                                             requant=Requant(ReqMode.PER_TENSOR, 2**31 - 1, 37, 0, -128, 127)), 200),
        "argmax int32 [1,1000]": (_case(Opcode.ARGMAX, [lg], [_arr("l", lg)]), 0),
        "reshape int32 [64,256]": (_case(Opcode.RESHAPE, [i32], [_arr("s", i32)], out=TensorType(I32, (16384,))), 9_999),
        "transpose [1,32,32,64] (0,3,1,2)": (_case(Opcode.TRANSPOSE, [tr], [_arr("t", tr)], perm=(0, 3, 1, 2)), 33_333),
    }


def fake(tag: str) -> bytes:
    return hashlib.sha256(tag.encode()).digest()


def measure(verifier, probe, case: OpCase, e: int) -> tuple[int, int, int]:
    data = [np.ascontiguousarray(a).tobytes() for a in case.inputs]
    desc = case.desc
    ins = list(desc.inputs)
    ins[0] = SlotRef(SlotKind.OP_OUTPUT, X_SLOT, ins[0].type)  # x is an agreed earlier op output
    desc = dataclasses.replace(desc, inputs=tuple(ins))
    weights = list(data[1:]) + [fake(f"w{i}") for i in range(WEIGHTS - len(data) + 1)]
    job = JobInputs(weights, [fake(f"u{u}") for u in range(UNITS)])
    x_levels = merkle.tensor_levels(data[0])
    trace_roots = [fake(f"t{j}") for j in range(OPS)]
    trace_roots[X_SLOT] = x_levels[-1][0]
    trace_levels = merkle.roots_levels(trace_roots)
    x_src = SlotSource(data[0], x_levels, tuple(merkle.inclusion_proof(trace_levels, X_SLOT, merkle.roots_zero)))

    def source(i: int) -> SlotSource:
        return x_src if i == 0 else job.weight_source(i - 1)

    blob = encode_proofs(desc, e, source)
    value = compute_element(desc, e, [data[r.input][r.start : r.end] for r in element_ranges(desc, e)])
    w = desc.out.dtype.width
    leaf = bytearray(LEAF_BYTES)
    off = (e * w) % LEAF_BYTES
    leaf[off : off + w] = value.to_bytes(w, "little", signed=True)
    ctx = (fake("program"), job.inputs_root, trace_levels[-1][0], UNIT, UNITS, OP_INDEX, OPS, len(weights),
           e * w // LEAF_BYTES)
    fn = verifier.functions.verify(ctx, desc.encode(), e, bytes(leaf), blob)
    assert fn.call() is True, "the verifier must accept the reference value"
    exec_gas, ok = probe.functions.measure(verifier.address, ctx, desc.encode(), e, bytes(leaf), blob).call()
    assert ok is True
    return fn.estimate_gas(), exec_gas, len(blob) + len(desc.encode()) + LEAF_BYTES


def deploy(w3: Web3) -> tuple[object, object, int]:
    """Int8Verifier and GasProbe from forge artifacts built into a temporary FOUNDRY_OUT."""
    sources = ["contracts/src/dispute/Int8Verifier.sol", "contracts/test/verifier/GasProbe.sol"]
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, FOUNDRY_OUT=out, FOUNDRY_CACHE_PATH=str(Path(out) / "cache"))
        subprocess.run([str(ROOT / "node_modules/.bin/forge"), "build", "--quiet", *sources],  # noqa: S603
                       cwd=ROOT, env=env, check=True)
        docs = {n: json.loads((Path(out) / f"{n}.sol" / f"{n}.json").read_text()) for n in ("Int8Verifier", "GasProbe")}
    made = {}
    for name, doc in docs.items():
        c = w3.eth.contract(abi=doc["abi"], bytecode=doc["bytecode"]["object"])
        rcpt = w3.eth.wait_for_transaction_receipt(c.constructor().transact({"from": w3.eth.accounts[0]}))
        made[name] = (w3.eth.contract(address=rcpt.contractAddress, abi=doc["abi"]), rcpt.gasUsed)
    code = len(w3.eth.get_code(made["Int8Verifier"][0].address))
    return made["Int8Verifier"][0], made["GasProbe"][0], made["Int8Verifier"][1], code


def main() -> int:
    as_json = "--json" in sys.argv
    rows = []
    with start_anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        verifier, probe, deploy_gas, code = deploy(w3)
        for name, (case, e) in cases().items():
            tx, ex, cd = measure(verifier, probe, case, e)
            rows.append({"op": name, "tx_gas": tx, "exec_gas": ex, "calldata_bytes": cd})
    base = rows[0]
    if as_json:
        print(json.dumps({"deploy_gas": deploy_gas, "code_bytes": code, "baseline": base["op"], "rows": rows}, indent=1))
        return 0
    print(f"Int8Verifier: deploy {deploy_gas:,} gas, runtime code {code:,} bytes (EIP-170 limit 24,576)")
    print(f"{'op (element)':36} {'tx gas':>10} {'exec gas':>10} {'calldata B':>11} {'tx/relu':>8} {'exec/relu':>9}")
    for r in rows:
        print(f"{r['op']:36} {r['tx_gas']:>10,} {r['exec_gas']:>10,} {r['calldata_bytes']:>11,} "
              f"{r['tx_gas'] / base['tx_gas']:>8.2f} {r['exec_gas'] / base['exec_gas']:>9.2f}")
    k1024 = max(r["tx_gas"] for r in rows if r["op"].startswith("linear K=1024"))
    print(f"linear K=1024 worst tx: {k1024:,} gas = {k1024 / GOAL_K1024:.2f} of the 1M goal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
