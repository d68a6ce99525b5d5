"""The explorer's data layer against the real contracts on anvil and the embedded IPFS node: what it
says about jobs, workers, watchtowers and the cheater's game is checked against the chain's own views
and the corruption the test planted."""

from __future__ import annotations

import pytest

from gpumesh.client.core.game import slash_paid
from gpumesh.client.explorer.api import answer
from gpumesh.client.explorer.reader import NotFound
from tests.integration.explorer.conftest import WINDOW

pytestmark = pytest.mark.integration


def test_jobs_show_their_states_deadlines_and_outputs(scenario, explorer):
    rows = {j["id"]: j for j in explorer.jobs()["jobs"]}
    h, c, o = scenario.honest, scenario.cheat.job, scenario.open_job
    assert {rows[h.job_id]["state"], rows[c.job_id]["state"], rows[o.job_id]["state"]} == {"Finalized", "Slashed", "Open"}
    assert rows[o.job_id]["reward"] == {"wei": str(3 * 10**17), "eth": "0.3"}
    assert rows[o.job_id]["deadlines"]["claim"] == explorer.market.get_job(o.job_id).deadline
    assert rows[c.job_id]["result_root"] == "0x" + scenario.cheat.result_root.hex()
    assert rows[c.job_id]["outputs_cid"] == scenario.cheat.outputs_cid
    assert rows[c.job_id]["games"] == [scenario.game_id]
    detail = explorer.job(h.job_id)
    assert detail["spec"]["program_cid"] == h.program_cid and detail["spec"]["meta"]["model"] == "digits-cnn"
    assert [e["event"] for e in detail["timeline"]] == ["JobPosted", "JobClaimed", "ResultSubmitted", "JobFinalized"]
    claimed, submitted = detail["timeline"][1], detail["timeline"][2]
    assert detail["deadlines"]["execution"] == claimed["time"] + 3600  # post_digits_job's execution time
    assert detail["deadlines"]["challenge"] == submitted["time"] + WINDOW
    assert detail["deadlines"]["claim"] is None  # Job.deadline is the claim deadline only while Open
    # the outputs link serves the file the worker published, verified against its CID
    assert explorer.cat(rows[h.job_id]["outputs_cid"], 1 << 20)[:8] != b""


def test_workers_and_watchtowers(scenario, explorer):
    dn = scenario.dn
    w = explorer.worker(dn.address("worker"))
    assert w["jobs_done"] == 1 and w["earnings"]["wei"] == str(scenario.honest.reward) and w["slashes"] == 0
    assert w["stake"]["wei"] == str(dn.registry().info(dn.address("worker")).total)
    ch = explorer.worker(dn.address("cheater"))
    assert ch["slashes"] == 1 and ch["stake"]["wei"] == "0" and ch["jobs_done"] == 0
    assert ch["slash_list"] == [{"job": scenario.cheat.job.job_id, "game": scenario.game_id,
                                 "stake": {"wei": str(scenario.cheat.job.stake), "eth": "2"}}]
    t = explorer.watchtower(dn.address("watchtower"))
    assert (t["games"], t["won"], t["lost"]) == ([scenario.game_id], 1, 0)
    assert t["slash_paid"]["wei"] == str(slash_paid(scenario.cheat.job.stake))
    with pytest.raises(NotFound):
        explorer.watchtower(dn.address("poster"))


def test_the_cheaters_game_path_reaches_the_planted_element(scenario, explorer):
    c = scenario.corruption
    g = explorer.game_detail(scenario.game_id)
    assert g["result"] == {"outcome": "challenger won", "reason": "one step", "winner": "challenger"}
    levels = [s["level"] for s in g["path"]]
    assert levels == ["unit", "op", "leaf", "element"]
    unit, op, leaf, element = g["path"]
    assert (unit["final"], op["final"], element["final"]) == (c.unit, c.op, c.element)
    assert leaf["final"] == element["byte"] // 1024
    assert op["op"]["opcode"] and unit["count"] == 4
    # every pick narrows the range it came from
    for s in (unit, op, leaf):
        for a, b in zip(s["steps"], s["steps"][1:], strict=False):
            assert a["lo"] <= b["lo"] < b["hi"] <= a["hi"]
    # the clocks replayed move by move end where the contract's clocks are
    st = explorer.game.get_game(scenario.game_id)
    assert g["moves"][-1]["clock_left"] == {"worker": st.worker_clock, "challenger": st.challenger_clock}
    sides = {m["side"] for m in g["moves"]}
    assert sides == {"worker", "challenger"} and all(m["gas"] > 21_000 for m in g["moves"])
    assert g["moves"][-1]["action"] == "step" and g["moves"][0]["action"] == "challenge"
    assert g["moves_by_side"]["worker"] + g["moves_by_side"]["challenger"] == len(g["moves"])


def test_api_dispatch_and_refusals(scenario, explorer):
    assert answer(explorer, "/api/overview")["counts"]["games"] == 1
    assert answer(explorer, "/api/jobs", {"state": "open"})["jobs"][0]["id"] == scenario.open_job.job_id
    page = answer(explorer, "/api/jobs", {"limit": "1", "offset": "1"})  # newest first, one a page
    assert (page["total"], [j["id"] for j in page["jobs"]]) == (3, [scenario.cheat.job.job_id])
    with pytest.raises(NotFound):
        answer(explorer, "/api/jobs/999")
    from gpumesh.client.core.errors import UsageError

    with pytest.raises(UsageError):
        answer(explorer, "/api/jobs/abc")
    with pytest.raises(UsageError):
        answer(explorer, "/api/workers/0x12")
