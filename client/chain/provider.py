"""The JSON-RPC transport every gpumesh process talks to its EVM node through.

    w3 = make_web3("http://127.0.0.1:8545")          # or ws:// / wss:// (new heads by subscription)
    w3.provider.stats.total(), w3.provider.stats.by_method()
    heads = HeadSource(w3); heads.latest()           # the head number: from the subscription over
                                                     # websockets, one eth_blockNumber over HTTP

What it adds to web3's providers, and why:
- **Counting.** Every request is counted by method (`RpcStats`): the daemons export the totals as
  metrics, and bench/bench_rpc.py reads them, so RPC use is measured, not guessed.
- **The chain id once.** web3's validation middleware asks `eth_chainId` before every `eth_call`
  and `eth_estimateGas` (and `build_transaction` asks again): on a busy worker that was a third of
  all requests. A chain's id never changes under one connection, so the first answer is kept.
- **Outages as one line.** A transport failure (refused, timed out, reset) after web3's own retries
  becomes `RpcUnavailable("RPC at URL is unreachable (connection refused)")`, a ChainError that is
  also a ConnectionError (code that catches either keeps working), instead of a urllib3 repr.
- **Websockets.** web3 8 has no synchronous websocket provider (its WebSocketProvider is
  asyncio-only, and LegacyWebSocketProvider is gone), while everything here is synchronous; the
  maintained `websockets` package (already a web3 dependency) has a synchronous client, so
  `SyncWebSocketProvider` is a thin JSON-RPC layer over it: one connection, requests answered by
  id, `eth_subscription` notifications for `newHeads` queued on the side.

Imported by gpumesh.client.chain.contracts.connect and gpumesh.client.services.rpc.connect; used by
the daemons through the Web3 they are given. No other gpumesh import but the error base.
"""

from __future__ import annotations

import collections
import itertools
import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from gpumesh.client.core.errors import ChainError

#: Methods whose answer cannot change while the connection lives.
_CONSTANT = ("eth_chainId", "net_version")


class RpcUnavailable(ChainError, ConnectionError):
    """The RPC endpoint could not be reached (or did not answer in time)."""


class RpcStats:
    """Requests by method, transport failures, and the head seen; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._methods: collections.Counter[str] = collections.Counter()
        self.errors = 0  # requests that failed at the transport (the node was not reached)
        self.batches = 0  # HTTP/websocket messages that carried a batch

    def count(self, method: str, n: int = 1) -> None:
        with self._lock:
            self._methods[method] += n

    def failed(self) -> None:
        with self._lock:
            self.errors += 1

    def total(self) -> int:
        """JSON-RPC calls made (each call of a batch counts once)."""
        with self._lock:
            return sum(self._methods.values())

    def by_method(self) -> dict[str, int]:
        with self._lock:
            return dict(self._methods)


def transport_reason(exc: BaseException) -> str:
    """A transport failure in two or three words (connection refused, timed out, unknown host...)."""
    text = f"{type(exc).__name__} {exc}"
    for needle, short in (("refused", "connection refused"), ("timed out", "timed out"), ("Timeout", "timed out"),
                          ("Name or service not known", "unknown host"), ("reset", "connection reset"),
                          ("Remote end closed", "connection closed"), ("ConnectionClosed", "connection closed")):
        if needle in text:
            return short
    return type(exc).__name__


def redact(url: str) -> str:
    """The URL without credentials or a path (hosted providers put their API key in the path)."""
    u = urlparse(url)
    host = u.hostname or ""
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{host}{port}" + ("/…" if u.path.strip("/") else "")


class _Counted:
    """What both transports share: counting, the kept chain id, outages as RpcUnavailable."""

    stats: RpcStats
    url: str

    def _init_counted(self, url: str, stats: RpcStats | None) -> None:
        self.url = url
        self.stats = stats or RpcStats()
        self._constants: dict[str, Any] = {}

    def _counted(self, method: str, send, count: bool = True) -> Any:
        if method in self._constants:
            return {"jsonrpc": "2.0", "id": 0, "result": self._constants[method]}
        if count:
            self.stats.count(method)
        try:
            response = send()
        except ChainError:
            raise
        except Exception as exc:
            if not (isinstance(exc, OSError | TimeoutError) or _is_transport_error(exc)):
                raise
            self.stats.failed()
            status = getattr(getattr(exc, "response", None), "status_code", None)
            what = f"answered HTTP {status}" if status else f"is unreachable ({transport_reason(exc)})"
            raise RpcUnavailable(f"RPC at {redact(self.url)} {what}") from None
        if method in _CONSTANT and isinstance(response, dict) and "result" in response:
            self._constants[method] = response["result"]
        return response


def _is_transport_error(exc: BaseException) -> bool:
    mod = type(exc).__module__
    return mod.startswith(("requests", "urllib3", "websockets")) or isinstance(exc, TimeoutError)


def _session_for(url: str):
    """A requests Session for one RPC URL with what requests reads from the environment on EVERY
    request (proxies for the URL, the CA bundle, ~/.netrc credentials) read once here: the
    per-request look-up walked os.environ each time and cost a quarter of a busy worker's request
    CPU. The URL never changes under one provider, so the answer would be the same each time."""
    import os

    import requests
    from requests.utils import get_environ_proxies, get_netrc_auth

    s = requests.Session()
    s.proxies.update(get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        s.verify = bundle
    if (auth := get_netrc_auth(url)) is not None:
        s.auth = auth
    s.trust_env = False
    return s


def _http_provider_class():
    from web3 import HTTPProvider

    class CountingHTTPProvider(_Counted, HTTPProvider):
        """web3's HTTPProvider, counted, with the chain id kept and outages as RpcUnavailable."""

        def __init__(self, url: str, timeout: float, stats: RpcStats | None = None) -> None:
            HTTPProvider.__init__(self, url, request_kwargs={"timeout": timeout}, session=_session_for(url))
            self._init_counted(url, stats)

        def make_request(self, method, params):
            return self._counted(str(method), lambda: HTTPProvider.make_request(self, method, params))

        def make_batch_request(self, requests):
            for method, _ in requests:
                self.stats.count(str(method))
            self.stats.batches += 1
            return self._counted("<batch>", lambda: HTTPProvider.make_batch_request(self, requests), count=False)

    return CountingHTTPProvider


class SyncWebSocketProvider:
    """Built by `make_web3` for ws:// and wss:// URLs (the class is created lazily so importing
    this module does not import web3)."""


def _ws_provider_class():
    from web3.providers.base import JSONBaseProvider
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect as ws_connect

    class _SyncWebSocketProvider(_Counted, JSONBaseProvider, SyncWebSocketProvider):
        """JSON-RPC over one synchronous websocket; `eth_subscribe` notifications are queued, not
        mistaken for answers. Reconnects (and re-subscribes) once when the connection drops."""

        def __init__(self, url: str, timeout: float, stats: RpcStats | None = None) -> None:
            JSONBaseProvider.__init__(self)
            self._init_counted(url, stats)
            self.timeout = timeout
            self._ws = None
            self._io = threading.RLock()
            self._ids = itertools.count(1)
            self._heads: collections.deque[dict] = collections.deque(maxlen=64)
            self.last_head: dict | None = None  # the newest head notified (whoever pumped it)
            self._subscription: str | None = None
            self._wants_heads = False

        # -- transport
        def _connection(self):
            if self._ws is None:
                conn = ws_connect(self.url, open_timeout=self.timeout, max_size=64 << 20, close_timeout=1.0)
                self._ws = conn.__enter__()  # a connection held for the provider's life, closed by disconnect()
                if self._wants_heads:
                    self._subscription = None
                    self._subscribe()
            return self._ws

        def _roundtrip(self, payload: dict | list, match) -> Any:
            for attempt in (0, 1):
                try:
                    ws = self._connection()
                    ws.send(json.dumps(payload))
                    while True:
                        msg = json.loads(ws.recv(timeout=self.timeout))
                        if isinstance(msg, dict) and msg.get("method") == "eth_subscription":
                            self._note_head(msg["params"]["result"])
                            continue
                        if match(msg):
                            return msg
                except ConnectionClosed:
                    self._ws = None
                    if attempt:
                        raise
            raise AssertionError("unreachable")

        def make_request(self, method, params):
            def send():
                with self._io:
                    payload = json.loads(self.encode_rpc_request(method, params))  # web3's own encoding
                    rid = payload["id"]
                    return self._roundtrip(payload, lambda m: isinstance(m, dict) and m.get("id") == rid)

            return self._counted(str(method), send)

        def make_batch_request(self, requests):
            def send():
                with self._io:
                    payload = json.loads(self.encode_batch_rpc_request(requests))
                    ids = [r["id"] for r in payload]
                    out = self._roundtrip(payload, lambda m: isinstance(m, list) or (isinstance(m, dict) and
                                                                                      m.get("id") is None))
                    if isinstance(out, list):
                        out.sort(key=lambda r: ids.index(r.get("id")) if r.get("id") in ids else len(ids))
                    return out

            for method, _ in requests:
                self.stats.count(str(method))
            self.stats.batches += 1
            return self._counted("<batch>", send, count=False)

        def is_connected(self, show_traceback: bool = False) -> bool:
            try:
                self.make_request("web3_clientVersion", [])
                return True
            except ChainError:
                return False

        # -- new heads
        def _subscribe(self) -> None:
            rid = f"heads-{next(self._ids)}"
            msg = self._roundtrip({"jsonrpc": "2.0", "id": rid, "method": "eth_subscribe", "params": ["newHeads"]},
                                  lambda m: isinstance(m, dict) and m.get("id") == rid)
            if "error" in msg:
                raise ChainError(f"RPC at {redact(self.url)} refused eth_subscribe newHeads: {msg['error']}")
            self._subscription = msg["result"]

        def _note_head(self, head: dict) -> None:
            self._heads.append(head)
            self.last_head = head

        def wait_for_head(self, timeout: float) -> bool:
            """Wait up to `timeout` s for a new head (a receipt can only appear with one); False, at
            once, without a subscription (the caller sleeps instead)."""
            if self._subscription is None:
                return False
            self.drain_heads(timeout)
            return True

        def subscribe_heads(self) -> None:
            with self._io:
                self._wants_heads = True
                if self._subscription is None:
                    self._counted("eth_subscribe", lambda: self._subscribe())

        def drain_heads(self, wait: float = 0.0) -> list[dict]:
            """Heads notified since the last call; waits up to `wait` seconds for the first one."""
            def pump():
                with self._io:
                    ws = self._connection()
                    timeout = wait
                    while True:
                        try:
                            msg = json.loads(ws.recv(timeout=timeout))
                        except TimeoutError:
                            return
                        if isinstance(msg, dict) and msg.get("method") == "eth_subscription":
                            self._note_head(msg["params"]["result"])
                            timeout = 0
            try:
                pump()
            except ConnectionClosed:
                self._ws = None
            except OSError as exc:
                self.stats.failed()
                raise RpcUnavailable(f"RPC at {redact(self.url)} is unreachable ({transport_reason(exc)})") from None
            out = list(self._heads)
            self._heads.clear()
            return out

        def disconnect(self) -> None:
            with self._io:
                if self._ws is not None:
                    self._ws.close()
                    self._ws = None

    return _SyncWebSocketProvider


_CLASSES: dict[str, type] = {}


def provider_for(url: str, timeout: float = 10.0, stats: RpcStats | None = None):
    """The counted provider for `url`: HTTP(S) or websocket (ws/wss); any other scheme is refused."""
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        cls = _CLASSES.setdefault("http", _http_provider_class())
    elif scheme in ("ws", "wss"):
        cls = _CLASSES.setdefault("ws", _ws_provider_class())
    else:
        raise ChainError(f"RPC URL {redact(url)}: unsupported scheme {scheme!r} (use http://, https://, ws:// or wss://)")
    return cls(url, timeout, stats)


def make_web3(url: str, timeout: float = 10.0, stats: RpcStats | None = None):
    """A Web3 on `provider_for(url)`."""
    from web3 import Web3

    return Web3(provider_for(url, timeout, stats))


def stats_of(w3) -> RpcStats | None:
    """The request counts of a Web3 made here (None for another provider)."""
    return getattr(getattr(w3, "provider", None), "stats", None)


@dataclass(frozen=True)
class Head:
    """The chain's newest block as a daemon needs it: number, hash (a reorg at the same height
    changes it), timestamp (the chain's clock)."""

    number: int
    hash: str
    timestamp: int
    parent_hash: str = ""


def _head_of(block) -> Head:
    def num(v) -> int:
        return int(v, 16) if isinstance(v, str) else int(v)

    def hexs(v) -> str:
        return v if isinstance(v, str) else "0x" + bytes(v).hex()

    return Head(num(block["number"]), hexs(block["hash"]), num(block["timestamp"]), hexs(block["parentHash"]))


class HeadSource:
    """The chain's head, as cheaply as the transport allows: over a websocket, from the `newHeads`
    subscription (no request at all while nothing changes); over HTTP, one
    `eth_getBlockByNumber("latest")` (the number, hash and time in one answer)."""

    def __init__(self, w3, subscribe: bool = True) -> None:
        self.w3 = w3
        self._ws = isinstance(getattr(w3, "provider", None), SyncWebSocketProvider) and subscribe
        self._head: Head | None = None
        if self._ws:
            try:
                w3.provider.subscribe_heads()
            except ChainError:
                self._ws = False  # the node offers no subscriptions: poll

    @property
    def subscribed(self) -> bool:
        return self._ws

    def head(self, wait: float = 0.0) -> Head:
        """The newest head; over a websocket, waits up to `wait` s for a notification."""
        if self._ws:
            self.w3.provider.drain_heads(wait)
            if self.w3.provider.last_head is not None:  # the newest, even if a receipt wait pumped it
                self._head = _head_of(self.w3.provider.last_head)
            if self._head is not None:
                return self._head
        self._head = _head_of(self._latest())
        return self._head

    def _latest(self):
        """The latest block's header, through the provider (no web3 formatting of the whole block:
        this is every tick's one request over HTTP); web3's path for anything unexpected."""
        make_request = getattr(getattr(self.w3, "provider", None), "make_request", None)
        if make_request is not None:
            resp = make_request("eth_getBlockByNumber", ["latest", False])
            block = resp.get("result") if isinstance(resp, dict) else None
            if isinstance(block, dict) and all(k in block for k in ("number", "hash", "timestamp", "parentHash")):
                return block
        return self.w3.eth.get_block("latest")

    def latest(self, wait: float = 0.0) -> int:
        return self.head(wait).number
