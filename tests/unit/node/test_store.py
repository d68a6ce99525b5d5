"""StateStore survives a reopen (the crash model: the process dies, the file remains)."""

from gpumesh.client.chain.events import Cursor
from gpumesh.node.common.cursor import StateCursorStore
from gpumesh.node.common.store import StateStore


def test_records_cursors_and_outbox_survive_reopen(tmp_path):
    p = tmp_path / "state.db"
    s = StateStore(p)
    s.put("job", 7, {"state": "claimed"})
    s.update("job", 7, unit=3)
    StateCursorStore(s, "market").save(Cursor(120, "0xabc", ("0xabc:0",)))
    s.outbox_add("submit:job:7", b"\x02raw", "0xhash")
    s.outbox_add("submit:job:7", b"\x02other", "0xother")  # a retry of the same intent keeps the first
    s.close()

    s = StateStore(p)
    assert s.get("job", "7") == {"state": "claimed", "unit": 3}
    assert StateCursorStore(s, "market").load() == Cursor(120, "0xabc", ("0xabc:0",))
    pending = s.outbox_pending()
    assert [(e.intent, e.raw_tx, e.tx_hash) for e in pending] == [("submit:job:7", b"\x02raw", "0xhash")]
    s.outbox_settle("submit:job:7", "mined")
    assert s.outbox_pending() == []
    assert s.outbox_get("submit:job:7").status == "mined"
    assert s.all("job") == {"7": {"state": "claimed", "unit": 3}}
    s.delete("job", 7)
    assert s.get("job", 7) is None


def test_failed_transaction_rolls_back(tmp_path):
    s = StateStore(tmp_path / "s.db")
    s.put("job", 1, {"a": 1})
    try:
        with s.transaction() as db:
            db.execute("UPDATE records SET data='{\"a\": 2}' WHERE key='1'")
            raise RuntimeError("crash inside a handler")
    except RuntimeError:
        pass
    assert s.get("job", 1) == {"a": 1}


def test_put_many_is_one_transaction(tmp_path):
    p = tmp_path / "state.db"
    s = StateStore(p)
    s.put_many("out:1", [("00000000", {"root": "aa"}), ("00000001", {"root": "bb"})])
    s.put_many("out:1", [("00000001", {"root": "cc"})])  # an existing key is replaced
    bad = [("00000002", {"root": "dd"}), ("00000003", {"root": object()})]  # the second cannot be stored
    try:
        s.put_many("out:1", bad)
    except TypeError:
        pass
    s.close()
    s = StateStore(p)
    assert s.all("out:1") == {"00000000": {"root": "aa"}, "00000001": {"root": "cc"}}  # nothing of the failed batch
