"""A dispute game as people read it: its moves (who moved, which entry point, gas, chess clocks) and
its bisection path, unit -> trace (op) -> tensor (leaf) -> the one element the verifier recomputed
(docs/protocol.md 5.2-5.5; a data request, 5.8, is one unit and its answer).

Pure: `game_story(facts, txs, clock_seconds, now)` takes the game's events (folded by
gpumesh.client.explorer.index) and what the reader learned about each transaction (`TxInfo`:
sender, decoded entry point, gas, block time) and returns a JSON-ready dict. The clocks are replayed
with the contract's own rule (core.game.clock_left: a move charges `now - lastMoveAt` to the mover),
so the replay can be checked against getGame's clocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpumesh.client.core.constants import LEAF_BYTES
from gpumesh.client.core.game import Outcome, Phase, Reason, clock_left
from gpumesh.client.core.merkle import leaf_count
from gpumesh.client.explorer.index import GameFacts


@dataclass(frozen=True)
class TxInfo:
    """One transaction that touched a game: sender, the entry point and its arguments, gas, time."""

    tx_hash: str
    block: int
    timestamp: int
    sender: str
    function: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    gas_used: int = 0


#: Entry point -> (the side whose move it is, the phase it is played in); None: anyone may call it.
MOVES: dict[str, tuple[str | None, Phase]] = {
    "challenge": ("challenger", Phase.NONE),
    "requestData": ("challenger", Phase.NONE),
    "reveal": ("worker", Phase.UNIT_DESCENT),  # the event names the descent
    "pick": ("challenger", Phase.UNIT_DESCENT),
    "commitTrace": ("worker", Phase.TRACE_COMMIT),
    "proveOp": ("challenger", Phase.OP_REVEAL),
    "revealLeaf": ("worker", Phase.LEAF_REVEAL),
    "step": ("challenger", Phase.ONE_STEP),
    "answerData": ("worker", Phase.DATA_REQUEST),
    "resolveTimeout": (None, Phase.NONE),
}


def phase_label(p: Phase) -> str:
    return p.name.lower().replace("_", " ")


def op_label(descriptor: bytes) -> dict[str, Any]:
    """The op a descriptor names (opcode, output type, element width); {} if it does not decode."""
    from gpumesh.client.core.ops.types import OpDescriptor

    try:
        d = OpDescriptor.decode(bytes(descriptor))
    except Exception:  # noqa: BLE001 - the descriptor was proven on-chain; an unknown one is shown raw
        return {}
    return {"opcode": d.opcode.name.lower(), "out": str(d.out), "elements": d.out.count,
            "width": d.out.dtype.width}


def _side(sender: str, g: GameFacts) -> str:
    s = sender.lower()
    return "worker" if s == g.worker.lower() else "challenger" if s == g.challenger.lower() else "anyone"


def _by_tx(g: GameFacts) -> list[tuple[str, list]]:
    order: list[tuple[str, list]] = []
    seen: dict[str, list] = {}
    for ev in g.events:
        if ev.tx_hash not in seen:
            seen[ev.tx_hash] = []
            order.append((ev.tx_hash, seen[ev.tx_hash]))
        seen[ev.tx_hash].append(ev)
    return order


def _describe(fn: str, evs: dict[str, dict], info: TxInfo) -> str:
    if "ChildrenRevealed" in evs:
        a = evs["ChildrenRevealed"]
        return f"revealed {len(a['children'])} nodes under node (height {a['height']}, index {a['index']})"
    if "ChildPicked" in evs:
        a = evs["ChildPicked"]
        return f"picked node (height {a['height']}, index {a['index']})"
    if "TraceCommitted" in evs:
        a = evs["TraceCommitted"]
        return f"committed the trace of unit {a['unitIndex']}: {a['numOps']} ops"
    if "OpProven" in evs:
        a = evs["OpProven"]
        op = op_label(a["descriptor"])
        return f"proved op {a['opIndex']}" + (f" ({op['opcode']} -> {op['out']})" if op else "")
    if "LeafRevealed" in evs:
        a = evs["LeafRevealed"]
        return f"revealed leaf {a['leafIndex']} ({len(a['leaf'])} bytes)"
    if "DataServed" in evs:
        return f"answered with unit {evs['DataServed']['unitIndex']}'s output ({len(evs['DataServed']['data'])} bytes)"
    if "DataRequested" in evs:
        return f"requested unit {evs['DataRequested']['unitIndex']}'s output on-chain"
    if "GameOpened" in evs:
        return "opened the game with its bond"
    if fn == "step":
        return f"one-step: the verifier recomputed element {info.args.get('elementIndex')}"
    if fn == "resolveTimeout":
        return "ended the game on a clock that ran out"
    return fn or "?"


def moves_of(g: GameFacts, txs: dict[str, TxInfo], clock_seconds: int) -> list[dict[str, Any]]:
    """Every transaction of the game in order, with side, action, phase, gas and both clocks after it."""
    left = {"worker": clock_seconds, "challenger": clock_seconds}
    last = None
    out = []
    for n, (tx, evs) in enumerate(_by_tx(g)):
        info = txs.get(tx) or TxInfo(tx, evs[0].block_number, 0, "")
        by_name = {e.name: e.args for e in evs}
        fn = info.function or ("challenge" if "GameOpened" in by_name else "")
        side = _side(info.sender, g) if info.sender else (MOVES.get(fn, (None,))[0] or "anyone")
        phase = MOVES.get(fn, (None, Phase.NONE))[1]
        for name in ("ChildrenRevealed", "ChildPicked"):
            if name in by_name:
                phase = Phase(by_name[name]["phase"])
        used = 0
        opening = "GameOpened" in by_name
        if opening or last is None:
            last = info.timestamp
        elif side in left and fn != "resolveTimeout":
            used = info.timestamp - last
            left[side], _ = clock_left(left[side], last, info.timestamp)
            last = info.timestamp
        res = by_name.get("GameResolved")
        out.append({
            "n": n, "side": side, "action": fn, "phase": "open" if opening else phase_label(phase),
            "text": _describe(fn, by_name, info), "gas": info.gas_used, "used_seconds": used,
            "clock_left": dict(left), "block": info.block, "time": info.timestamp, "tx": tx,
            "resolves": None if res is None else _result(res["outcome"], res["reason"]),
        })
    return out


def _result(outcome: int, reason: int) -> dict[str, str]:
    o, r = Outcome(outcome), Reason(reason)
    winner = {Outcome.WORKER_WON: "worker", Outcome.CHALLENGER_WON: "challenger"}.get(o, "")
    return {"outcome": o.name.lower().replace("_", " "), "reason": r.name.lower().replace("_", " "), "winner": winner}


def _stage(level: str, count: int, picks: list[dict], final: int | None, what: str) -> dict[str, Any]:
    """One tree of the descent: each pick narrows [lo, hi) of the `count` items to its subtree."""
    steps = [{"lo": 0, "hi": count, "height": None, "index": None}]
    for p in picks:
        h, i = int(p["height"]), int(p["index"])
        steps.append({"lo": min(i << h, count), "hi": min((i + 1) << h, count), "height": h, "index": i})
    return {"level": level, "count": count, "steps": steps, "final": final, "what": what}


def path_of(g: GameFacts, txs: dict[str, TxInfo]) -> list[dict[str, Any]]:
    """The bisection path as stages: unit (result tree), op (trace tree), leaf (tensor tree), element."""
    picks: dict[Phase, list[dict]] = {Phase.UNIT_DESCENT: [], Phase.TRACE_DESCENT: [], Phase.TENSOR_DESCENT: []}
    first: dict[str, Any] = {}
    step_element = None
    for ev in g.events:
        if ev.name == "ChildPicked":
            picks.setdefault(Phase(ev.args["phase"]), []).append(ev.args)
        elif ev.name in ("TraceCommitted", "OpProven", "LeafRevealed", "DataServed"):
            first.setdefault(ev.name, ev.args)
        info = txs.get(ev.tx_hash)
        if info is not None and info.function == "step":
            step_element = info.args.get("elementIndex")
    if g.data_unit is not None:
        served = first.get("DataServed")
        return [{"level": "unit", "count": g.num_units, "final": g.data_unit, "what": "unit",
                 "steps": [{"lo": 0, "hi": g.num_units, "height": None, "index": None},
                           {"lo": g.data_unit, "hi": g.data_unit + 1, "height": 0, "index": g.data_unit}],
                 "data_bytes": None if served is None else len(served["data"])}]
    stages = []
    trace = first.get("TraceCommitted")
    unit = trace["unitIndex"] if trace else _leaf_of(picks[Phase.UNIT_DESCENT], g.num_units)
    stages.append(_stage("unit", g.num_units, picks[Phase.UNIT_DESCENT], unit, "unit"))
    if trace is None:
        return stages
    op = first.get("OpProven")
    op_index = op["opIndex"] if op else _leaf_of(picks[Phase.TRACE_DESCENT], trace["numOps"])
    stages.append(_stage("op", trace["numOps"], picks[Phase.TRACE_DESCENT], op_index, "op of the trace"))
    if op is None:
        return stages
    info = op_label(op["descriptor"])
    stages[-1]["op"] = info
    leaf = first.get("LeafRevealed")
    leaves = leaf_count(int(op["outBytes"]))
    leaf_index = leaf["leafIndex"] if leaf else _leaf_of(picks[Phase.TENSOR_DESCENT], leaves)
    stages.append(_stage("leaf", leaves, picks[Phase.TENSOR_DESCENT], leaf_index,
                         f"{LEAF_BYTES}-byte leaf of op {op['opIndex']}'s output ({int(op['outBytes']):,} bytes)"))
    if step_element is not None:
        width = info.get("width", 1)
        e = int(step_element)
        stages.append({"level": "element", "count": info.get("elements"), "final": e, "what": "element",
                       "byte": e * width, "width": width, "leaf_first": (leaf_index or 0) * LEAF_BYTES // width,
                       "leaf_last": ((leaf_index or 0) + 1) * LEAF_BYTES // width - 1,
                       "steps": []})
    return stages


def _leaf_of(picks: list[dict], count: int) -> int | None:
    """The item a descent has reached (its last pick at height 0), or the only item of a one-item tree."""
    if count == 1:
        return 0
    if picks and int(picks[-1]["height"]) == 0:
        return int(picks[-1]["index"])
    return None


def summary(stages: list[dict[str, Any]], result: dict[str, str] | None) -> str:
    """One line: where the game went and how it ended."""
    parts = []
    for s in stages:
        if s["final"] is None:
            parts.append(f"{s['level']} ? of {s['count']}")
            continue
        label = f"{s['level']} {s['final']:,}"
        if s["level"] == "op" and s.get("op"):
            label += f" ({s['op']['opcode']})"
        parts.append(label)
    text = " -> ".join(parts)
    if result is None:
        return text + " (in play)"
    return f"{text}: {result['outcome']} ({result['reason']})"


def game_story(g: GameFacts, txs: dict[str, TxInfo], clock_seconds: int) -> dict[str, Any]:
    moves = moves_of(g, txs, clock_seconds)
    result = next((m["resolves"] for m in moves if m["resolves"]), None)
    stages = path_of(g, txs)
    return {"moves": moves, "path": stages, "result": result, "summary": summary(stages, result),
            "gas_total": sum(m["gas"] for m in moves),
            "moves_by_side": {s: sum(1 for m in moves if m["side"] == s) for s in ("worker", "challenger", "anyone")}}
