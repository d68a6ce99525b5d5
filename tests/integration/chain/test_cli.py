"""The job and worker CLI on a real anvil: the whole lifecycle, --json reads, and custom errors as
one-line messages with the chain exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpumesh.client.cli.context import cli_state
from gpumesh.client.cli.main import main
from gpumesh.client.services.accounts import dev_account

REPO = Path(__file__).resolve().parents[3]
MLP = REPO / "examples/digits/mlp"
INPUTS = REPO / "examples/digits/data/test_inputs_mlp.safetensors"

pytestmark = pytest.mark.integration


@pytest.fixture()
def gm(chain, tmp_path, capsys):
    anvil, dep, path, w3 = chain

    def run(*args: str, ok: bool = True):
        cli_state._settings = None  # each invocation builds its Settings, as a new process would
        code = main(["--home", str(tmp_path), "--rpc-url", anvil.url, *args])
        out, err = capsys.readouterr()
        if ok:
            assert code == 0, err
        return code, out, err

    run.deployment = str(path)
    run.anvil = anvil
    run.w3 = w3
    return run


def _post(gm, account="dev1", **extra):
    args = ["job", "post", "--spec-cid", "bafyspec", "--program-root", "0x" + "11" * 32,
            "--inputs-root", "0x" + "22" * 32, "--units", "2", "--reward", "0.5", "--stake", "1",
            "--bond", "0.1", "--exec-time", "10m", "--challenge-window", "1h", "--claim-deadline", "1h",
            "--min-gpu-mem", "8192", "--account", account, "--deployment", gm.deployment, "--json"]
    for k, v in extra.items():
        args += [f"--{k.replace('_', '-')}", v]
    _, out, _ = gm(*args)
    return json.loads(out)["job_id"]


def test_cli_lifecycle(gm):
    d = ("--deployment", gm.deployment)
    _, out, _ = gm("worker", "stake", "2", "--account", "dev2", *d)
    assert out.startswith("staked 2 ETH, total 2 ETH")
    job_id = _post(gm)
    assert job_id == 1
    _, out, _ = gm("job", "status", "1", "--json", *d)
    st = json.loads(out)
    assert st["state"] == "Open" and st["reward"] == 5 * 10**17 and st["num_units"] == 2
    gm("job", "claim", "1", "--account", "dev2", *d)
    _, out, _ = gm("worker", "info", "--account", "dev2", "--json", *d)
    info = json.loads(out)
    assert info["locked"] == 10**18 and info["free"] == 10**18 and info["total"] == 2 * 10**18
    gm("job", "submit", "1", "--result-root", "0x" + "33" * 32, "--outputs-cid", "bafyout", "--account", "dev2", *d)
    code, _, err = gm("job", "finalize", "1", "--account", "dev3", *d, ok=False)
    assert code == 4 and err.startswith("gpumesh: error: finalizeJob(1): job 1: the challenge window is open until")
    gm.anvil.increase_time(3600)
    gm("job", "finalize", "1", "--account", "dev3", *d)
    _, out, _ = gm("job", "list", "--state", "finalized", "--json", *d)
    assert [j["job_id"] for j in json.loads(out)] == [1]
    _, out, _ = gm("job", "withdraw", "--account", "dev2", *d)
    assert out.startswith("withdrew 0.5 ETH")
    _, out, _ = gm("worker", "unstake", "2", "--account", "dev2", "--json", *d)
    assert json.loads(out)["unbonding_wei"] == 2 * 10**18
    gm.anvil.increase_time(3600)
    _, out, _ = gm("worker", "withdraw", "--account", "dev2", "--json", *d)
    assert json.loads(out)["amount_wei"] == 2 * 10**18
    _, out, _ = gm("worker", "info", dev_account(2).address, "--json", *d)
    assert json.loads(out)["total"] == 0


def test_cli_cancel_and_list(gm):
    d = ("--deployment", gm.deployment)
    _post(gm)
    _post(gm)
    code, _, err = gm("job", "cancel", "1", "--account", "dev3", *d, ok=False)
    assert code == 4
    assert err == (f"gpumesh: error: cancelJob(1): only the poster {dev_account(1).address} may do this to job 1 "
                   f"(you are {dev_account(3).address})\n")
    _, out, _ = gm("job", "cancel", "1", "--account", "dev1", *d)
    assert out.startswith("cancelled job 1")
    _, out, _ = gm("job", "list", "--json", *d)
    assert [(j["job_id"], j["state"]) for j in json.loads(out)] == [(1, "Cancelled"), (2, "Open")]
    _, out, _ = gm("job", "list", *d)
    assert "Cancelled" in out and "Open" in out


@pytest.mark.parametrize("args,message", [
    (("job", "claim", "1", "--account", "dev2"), "gpumesh: error: claimJob(1): "),
    (("worker", "withdraw", "--account", "dev5"), "gpumesh: error: withdraw(): nothing to withdraw for "),
    (("worker", "stake", "0", "--account", "dev5"), "gpumesh: error: stake(): the amount must be greater than zero"),
    (("worker", "unstake", "1", "--account", "dev5"), "gpumesh: error: requestUnstake(1000000000000000000): "),
    (("job", "withdraw", "--account", "dev5"), "gpumesh: error: withdraw(): nothing to withdraw from the market"),
])
def test_cli_custom_errors_are_one_line(gm, args, message):
    _post(gm)
    code, out, err = gm(*args, "--deployment", gm.deployment, ok=False)
    assert code == 4, err
    assert err.startswith(message)
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_usage_errors(gm):
    code, _, err = gm("worker", "stake", "lots", "--account", "dev2", "--deployment", gm.deployment, ok=False)
    assert code == 2 and "not an amount" in err
    code, _, err = gm("job", "list", "--state", "weird", "--deployment", gm.deployment, ok=False)
    assert code == 2 and "unknown state 'weird'" in err


def test_job_ids_that_do_not_exist_are_named(gm):
    d = ("--deployment", gm.deployment)
    code, _, err = gm("job", "status", "999", *d, ok=False)
    assert (code, err) == (2, "gpumesh: error: job 999 does not exist on this chain (no job has been posted yet)\n")
    _post(gm)
    code, _, err = gm("job", "watch", "999", *d, ok=False)
    assert (code, err) == (2, "gpumesh: error: job 999 does not exist on this chain (jobs are 1..1)\n")


def test_status_and_watch_show_times_and_a_timeout_is_an_error(gm):
    d = ("--deployment", gm.deployment)
    _post(gm)  # claim deadline: 1h from the chain's now
    _, out, _ = gm("job", "status", "1", *d)
    assert "claim deadline" in out and (" UTC (in 59m)" in out or " UTC (in 1h)" in out), out
    code, out, err = gm("job", "watch", "1", "--interval", "0.05", "--timeout", "0.3", *d, ok=False)
    assert code == 8, err
    assert err == "gpumesh: job watch: timed out after 0.3s; job 1 is still Open\n"
    lines = out.splitlines()
    assert lines[0].startswith("block ") and "JobPosted" in lines[0] and "reward=0.5 ETH" in lines[0]
    assert lines[-1].startswith("state: Open (claim deadline 20") and lines[-1].endswith((" UTC (in 1h))",
                                                                                         " UTC (in 59m))"))
    # a job that ends inside the timeout still exits 0
    gm("job", "cancel", "1", "--account", "dev1", *d)
    code, out, _ = gm("job", "watch", "1", "--interval", "0.05", "--timeout", "30", *d)
    assert out.splitlines()[-1].startswith("state: Cancelled")


NO_IPFS = ("--ipfs-api", "/ip4/127.0.0.1/tcp/9")  # nothing answers: a check that passed would fail on IPFS


@pytest.mark.parametrize("extra,message", [
    (("--exec-time", "1m"), "--exec-time 1m: the chain allows 5m to 365d"),
    (("--challenge-window", "5s"), "--challenge-window 5s: allowed 2m to 365d; a shorter window can close before a "
                                   "watchtower has fetched the outputs"),
    (("--bond", "0.01"), "--bond 0.01 ETH: the chain requires at least 0.05 ETH for a 1 ETH stake (the larger of "
                         "minDisputeBond "),
    (("--reward", "-1"), "--reward: -1 is negative; amounts are 0 or more"),
    (("--reward", "1e-30"), "--reward: 1e-30 is finer than 1 wei"),
    (("--reward", "0"), "--reward: must be more than 0"),
    (("--claim-deadline", "400d"), "--claim-deadline 400d: allowed 1s to 365d from now"),
])
def test_post_is_checked_against_the_chain_floors_first(gm, extra, message):
    code, _, err = gm(*NO_IPFS, "job", "post", "--program", str(MLP), "--inputs", str(INPUTS), "--reward", "0.5",
                      "--stake", "1", "--bond", "0.1", "--exec-time", "10m", "--account", "dev1",
                      "--deployment", gm.deployment, *extra, ok=False)
    assert code == 2, err
    assert err.startswith("gpumesh: error: " + message) and err.count("\n") == 1, err


@pytest.mark.parametrize("extra,message", [
    (("--samples", "600"), "--samples 600: "),
    (("--samples", "500"), "--samples 500: "),
    (("--class-names", "a,b,c"), "--class-names: 3 names, but the program has 10 output classes"),
])
def test_post_checks_samples_and_class_names_against_the_files(gm, extra, message):
    code, _, err = gm(*NO_IPFS, "job", "post", "--program", str(MLP), "--inputs", str(INPUTS), "--reward", "0.5",
                      "--stake", "1", "--bond", "0.1", "--account", "dev1", "--deployment", gm.deployment, *extra,
                      ok=False)
    assert code == 2, err
    assert err.startswith("gpumesh: error: " + message) and err.count("\n") == 1, err
    if "samples" in message:
        assert f"{INPUTS} holds 17 units of 32, so between 513 and 544 samples" in err


def test_post_from_an_empty_account_says_what_is_missing(gm, tmp_path, monkeypatch):
    pw = tmp_path / "pw"
    pw.write_text("pw\n")
    monkeypatch.setenv("GPUMESH_PASSWORD_FILE", str(pw))
    gm("account", "new", "empty")
    code, _, err = gm("job", "post", "--spec-cid", "bafyspec", "--program-root", "0x" + "11" * 32,
                      "--inputs-root", "0x" + "22" * 32, "--units", "2", "--reward", "0.5", "--stake", "1",
                      "--bond", "0.1", "--account", "empty", "--deployment", gm.deployment, ok=False)
    assert code == 3, err
    assert err.startswith("gpumesh: error: empty (0x") and "holds 0 ETH, but posting this job escrows the reward: " \
        "0.5 ETH plus up to" in err and "missing (fund it with " in err and err.count("\n") == 1, err


def test_devnet_fund_then_stake_and_account_send(gm, tmp_path, monkeypatch):
    d = ("--deployment", gm.deployment)
    pw = tmp_path / "pw"
    pw.write_text("pw\n")
    monkeypatch.setenv("GPUMESH_PASSWORD_FILE", str(pw))
    _, out, _ = gm("account", "new", "fresh", "--json")
    fresh = json.loads(out)["address"]
    # an empty account: the stake is refused in one line saying what is missing, nothing is sent
    code, _, err = gm("worker", "stake", "2", "--account", "fresh", *d, ok=False)
    assert code == 3 and err.count("\n") == 1, err
    assert err.startswith(f"gpumesh: error: fresh ({fresh}) holds 0 ETH, but staking sends the stake with the call: "
                          "2 ETH plus up to ")
    assert "missing (fund it with `gpumesh devnet fund fresh --amount 2.00" in err
    # fund it on the devnet, then the stake goes through
    _, out, _ = gm("devnet", "fund", "fresh", "--amount", "3")
    assert out == f"funded fresh {fresh} with 3 ETH: balance 3 ETH\n"
    _, out, _ = gm("worker", "stake", "2", "--account", "fresh", *d)
    assert out.startswith("staked 2 ETH, total 2 ETH")
    # send what is left to another address; the balances move by the amount (+ gas for the sender)
    w3 = gm.w3
    dest = dev_account(7).address
    before = w3.eth.get_balance(dest)
    _, out, _ = gm("account", "send", "--to", dest, "--amount", "0.5", "--account", "fresh", "--json")
    sent = json.loads(out)
    assert sent["from"] == fresh and sent["to"] == dest and sent["wei"] == str(5 * 10**17) and sent["gas_used"] == 21000
    assert w3.eth.get_balance(dest) - before == 5 * 10**17
    assert w3.eth.get_balance(fresh) < 5 * 10**17  # 3 - 2 staked - 0.5 sent - gas
    # more than it holds: refused before signing, with what is missing
    code, _, err = gm("account", "send", "--to", "dev7", "--amount", "1", "--account", "fresh", ok=False)
    assert code == 3 and f"{fresh} holds 0.49" in err and "missing" in err and err.count("\n") == 1, err
    code, _, err = gm("account", "send", "--to", "0x1234", "--amount", "1", "--account", "fresh", ok=False)
    assert code == 2 and err == "gpumesh: error: --to 0x1234: not an address (0x + 40 hex)\n"
    code, _, err = gm("devnet", "fund", "fresh", "--amount", "-1", ok=False)
    assert code == 2 and err.startswith("gpumesh: error: --amount: -1 is negative")


def test_devnet_fund_refuses_another_chain(chain):
    from types import SimpleNamespace

    from gpumesh.client.core.errors import ClientError
    from gpumesh.client.services.funds import fund_on_devnet

    _, _, _, w3 = chain
    other = SimpleNamespace(eth=SimpleNamespace(chain_id=1, get_balance=w3.eth.get_balance), provider=None)
    with pytest.raises(ClientError, match="devnet fund works on the devnet only"):
        fund_on_devnet(other, dev_account(1).address, 1)


def test_foundry_keystore_and_password_file_flags(gm, tmp_path, monkeypatch):
    """A keystore written by `cast wallet import` signs through --keystore PATH or by its name in the
    Foundry folder, its password from --password-file; `account balance --json` is exact wei."""
    folder = tmp_path / "foundry"
    folder.mkdir()
    ks = folder / "alice"
    ks.write_bytes((REPO / "tests/unit/cli/data/foundry_keystore_dev1").read_bytes())
    monkeypatch.setenv("GPUMESH_FOUNDRY_KEYSTORES", str(folder))
    monkeypatch.delenv("GPUMESH_PASSWORD_FILE", raising=False)
    pw = tmp_path / "pw"
    pw.write_text("pw123\n")
    dest = dev_account(8).address
    before = gm.w3.eth.get_balance(dest)
    _, out, _ = gm("--keystore", str(ks), "--password-file", str(pw), "account", "send", "--to", dest,
                   "--amount", "7wei", "--json")
    assert json.loads(out)["from"] == dev_account(1).address
    _, out, _ = gm("account", "send", "--to", dest, "--amount", "1gwei", "--account", "alice", "--password-file",
                   str(pw), "--json")
    assert json.loads(out)["from"] == dev_account(1).address
    _, out, _ = gm("account", "balance", dest, "--json")
    bal = json.loads(out)
    assert int(bal["wei"]) == before + 10**9 + 7 == gm.w3.eth.get_balance(dest)
    whole, frac = bal["eth"].split(".")
    assert int(whole) * 10**18 + int(frac.ljust(18, "0")) == int(bal["wei"])  # exact, no float
    # no password anywhere and no terminal: one line naming the flag
    code, _, err = gm("account", "balance", "alice", ok=False)
    assert code == 3 and "pass --password-file FILE" in err and err.count("\n") == 1, err


def test_worker_run_passes_confirmations_to_the_daemon(gm, tmp_path, monkeypatch):
    """`worker run --confirmations N` reaches the daemon's WorkerConfig (its EventReader then acts only
    on events N blocks deep); the daemon itself is stopped before it starts here."""
    import gpumesh.node.worker.app as worker_app
    from gpumesh.client.core.errors import GpumeshError
    from gpumesh.ipfs.node import EmbeddedNode

    seen = {}

    def capture(**kw):
        seen["config"] = kw["config"]
        raise GpumeshError("stopped by the test")

    monkeypatch.setattr(worker_app, "build_worker", capture)
    with EmbeddedNode(tmp_path / "ipfs") as node:
        code, _, err = gm("--ipfs-api", node.api_multiaddr, "worker", "run", "--confirmations", "3", "--account",
                          "dev2", "--state", str(tmp_path / "state"), "--deployment", gm.deployment, ok=False)
    assert code == 1 and "stopped by the test" in err
    assert seen["config"].confirmations == 3
    code, _, err = gm("worker", "run", "--confirmations", "-1", ok=False)
    assert code == 2 and "--confirmations" in err
    with EmbeddedNode(tmp_path / "ipfs2") as node:  # a chain with finality: act on 'safe' blocks only
        code, _, err = gm("--ipfs-api", node.api_multiaddr, "worker", "run", "--confirmations", "safe", "--account",
                          "dev2", "--state", str(tmp_path / "state"), "--deployment", gm.deployment, ok=False)
    assert code == 1 and seen["config"].confirmations == "safe"
    code, _, err = gm("watchtower", "run", "--confirmations", "soon", ok=False)
    assert code == 2 and "--confirmations: 'soon' is not a number of blocks (0 or more), 'safe' or 'finalized'" in err
