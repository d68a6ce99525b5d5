"""Bounded, adaptive eth_getLogs (gpumesh.client.chain.events): a provider that refuses spans over
its limit gets the span halved until it answers, then grown back; a walk from the head stops at
the first chunk with a match; other errors are not mistaken for a range refusal."""

from __future__ import annotations

import pytest
from web3.exceptions import Web3RPCError

from gpumesh.client.chain.events import LogWindow, is_range_refusal, logs_in_chunks


class Provider:
    """Logs at the given blocks; refuses any request over `limit` blocks, as hosted providers do."""

    def __init__(self, at: list[int], limit: int) -> None:
        self.at, self.limit, self.calls = at, limit, []

    def fetch(self, a: int, b: int) -> list[int]:
        self.calls.append((a, b))
        if b - a + 1 > self.limit:
            raise Web3RPCError(f"query exceeds max block range {self.limit}")
        return [n for n in self.at if a <= n <= b]


def test_a_refused_span_is_halved_until_it_answers_and_every_log_is_read_once():
    p = Provider([5, 700, 701, 4_999, 9_000], limit=600)
    win = LogWindow(span=2000, grow_after=1000)
    assert logs_in_chunks(p.fetch, 0, 9_999, win) == [5, 700, 701, 4_999, 9_000]
    assert win.span == 500 and win.refusals == 2  # 2000 -> 1000 -> 500
    assert all(b - a + 1 <= 2000 for a, b in p.calls)
    answered = [(a, b) for a, b in p.calls if b - a + 1 <= 600]
    assert answered[0] == (0, 499) and answered[-1][1] == 9_999
    assert all(x[1] + 1 == y[0] for x, y in zip(answered, answered[1:], strict=False))  # no gap, no overlap


def test_the_span_grows_back_after_answers():
    win = LogWindow(span=100, max_span=400, grow_after=2)
    p = Provider([], limit=10_000)
    logs_in_chunks(p.fetch, 0, 1_000, win)
    assert win.span == 400 and [b - a + 1 for a, b in p.calls][:4] == [100, 100, 200, 200]


def test_newest_first_stops_at_the_first_match():
    p = Provider([10, 9_500], limit=10_000)
    got = logs_in_chunks(p.fetch, 0, 9_999, LogWindow(span=1000), newest_first=True, enough=bool)
    assert got == [9_500] and p.calls == [(9_000, 9_999)]


def test_only_range_refusals_shrink_the_span():
    assert is_range_refusal(Web3RPCError("Log response size exceeded. You can make eth_getLogs requests with "
                                         "up to a 2K block range"))
    assert is_range_refusal(Web3RPCError("query returned more than 10000 results"))
    assert not is_range_refusal(Web3RPCError("invalid argument 0: hex string has odd length"))
    win = LogWindow(span=8)

    def boom(a, b):
        raise Web3RPCError("invalid argument 0: hex string has odd length")

    with pytest.raises(Web3RPCError):
        logs_in_chunks(boom, 0, 100, win)
    assert win.span == 8


def test_a_one_block_span_that_is_still_refused_raises():
    p = Provider([1], limit=0)
    with pytest.raises(Web3RPCError):
        logs_in_chunks(p.fetch, 0, 10, LogWindow(span=4))
