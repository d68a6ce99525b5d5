"""The daemons' exactly-once transaction outbox (gpumesh.node.common.outbox, used by the worker and
by the dispute Responder) against a fake signer (the same behaviours run against the real TxSender
on anvil in tests/integration/watchtower/test_responder_toy.py and test_restart_and_races.py, and
tests/integration/worker/test_worker_crash.py): the signed bytes are recorded before they are
broadcast; a restart re-broadcasts the recorded bytes and never signs again; a transaction whose
nonce was taken is marked failed and a later attempt gets its own name; races are not errors."""

from __future__ import annotations

import pytest
from eth_account import Account

from gpumesh.client.chain import errors as chain_errors
from gpumesh.client.chain.tx import Call, SignedTx
from gpumesh.client.core.game import Side
from gpumesh.node.common.outbox import Outbox, OutboxError, plain_result, tx_nonce
from gpumesh.node.common.store import StateStore
from gpumesh.node.dispute import actions as A
from gpumesh.node.dispute.responder import Responder, action_intent

KEY = "0x" + "11" * 32


def signed(nonce: int, typed: bool = True) -> SignedTx:
    tx = {"to": "0x" + "22" * 20, "value": 0, "gas": 21000, "nonce": nonce, "chainId": 31337, "data": b""}
    if typed:
        tx |= {"maxFeePerGas": 10**9, "maxPriorityFeePerGas": 1}
    else:
        tx |= {"gasPrice": 10**9}
    s = Account.from_key(KEY).sign_transaction(tx)
    return SignedTx(bytes(s.raw_transaction), "0x" + bytes(s.hash).hex(), nonce, tx)


@pytest.mark.parametrize("typed", [True, False])
@pytest.mark.parametrize("nonce", [0, 1, 127, 128, 65535, 2**40])
def test_tx_nonce_reads_what_eth_account_signed(nonce, typed):
    assert tx_nonce(signed(nonce, typed).raw) == nonce


class FakeSender:
    """The raw path of TxSender the outbox uses; a chain that mines whatever it receives."""

    address = Account.from_key(KEY).address

    def __init__(self) -> None:
        self.nonce = 0
        self.pool: dict[str, bytes] = {}  # hash -> raw, mined at once
        self.broadcasts: list[bytes] = []
        self.signed: list[SignedTx] = []
        self.fail_broadcast = False
        self.revert_on_estimate: Exception | None = None

    def sign_and_send(self, call: Call, record=None):
        if self.revert_on_estimate is not None:
            raise self.revert_on_estimate
        st = signed(self.nonce)
        self.signed.append(st)
        record(st)
        self.broadcast(st.raw, call.context)
        return st

    def broadcast(self, raw: bytes, context: str = "") -> None:
        if self.fail_broadcast:
            raise KeyboardInterrupt("killed")  # the process dies here
        self.broadcasts.append(raw)
        h = next(s.tx_hash for s in self.signed if s.raw == raw)
        if h not in self.pool and tx_nonce(raw) == self.nonce:
            self.pool[h] = raw
            self.nonce += 1

    def receipt(self, tx_hash: str):
        return {"transactionHash": bytes.fromhex(tx_hash[2:]), "blockNumber": 1, "gasUsed": 50_000,
                "status": 1} if tx_hash in self.pool else None

    def known(self, tx_hash: str) -> bool:
        return tx_hash in self.pool

    def confirmed_nonce(self) -> int:
        return self.nonce

    def wait(self, st, timeout: float = 0, context: str = ""):
        h = st.tx_hash if isinstance(st, SignedTx) else st
        assert h in self.pool, "waited for a transaction the chain never got"
        return self.receipt(h)


class FakeClient:
    """The slice of DisputeGameClient the Responder uses: its signer and its receipt decoding."""

    def __init__(self) -> None:
        self.sender = FakeSender()
        self.result_of = plain_result


CALL = Call(fn=None, value=0, context="pick(game 1, move 3)")


def killed_after_record(tmp_path, intent: str) -> tuple[FakeSender, StateStore]:
    """A first life that signs and records `intent`, then dies before broadcasting it."""
    chain = FakeSender()
    store = StateStore(tmp_path / "s.sqlite")
    chain.fail_broadcast = True
    with pytest.raises(KeyboardInterrupt):
        Outbox(chain, store).send(intent, CALL)
    chain.fail_broadcast = False
    return chain, store


def test_records_before_broadcast_and_a_restart_rebroadcasts_the_same_bytes(tmp_path):
    chain, store = killed_after_record(tmp_path, "game:1:move:3")
    entry = store.outbox_get("game:1:move:3")
    assert entry.status == "pending" and entry.raw_tx == chain.signed[0].raw  # recorded, never sent
    assert chain.broadcasts == []

    again = Outbox(chain, StateStore(tmp_path / "s.sqlite"))  # a new life on the same file
    res = again.send("game:1:move:3", CALL)
    assert res.tx_hash == chain.signed[0].tx_hash
    assert len(chain.signed) == 1 and chain.broadcasts == [chain.signed[0].raw]  # signed once, sent once
    assert again.done("game:1:move:3")
    assert again.send("game:1:move:3", CALL).tx_hash == res.tx_hash  # idempotent afterwards too
    assert len(chain.signed) == 1 and len(chain.broadcasts) == 1


def test_flush_settles_what_a_previous_life_left_pending(tmp_path):
    chain, store = killed_after_record(tmp_path, "job:4:challenge")
    (sent,) = Outbox(chain, store).flush()
    assert (sent.intent, sent.tx_hash) == ("job:4:challenge", chain.signed[0].tx_hash)
    assert store.outbox_pending() == [] and store.outbox_get("job:4:challenge").status == "mined"


def test_a_recorded_tx_whose_nonce_was_taken_is_failed_and_retried_under_a_new_name(tmp_path):
    chain, store = killed_after_record(tmp_path, "game:1:move:3")
    chain.nonce = 1  # meanwhile another transaction of this key used nonce 0
    with pytest.raises(OutboxError, match="dropped"):
        Outbox(chain, store).send("game:1:move:3", CALL)
    assert store.outbox_get("game:1:move:3").status == "failed"
    res = Outbox(chain, store).send("game:1:move:3", CALL)  # the caller re-read the game: still wanted
    assert store.outbox_get("game:1:move:3#1").status == "mined" and res.tx_hash == chain.signed[-1].tx_hash


def test_a_race_revert_at_estimate_is_not_an_error_and_records_nothing(tmp_path):
    chain = FakeClient()
    stale = chain_errors.error_class("DisputeGame_StaleMove")("stale", {"gameId": 1, "expected": 3, "actual": 4})
    chain.sender.revert_on_estimate = stale
    r = Responder(chain, StateStore(tmp_path / "s.sqlite"))
    assert r._send("game:1:move:3", CALL) is False
    assert r.store.outbox_get("game:1:move:3") is None
    chain.sender.revert_on_estimate = chain_errors.error_class("DisputeGame_BadPick")("bad", {"gameId": 1, "childIndex": 0})
    with pytest.raises(chain_errors.ContractRevert):
        r._send("game:1:move:3", CALL)


def test_intents_name_the_game_and_move():
    assert action_intent(A.Pick(5, 9, 0, b"", ())) == "game:5:move:9"
    assert action_intent(A.Reveal(5, 10, ())) == "game:5:move:10"
    assert action_intent(A.ResolveTimeout(5)) == "game:5:timeout"


def test_the_challenger_side_needs_a_prover(tmp_path):
    with pytest.raises(ValueError, match="StepProver"):
        Responder(FakeClient(), StateStore(tmp_path / "s.sqlite")).play(1, Side.CHALLENGER, None, None)


def test_recheck_resends_what_a_reorg_removed_lowest_nonce_first(tmp_path):
    chain = FakeSender()
    store = StateStore(tmp_path / "s.sqlite")
    box = Outbox(chain, store)
    for intent in ("claim:job:1", "submit:job:1", "claim:job:2"):
        box.send(intent, CALL)
    assert box.recheck(head=5) == 0 and len(chain.broadcasts) == 3  # nothing undone: nothing sent
    # a reorg drops the blocks of the last two (the chain's nonce rolls back to 1)
    for s in chain.signed[1:]:
        del chain.pool[s.tx_hash]
    chain.nonce = 1
    assert box.recheck(head=5) == 2
    assert chain.broadcasts[3:] == [chain.signed[1].raw, chain.signed[2].raw]  # the same bytes, in nonce order
    assert len(chain.signed) == 3, "nothing signed again"
    assert box.send("submit:job:1", CALL).tx_hash == chain.signed[1].tx_hash
    assert store.outbox_get("claim:job:2").status == "pending"  # settled by its handler's next send
    # a transaction mined long ago (outside the re-check window) is not asked about
    asked = []
    chain.receipt = lambda h, _r=chain.receipt: asked.append(h) or _r(h)
    assert box.recheck(head=1 + 12) == 0 and asked == []


def test_recheck_with_the_head_asks_only_about_what_is_new_unless_the_chain_changed(tmp_path):
    from gpumesh.client.chain.provider import Head

    chain = FakeSender()
    hashes = {1: "0xb1", 2: "0xb2"}  # the chain's block hash by height, as the node answers now
    chain.block_hash = lambda n: hashes.get(n)
    asked: list[str] = []
    chain.receipt = lambda h, _r=chain.receipt: asked.append(h) or _r(h)
    box = Outbox(chain, StateStore(tmp_path / "s.sqlite"))
    box.send("claim:job:1", CALL)  # mined in block 1 (FakeSender's receipts)
    asked.clear()
    assert box.recheck(2, top=Head(2, "0xb2", 0, "0xb1")) == 0 and len(asked) == 1  # first look: all of them
    asked.clear()
    assert box.recheck(3, top=Head(3, "0xb3", 0, "0xb2")) == 0 and asked == []  # a child of the last: none
    hashes[3] = "0xb3"  # two blocks later: the node still has the last head at its height (one request)
    assert box.recheck(5, top=Head(5, "0xb5", 0, "0xb4")) == 0 and asked == []
    hashes[5] = "0xb5"
    box.send("submit:job:1", CALL)  # settled since the last re-check: asked about once
    asked.clear()
    assert box.recheck(6, top=Head(6, "0xb6", 0, "0xb5")) == 0 and asked == [chain.signed[1].tx_hash]
    # a reorg: the head is no child of the last one and the node has another block at its height
    hashes[6] = "0xc6"
    del chain.pool[chain.signed[1].tx_hash]
    chain.nonce = 1
    asked.clear()
    assert box.recheck(7, top=Head(7, "0xc7", 0, "0xc6")) == 1 and len(asked) == 2  # every recent one
    assert chain.broadcasts[-1] == chain.signed[1].raw


def test_recheck_needs_no_receipt_for_a_transaction_mined_in_the_new_head(tmp_path):
    from gpumesh.client.chain.provider import Head

    chain = FakeSender()
    real = chain.receipt
    chain.receipt = lambda h: (r := real(h)) and {**r, "blockHash": bytes.fromhex("b1" * 32)}  # mined in block 1
    box = Outbox(chain, StateStore(tmp_path / "s.sqlite"))
    assert box.recheck(0, top=Head(0, "0x" + "b0" * 32, 0, "")) == 0  # nothing sent yet
    box.send("claim:job:1", CALL)
    asked: list[str] = []
    chain.receipt = lambda h, _r=chain.receipt: asked.append(h) or _r(h)
    assert box.recheck(1, top=Head(1, "0x" + "b1" * 32, 0, "0x" + "b0" * 32)) == 0 and asked == []
    # the same height with another hash (a reorg replaced block 1): every recent one is asked about
    chain.block_hash = lambda n: None
    assert box.recheck(1, top=Head(1, "0x" + "c1" * 32, 0, "0x" + "b0" * 32)) == 0 and len(asked) == 1
