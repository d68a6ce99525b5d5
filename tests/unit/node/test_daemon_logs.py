"""Daemon logs for operators (issue #16, stumble 4): one format for every daemon, -v/-q, and an RPC
outage as one readable WARNING line however many ticks it lasts, then one line when it is over."""

from __future__ import annotations

import io
import logging
import re

from gpumesh.client.chain.provider import RpcUnavailable
from gpumesh.node.common.daemon import Daemon
from gpumesh.node.common.logs import setup_daemon_logging


def test_one_format_and_the_verbosity_flags():
    out = io.StringIO()
    try:
        setup_daemon_logging(stream=out)
        logging.getLogger("gpumesh.worker").info("job 3: claimed")
        logging.getLogger("gpumesh.watchtower").debug("hidden at INFO")
        logging.getLogger("urllib3").info("Starting new HTTP connection")  # noisy libraries stay quiet
        line = out.getvalue()
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO    gpumesh\.worker: job 3: claimed\n", line), line
        setup_daemon_logging(quiet=True, stream=out)
        logging.getLogger("gpumesh.worker").info("not shown with -q")
        logging.getLogger("gpumesh.watchtower").warning("shown with -q")
        setup_daemon_logging(verbose=True, stream=out)
        logging.getLogger("gpumesh.worker").debug("shown with -v")
        text = out.getvalue()
        assert "not shown" not in text and "WARNING gpumesh.watchtower: shown with -q" in text
        assert "DEBUG   gpumesh.worker: shown with -v" in text and "hidden" not in text and "Starting" not in text
    finally:
        setup_daemon_logging(stream=io.StringIO())  # leave no handler on a closed stream
        logging.getLogger().setLevel(logging.WARNING)


def test_an_outage_is_one_line_while_it_lasts(caplog):
    state = {"down": 4}

    def tick() -> None:
        if state["down"]:
            state["down"] -= 1
            raise RpcUnavailable("RPC at http://127.0.0.1:8545 is unreachable (connection refused)")

    d = Daemon("worker", tick)
    with caplog.at_level(logging.DEBUG, logger="gpumesh"):
        results = [d.tick_once() for _ in range(6)]
    assert results == [False] * 4 + [True] * 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["worker: tick failed, will retry: RPC at http://127.0.0.1:8545 is unreachable "
                        "(connection refused)"]
    assert "urllib3" not in caplog.text and "HTTPConnectionPool" not in caplog.text
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1 and infos[0].startswith("worker: working again after 4 failed tick(s) over ")


def test_a_different_failure_is_its_own_line(caplog):
    errors = iter([ValueError("a"), ValueError("a"), KeyError("b")])

    def tick() -> None:
        raise next(errors)

    d = Daemon("watchtower", tick)
    with caplog.at_level(logging.WARNING, logger="gpumesh"):
        for _ in range(3):
            d.tick_once()
    assert [r.getMessage() for r in caplog.records] == ["watchtower: tick failed, will retry: ValueError: a",
                                                        "watchtower: tick failed, will retry: KeyError: 'b'"]


def test_every_daemon_command_takes_verbose_and_quiet(capsys):
    from gpumesh.client.cli.main import main

    for cmd in (["worker", "run"], ["watchtower", "run"], ["explorer", "serve"], ["ipfs", "daemon"]):
        try:
            main([*cmd, "--help"])
        except SystemExit:
            pass
        text = capsys.readouterr().out
        assert "--verbose" in text and "-v" in text and "--quiet" in text and "-q" in text, cmd
