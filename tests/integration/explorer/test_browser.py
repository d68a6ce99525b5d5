"""The explorer page in a real browser: Debian's headless chromium (installed by `make setup`), driven
by playwright's bundled driver (no browser download), against the explorer server on the scenario's
devnet. It asserts what a person sees (the job list with its states, the cheater's job, the game's
path down to one element, the workers' table) and that a job posted while the page is open appears
without a reload; screenshots go to tests/.artifacts/explorer/ (the path is printed)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.integration.nodes.conftest import post_digits_job

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "explorer"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium with apt-get (needs root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extras (make setup)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def served(scenario):
    from gpumesh.client.explorer.reader import Explorer
    from gpumesh.client.explorer.server import ExplorerServer

    dn = scenario.dn
    srv = ExplorerServer(Explorer(dn.w3(), dn.deployment, dn.store(), network="devnet"), port=0, interval=0.2)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def shot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, ARTIFACTS / path.name)
    print(f"screenshot: {ARTIFACTS / path.name}")


def test_a_person_follows_the_cheater_down_to_one_element(scenario, served, browser, tmp_path):
    from playwright.sync_api import expect

    c, cheat, honest, dn = scenario.corruption, scenario.cheat.job, scenario.honest, scenario.dn
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    # 1. the job list: every job with its state, live-connected
    page.goto(served.url)
    rows = page.locator("table.jobs tbody tr")
    expect(rows).to_have_count(3)
    expect(page.locator("#live")).to_have_class(re.compile(r"\bon\b"))
    for job, state in ((honest.job_id, "Finalized"), (cheat.job_id, "Slashed"), (scenario.open_job.job_id, "Open")):
        row = rows.filter(has=page.get_by_role("link", name=f"#{job}", exact=True))
        expect(row.locator(".badge")).to_have_text(state)
    expect(rows.first).to_contain_text("0.3 ETH")  # newest first: the open job's reward
    expect(rows.first).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in \d+(m|h)"))
    shot(page, tmp_path, "1-jobs")

    # live: a job posted while the page is open appears without a reload
    posted = post_digits_job(dn, num_units=2, reward=2 * 10**17)
    expect(rows).to_have_count(4, timeout=10_000)
    expect(rows.first).to_contain_text(f"#{posted.job_id}")

    # 2. the cheater's job
    page.get_by_role("link", name=f"#{cheat.job_id}", exact=True).click()
    expect(page.locator("h1")).to_contain_text(f"Job #{cheat.job_id}")
    expect(page.locator("h1 .badge")).to_have_text("Slashed")
    expect(page.locator(".alert")).to_contain_text("proven wrong")
    expect(page.locator(".facts")).to_contain_text(scenario.cheat.outputs_cid)
    expect(page.locator(".facts")).to_contain_text("digits-cnn")
    expect(page.get_by_role("cell", name="JobSlashed")).to_be_visible()
    shot(page, tmp_path, "2-job")

    # 3. its game: the bisection path from unit to op to leaf to the one element
    page.get_by_role("link", name=f"game {scenario.game_id}", exact=True).first.click()
    expect(page.locator("h1")).to_contain_text(f"Dispute game {scenario.game_id}")
    expect(page.locator(".summary")).to_contain_text(
        re.compile(rf"unit {c.unit} -> op {c.op} \(\w+\) -> leaf [\d,]+ -> element {c.element:,}: challenger won \(one step\)"))
    stages = page.locator(".path .stage")
    expect(stages).to_have_count(4)
    expect(stages.nth(0).locator(".found")).to_have_text(f"unit {c.unit}")
    expect(stages.nth(1).locator(".found")).to_contain_text(f"op {c.op} — ")
    expect(stages.nth(3).locator(".found")).to_contain_text(f"element {c.element:,}")
    moves = page.locator("table.moves tbody tr")
    n = moves.count()
    assert n >= 10, f"a game to the one-step has many moves, the page shows {n}"
    expect(moves.first).to_contain_text("challenge")
    expect(moves.last).to_contain_text("step")
    expect(moves.last).to_contain_text("challenger won (one step)")
    assert {moves.nth(i).locator(".badge").first.inner_text() for i in range(n)} == {"worker", "challenger"}
    shot(page, tmp_path, "3-game")

    # 4. the workers: the slashed cheater and the paid worker
    page.get_by_role("link", name="Workers").click()
    wrows = page.locator("tbody tr")
    expect(wrows).to_have_count(2)
    cheater = wrows.filter(has=page.locator(f"a[title='{dn.address('cheater')}']"))
    expect(cheater.locator(".badge.slashed")).to_have_text("1")
    worker = wrows.filter(has=page.locator(f"a[title='{dn.address('worker')}']"))
    expect(worker).to_contain_text(f"{honest.reward / 10**18:g} ETH")
    shot(page, tmp_path, "4-workers")
    cheater.get_by_role("link").click()
    expect(page.locator("h1")).to_contain_text(dn.address("cheater"))
    slash = page.locator("tbody tr")
    expect(slash).to_have_count(1)
    expect(slash).to_contain_text(f"#{cheat.job_id}")
    expect(slash).to_contain_text(f"game {scenario.game_id}")
    expect(slash).to_contain_text("2 ETH")

    # 5. the watchtower that caught it: its game won and half the cheater's 2 ETH stake received
    page.get_by_role("link", name="Watchtowers").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr")).to_contain_text("1 ETH")
    page.locator("tbody tr a").first.click()
    expect(page.locator(".facts")).to_contain_text("slash shares received1 ETH")
    expect(page.locator("tbody tr .badge")).to_have_text("challenger won")
    shot(page, tmp_path, "5-watchtower")
    assert errors == [], errors
