"""What `job watch` / `job status` / `job result` show a person: short hex instead of raw bytes (in
lists too), the contracts' enums by name, deadlines as UTC times with how far they are, ETH amounts;
and click's usage errors as one line naming the command and the parameter."""

from __future__ import annotations

import datetime
import subprocess
import sys
from types import SimpleNamespace

from gpumesh.client.cli.job_cmd import _event_line, _json_arg, _short_hex, _span, _when

NOW = int(datetime.datetime(2026, 12, 2, 6, 0, 0, tzinfo=datetime.UTC).timestamp())


def test_span_and_when():
    assert [_span(s) for s in (0, 45, 300, 3599, 3600, 7500, 86400 + 7200)] + [_span(86400 * 365)] == \
        ["0s", "45s", "5m", "59m", "1h", "2h05m", "1d2h", "365d"]
    assert _when(NOW + 300, now=NOW) == "2026-12-02 06:05:00 UTC (in 5m)"
    assert _when(NOW - 180, now=NOW) == "2026-12-02 05:57:00 UTC (3m ago)"
    assert _when(NOW, now=NOW).endswith("(now)")
    assert _when(0, now=NOW) == "-"


def test_short_hex():
    assert _short_hex(b"\x01\x02") == "0x0102"
    assert _short_hex(bytes.fromhex("e049") + b"\0" * 28 + bytes.fromhex("beef")) == "0xe0490000…beef"


def _ev(name, **args):
    return SimpleNamespace(name=name, block_number=7, args={"gameId": 3, **args})


def test_children_are_hex_and_enums_are_names():
    kids = [bytes.fromhex("e049") + b"\x11" * 30, b"\x22" * 32]
    line = _event_line(_ev("ChildrenRevealed", moveNo=2, phase=1, height=4, index=0, children=kids), NOW)
    assert line == ("block 7: game 3 ChildrenRevealed moveNo=2 phase=UNIT_DESCENT height=4 index=0 "
                    "children=[0xe0491111…1111, 0x22222222…2222]")
    assert "b'" not in line
    line = _event_line(_ev("GameResolved", jobId=2, outcome=2, reason=0, burned=5 * 10**17), NOW)
    assert line == "block 7: game 3 GameResolved outcome=CHALLENGER_WON reason=ONE_STEP burned=0.5 ETH"
    assert "reason=TIMEOUT" in _event_line(_ev("GameResolved", outcome=1, reason=1, burned=0), NOW)
    assert "phase=42 (unknown Phase)" in _event_line(_ev("ChildPicked", phase=42), NOW)


def test_deadlines_in_events_are_times():
    ev = SimpleNamespace(name="JobClaimed", block_number=9,
                         args={"jobId": 1, "worker": "0xabc", "executionDeadline": NOW + 3600})
    assert _event_line(ev, NOW) == ("block 9: JobClaimed worker=0xabc executionDeadline=2026-12-02 07:00:00 UTC "
                                    "(in 1h)")


def test_json_args_are_full_hex_in_lists_too():
    assert _json_arg([b"\x01" * 32]) == ["0x" + "01" * 32]
    assert _json_arg(b"\xff") == "0xff" and _json_arg(5) == 5


def _cli(*args: str) -> subprocess.CompletedProcess:
    code = f"import sys; from gpumesh.client.cli.main import main; sys.exit(main({list(args)!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_bad_job_id_names_the_parameter_in_one_line():
    r = _cli("job", "status", "abc")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("gpumesh: error: job status: invalid value for ") and "job_id" in r.stderr.lower()
    assert "gpumesh job status --help" in r.stderr and "BadParameter" not in r.stderr
    r = _cli("job", "post", "--reward", "1")
    assert r.returncode == 2 and r.stderr == ("gpumesh: error: job post: missing option '--stake' "
                                              "(see `gpumesh job post --help`)\n")
