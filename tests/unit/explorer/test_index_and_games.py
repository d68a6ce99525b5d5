"""The explorer's pure parts on hand-made events: ChainIndex folds jobs, workers, watchtowers and games;
games.game_story replays the chess clocks with the contract's rule and draws the bisection path."""

from __future__ import annotations

import itertools

from gpumesh.client.chain.events import ChainEvent
from gpumesh.client.core.game import DATA_FEE_BPS, Outcome, Phase, Reason, bps_up
from gpumesh.client.explorer.games import TxInfo, game_story, summary
from gpumesh.client.explorer.index import ChainIndex

MARKET, REGISTRY, GAME = "0x" + "a1" * 20, "0x" + "b2" * 20, "0x" + "c3" * 20
POSTER, WORKER, CHEATER, TOWER, OTHER = ("0x" + c * 40 for c in "12345")
ETH = 10**18
_log = itertools.count()


def ev(address: str, name: str, block: int, tx: str = "", **args) -> ChainEvent:
    n = next(_log)
    return ChainEvent(name, args, address, block, f"0xb{block}", tx or f"0xt{n}", n)


def honest_and_slashed() -> list[ChainEvent]:
    return [
        ev(REGISTRY, "Staked", 1, worker=WORKER, amount=2 * ETH, totalStake=2 * ETH),
        ev(REGISTRY, "Staked", 1, worker=CHEATER, amount=2 * ETH, totalStake=2 * ETH),
        ev(MARKET, "JobPosted", 2, jobId=1, poster=POSTER, reward=ETH, specCid="QmSpec1", minGpuMemoryMiB=0),
        ev(MARKET, "JobClaimed", 3, jobId=1, worker=WORKER, executionDeadline=5000),
        ev(MARKET, "ResultSubmitted", 4, jobId=1, worker=WORKER, resultRoot=b"\x11" * 32, outputsCid="QmOut1",
           challengeDeadline=9000),
        ev(MARKET, "JobFinalized", 5, jobId=1, worker=WORKER, reward=ETH),
        ev(MARKET, "Withdrawn", 5, account=WORKER, amount=ETH),  # no job: not folded into any
        ev(MARKET, "JobPosted", 6, jobId=2, poster=POSTER, reward=ETH, specCid="QmSpec2", minGpuMemoryMiB=0),
        ev(MARKET, "JobClaimed", 7, jobId=2, worker=CHEATER, executionDeadline=6000),
        ev(GAME, "GameOpened", 8, gameId=1, jobId=2, challenger=TOWER, worker=CHEATER, bond=ETH // 2, numUnits=4,
           resultRoot=b"\x22" * 32),
        ev(GAME, "GameResolved", 9, gameId=1, jobId=2, outcome=Outcome.CHALLENGER_WON, reason=Reason.ONE_STEP, burned=0),
        ev(MARKET, "JobSlashed", 9, jobId=2, worker=CHEATER, gameId=1, stake=2 * ETH),
        ev(REGISTRY, "StakeSlashed", 9, worker=CHEATER, beneficiary=TOWER, amount=2 * ETH, burned=ETH, paid=ETH),
        ev(MARKET, "SlashSettled", 9, jobId=2, worker=CHEATER, gameId=1, challenger=TOWER, stake=2 * ETH, paid=ETH),
        ev("0x" + "ee" * 20, "JobPosted", 9, jobId=7, poster=POSTER),  # another contract: ignored
    ]


def test_index_folds_jobs_workers_and_watchtowers():
    ix = ChainIndex(MARKET, REGISTRY, GAME)
    ix.apply(honest_and_slashed())
    assert sorted(ix.jobs) == [1, 2]
    j1 = ix.jobs[1]
    assert (j1.poster, j1.spec_cid, j1.worker, j1.outputs_cid, j1.paid) == (POSTER, "QmSpec1", WORKER, "QmOut1", ETH)
    assert (j1.execution_deadline, j1.challenge_deadline, j1.result_root) == (5000, 9000, b"\x11" * 32)
    assert [e.name for e in j1.timeline] == ["JobPosted", "JobClaimed", "ResultSubmitted", "JobFinalized"]
    assert ix.jobs[2].games == [1]
    w, c = ix.workers[WORKER], ix.workers[CHEATER]
    assert (w.finalized, w.earnings, w.slashes, w.staked) == ([1], ETH, [], 2 * ETH)
    assert (c.claimed, c.earnings, c.slashed) == ([2], 0, 2 * ETH)
    assert c.slashes == [{"job": 2, "game": 1, "stake": 2 * ETH}]
    t = ix.towers[TOWER]
    assert (t.games, t.won, t.lost, t.bonds, t.paid, t.bonds_lost) == ([1], 1, 0, ETH // 2, ETH, 0)
    assert ix.games[1].outcome == Outcome.CHALLENGER_WON and ix.games[1].kind == "challenge"
    assert ix.blocks == set(range(1, 10)) and ix.events_seen == len(honest_and_slashed())


def test_a_lost_challenge_and_an_answered_data_request_pay_the_worker():
    bond = ETH // 2 + 1  # odd: the burned half rounds up
    ix = ChainIndex(MARKET, REGISTRY, GAME)
    ix.apply([
        ev(GAME, "GameOpened", 1, gameId=1, jobId=1, challenger=TOWER, worker=WORKER, bond=bond, numUnits=2,
           resultRoot=b"\0" * 32),
        ev(GAME, "GameResolved", 2, gameId=1, jobId=1, outcome=Outcome.WORKER_WON, reason=Reason.ONE_STEP,
           burned=bps_up(bond, 5000)),
        ev(GAME, "GameOpened", 3, gameId=2, jobId=1, challenger=OTHER, worker=WORKER, bond=bond, numUnits=2,
           resultRoot=b"\0" * 32),
        ev(GAME, "DataRequested", 3, gameId=2, jobId=1, requester=OTHER, unitIndex=1),
        ev(GAME, "DataServed", 4, gameId=2, jobId=1, unitIndex=1, data=b"\x05" * 10),
        ev(GAME, "GameResolved", 4, gameId=2, jobId=1, outcome=Outcome.WORKER_WON, reason=Reason.DATA_SERVED, burned=0),
        ev(GAME, "ChildPicked", 5, gameId=99, moveNo=0, phase=1, height=0, index=0, node=b"\0" * 32),  # unknown game
    ])
    assert ix.towers[TOWER].lost == 1 and ix.towers[TOWER].bonds_lost == bond
    assert ix.workers[WORKER].game_income == (bond - bps_up(bond, 5000)) + bps_up(bond, DATA_FEE_BPS)
    assert ix.games[2].kind == "data request" and ix.towers[OTHER].data_requests == [2]
    assert 99 not in ix.games
    story = game_story(ix.games[2], {}, 100)
    assert story["path"][0]["final"] == 1 and story["path"][0]["data_bytes"] == 10
    assert story["result"]["winner"] == "worker"


def _game(moves: list[tuple[int, str, str, list[tuple[str, dict]], dict]]):
    """A game from (time, sender, function, [(event, args)], call args) rows; gas = 1000 + row number."""
    ix = ChainIndex(MARKET, REGISTRY, GAME)
    txs, events = {}, []
    for n, (t, sender, fn, evs, call) in enumerate(moves):
        tx = f"0xmove{n}"
        txs[tx] = TxInfo(tx, 10 + n, t, sender, fn, call, 1000 + n)
        for name, args in evs:
            events.append(ev(GAME, name, 10 + n, tx, gameId=1, **args))
    ix.apply(events)
    return ix.games[1], txs


def pick(phase: Phase, h: int, i: int) -> tuple[str, dict]:
    return "ChildPicked", {"moveNo": 0, "phase": int(phase), "height": h, "index": i, "node": b"\0" * 32}


def reveal(phase: Phase, h: int, i: int, n: int) -> tuple[str, dict]:
    return "ChildrenRevealed", {"moveNo": 0, "phase": int(phase), "height": h, "index": i, "children": [b"\0" * 32] * n}


OPENED = ("GameOpened", {"jobId": 3, "challenger": TOWER, "worker": CHEATER, "bond": ETH, "numUnits": 10,
                         "resultRoot": b"\0" * 32})


def full_game():
    U, T, X = Phase.UNIT_DESCENT, Phase.TRACE_DESCENT, Phase.TENSOR_DESCENT
    return _game([
        (100, TOWER, "challenge", [OPENED], {}),
        (110, CHEATER, "reveal", [reveal(U, 4, 0, 16)], {}),  # units: depth 4 over 10
        (140, TOWER, "pick", [pick(U, 0, 9)], {}),
        (150, CHEATER, "commitTrace", [("TraceCommitted", {"moveNo": 2, "unitIndex": 9, "traceRoot": b"\1" * 32,
                                                            "numOps": 3, "numWeights": 1, "opsRoot": b"\2" * 32})], {}),
        (155, CHEATER, "reveal", [reveal(T, 2, 0, 4)], {}),
        (175, TOWER, "pick", [pick(T, 0, 2)], {}),
        (180, TOWER, "proveOp", [("OpProven", {"moveNo": 5, "opIndex": 2, "outBytes": 5000, "descriptor": b"\xff"})], {}),
        (190, CHEATER, "reveal", [reveal(X, 3, 0, 8)], {}),  # 5 leaves of 1024 bytes
        (191, TOWER, "pick", [pick(X, 0, 4)], {}),
        (200, CHEATER, "revealLeaf", [("LeafRevealed", {"moveNo": 8, "leafIndex": 4, "leaf": b"\0" * 1024})], {}),
        (260, TOWER, "step", [("GameResolved", {"jobId": 3, "outcome": 2, "reason": 0, "burned": 0})],
         {"elementIndex": 4100}),
    ])


def test_the_story_replays_the_clocks_and_draws_the_path():
    g, txs = full_game()
    s = game_story(g, txs, clock_seconds=1000)
    moves = s["moves"]
    assert [m["side"] for m in moves] == ["challenger"] + ["worker", "challenger"] + ["worker"] * 2 + \
        ["challenger"] * 2 + ["worker", "challenger", "worker", "challenger"]
    # every move charges its time since the previous move to its mover (DisputeGame._begin)
    assert [m["used_seconds"] for m in moves] == [0, 10, 30, 10, 5, 20, 5, 10, 1, 9, 60]
    assert moves[-1]["clock_left"] == {"worker": 1000 - (10 + 10 + 5 + 10 + 9), "challenger": 1000 - (30 + 20 + 5 + 1 + 60)}
    assert [m["phase"] for m in moves[:4]] == ["open", "unit descent", "unit descent", "trace commit"]
    assert moves[-1]["resolves"] == {"outcome": "challenger won", "reason": "one step", "winner": "challenger"}
    assert s["gas_total"] == sum(1000 + n for n in range(11))
    unit, op, leaf, element = s["path"]
    assert (unit["count"], unit["final"], [(x["lo"], x["hi"]) for x in unit["steps"]]) == (10, 9, [(0, 10), (9, 10)])
    assert (op["count"], op["final"], op["op"]) == (3, 2, {})  # a descriptor that does not decode is shown raw
    assert (leaf["count"], leaf["final"]) == (5, 4)
    assert (element["final"], element["byte"], element["leaf_first"], element["leaf_last"]) == (4100, 4100, 4096, 5119)
    assert s["summary"] == "unit 9 -> op 2 -> leaf 4 -> element 4,100: challenger won (one step)"


def test_a_timeout_by_anyone_charges_no_clock_and_a_game_in_play_says_so():
    g, txs = _game([
        (100, TOWER, "challenge", [OPENED], {}),
        (150, CHEATER, "reveal", [reveal(Phase.UNIT_DESCENT, 4, 0, 16)], {}),
        (5000, OTHER, "resolveTimeout", [("GameResolved", {"jobId": 3, "outcome": 1, "reason": 1, "burned": 5})], {}),
    ])
    s = game_story(g, txs, clock_seconds=1000)
    assert [m["side"] for m in s["moves"]] == ["challenger", "worker", "anyone"]
    assert s["moves"][-1]["clock_left"] == {"worker": 950, "challenger": 1000}
    assert s["result"]["winner"] == "worker" and s["result"]["reason"] == "timeout"
    assert s["path"][0]["final"] is None
    assert summary(s["path"], None) == "unit ? of 10 (in play)"
