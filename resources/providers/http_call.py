"""What every HTTP adapter shares: one timed POST that never raises, error wording, pricing.

The adapters (``openai_chat``, ``anthropic_messages``) only build their protocol's request
body and read their protocol's reply; transport faults, error statuses, non-JSON bodies and
the cost of the call are handled here, once, so every provider fails in the same words.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import aiohttp
import httpx
from pydantic import BaseModel

from resources.catalog import ModelSpec
from resources.model_call import CallResult, StructuredRequest
from resources.providers.aiohttp_faults import aiohttp_fault
from resources.providers.structured_reply import shorten
from resources.providers.transport_process import BATCH_TRANSPORT, TransportProcess

DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)


def make_http_client(timeout: "httpx.Timeout | float", http_client: Optional[httpx.Client]) -> tuple[httpx.Client, bool]:
    """The client to use and whether the adapter owns it (and so closes it)."""
    if http_client is not None:
        return http_client, False
    return httpx.Client(timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)), True


def request_timeout(timeout: "httpx.Timeout | float", http_client: Optional[httpx.Client]) -> Optional[httpx.Timeout]:
    """A timeout given to the adapter applies per request, also on a client passed in."""
    if http_client is None:
        return None
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)


@dataclass
class HttpReply:
    """The outcome of one POST: the decoded JSON object on success, else an error in words."""

    latency_s: float
    status: Optional[int] = None
    payload: Optional[dict[str, Any]] = None
    error: Optional[str] = None


def post_json(
    http: httpx.Client,
    url: str,
    *,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    model_id: str,
    timeout: Optional[httpx.Timeout] = None,
) -> HttpReply:
    """POST ``body`` and decode the JSON object answered; faults come back as ``HttpReply.error``, never raised.

    The reply must be complete within the request's whole time (``request_deadline_s``): httpx's read
    timeout is the wait between two bytes, which a reply trickling a byte a second never trips."""
    extra = {"timeout": timeout} if timeout is not None else {}
    limits = timeout if timeout is not None else http.timeout
    whole_s = request_deadline_s(limits.connect, limits.read)
    started = time.perf_counter()
    try:
        with http.stream("POST", url, json=dict(body), headers=dict(headers), **extra) as streamed:
            content = bytearray()
            for chunk in streamed.iter_raw():
                content += chunk
                if whole_s is not None and time.perf_counter() - started > whole_s:
                    raise httpx.ReadTimeout(f"the reply was not complete within {whole_s:g} s", request=streamed.request)
        response = httpx.Response(streamed.status_code, headers=streamed.headers, content=bytes(content),
                                  request=streamed.request)
    except Exception as exc:
        return reply_from_exception(exc, time.perf_counter() - started, model_id)
    return reply_from_response(response, time.perf_counter() - started, model_id)


def request_deadline_s(connect_s: Optional[float], read_s: Optional[float]) -> Optional[float]:
    """How long one request may take in all, reply complete (None: no limit): the read timeout, which is the
    gateway's ``timeout_s`` and includes connecting (``ModelGatewayResource``). Both clients' own read timeouts
    measure the wait between two bytes only."""
    return None if read_s is None else max(read_s, connect_s or 0.0)


async def apost_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    model_id: str,
    proxy: Optional[str] = None,
) -> HttpReply:
    """``post_json`` on an ``aiohttp.ClientSession``: the same reply, the same error wording.

    Statuses, JSON and error bodies are judged by ``reply_from_read``: what ``reply_from_response``
    (the blocking path's judge) says of the same reply.
    """
    started = time.perf_counter()
    try:
        async with session.post(url, json=body, headers=headers, proxy=proxy) as response:
            content = await response.read()
            status, raw_headers = response.status, response.raw_headers
    except Exception as exc:
        return reply_from_exception(exc, time.perf_counter() - started, model_id)
    return reply_from_read(status, raw_headers, content, time.perf_counter() - started, model_id)


async def apost_json_via(
    transport: TransportProcess,
    url: str,
    *,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    model_id: str,
    proxy: Optional[str],
    timeout: aiohttp.ClientTimeout,
) -> HttpReply:
    """``apost_json`` through the batch's transport process: the same body bytes, the same reply, the same error wording."""
    try:
        data = _json_body(body).encode("utf-8")
    except ValueError as exc:  # a NaN in the body: refused before sending, as aiohttp's json= refuses it
        return reply_from_exception(exc, 0.0, model_id)
    frame = await transport.post(url, data, headers, proxy=proxy, connect_s=timeout.sock_connect, read_s=timeout.sock_read)
    if frame[0] == "reply":
        _, status, raw_headers, content, latency = frame
        return reply_from_read(status, raw_headers, content, latency, model_id)
    _, kind, detail, timed_out, description, latency = frame
    return reply_from_fault(kind, detail, timed_out, description, latency, model_id)


def reply_from_read(status: int, raw_headers, content: bytes, latency: float, model_id: str) -> HttpReply:
    """The reply to a call aiohttp made (here or in the transport process), judged as ``reply_from_response`` judges it.

    A success whose body is a JSON object (nearly every call) is read directly: the same
    ``json.loads`` of the same bytes that ``httpx.Response.json`` runs, without building the
    ``httpx.Response`` around them (its headers and body objects cost as much again as the
    decode, on the batch's event loop). Anything else (an error status, a body that is not a
    JSON object) goes through ``reply_from_response`` for its wording.
    """
    if status < 400:
        try:
            payload = json.loads(content)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, nested past Python's stack
            payload = None
        if isinstance(payload, dict):
            return HttpReply(latency, status, payload)
    try:
        received = decoded_response(status, raw_headers, content)
    except Exception as exc:  # a reply httpx cannot even hold: a failed call, never an escaped error
        return reply_from_exception(exc, latency, model_id)
    return reply_from_response(received, latency, model_id)


_DECODED_AWAY = (b"content-encoding", b"content-length", b"transfer-encoding")


def decoded_response(status: int, raw_headers, content: bytes) -> httpx.Response:
    """An ``httpx.Response`` for a reply aiohttp has read: its body is already decompressed and de-chunked,
    so the headers that describe the wire form (gzip, length, chunks) are dropped, or httpx would
    decode the body a second time (every gzip-compressing provider or proxy failed that way)."""
    headers = [(name, value) for name, value in raw_headers if bytes(name).lower() not in _DECODED_AWAY]
    return httpx.Response(status, headers=headers, content=content)


def reply_from_exception(exc: Exception, latency: float, model_id: str) -> HttpReply:
    return reply_from_fault(*transport_fault(exc), f"{type(exc).__name__}: {exc}", latency, model_id)


def reply_from_fault(kind: Optional[str], detail: str, timed_out: bool, description: str, latency: float,
                     model_id: str) -> HttpReply:
    """A transport failure in words, from ``transport_fault``'s triple (wherever the exception was raised)."""
    if timed_out:
        return HttpReply(latency, error=shorten(f"timed out after {latency:.1f}s calling {model_id} ({kind})"))
    if kind is not None:  # connect errors, dropped connections, protocol errors
        return HttpReply(latency, error=shorten(f"connection error calling {model_id}: {kind}: {detail}"))
    # e.g. an invalid URL: still a failed call, not a crashed batch
    return HttpReply(latency, error=shorten(f"could not call {model_id}: {description}"))


def transport_fault(exc: BaseException) -> tuple[Optional[str], str, bool]:
    """``(kind, detail, timed_out)`` of a transport failure, or ``(None, "", False)`` for anything else.

    One vocabulary for both clients: kinds are httpx's exception names (``ReadTimeout``,
    ``ConnectError``, ``RemoteProtocolError``...), also for what aiohttp raised on the async
    path (``aiohttp_faults``), so an error reads the same (and ``reliability`` classifies it the
    same) whichever path made the call.
    """
    if isinstance(exc, httpx.TimeoutException):
        return type(exc).__name__, str(exc), True
    if isinstance(exc, httpx.HTTPError):
        return type(exc).__name__, str(exc), False
    return aiohttp_fault(exc)


def reply_from_response(response: httpx.Response, latency: float, model_id: str) -> HttpReply:
    status = response.status_code
    try:
        payload = response.json()
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested past Python's stack
        payload = None
    if status >= 400:
        message = provider_error_message(payload) or _body_snippet(response) or response.reason_phrase or "no message"
        retry_after = response.headers.get("retry-after")
        suffix = f" (retry after {retry_after}s)" if retry_after else ""
        # The Retry-After suffix is appended after shortening: retries read it from the end of the error.
        return HttpReply(latency, status, payload if isinstance(payload, dict) else None,
                         shorten(f"HTTP {status} from {model_id}: {message}", 300 - len(suffix)) + suffix)
    if not isinstance(payload, dict):
        what = "not JSON" if payload is None else "not a JSON object"
        snippet = _body_snippet(response, limit=120)
        return HttpReply(latency, status, None, shorten(f"HTTP {status} from {model_id}: reply is {what}" + (f": {snippet}" if snippet else "")))
    return HttpReply(latency, status, payload)


class HttpModelClient:
    """What the OpenAI and Anthropic adapters share: a blocking client, a concurrent one per event loop, one POST.

    A subclass says how to build its protocol's body and headers (``request_body``, ``headers``)
    and how to read its reply (``parse_reply``); ``call`` (``httpx.Client``) and ``acall``
    (``aiohttp``) send the same body and judge the reply with the same code, so the blocking
    and concurrent paths cannot drift. A subclass sets ``spec`` and ``url`` before calling
    ``__init__`` (the proxy is chosen for the url there).

    Why aiohttp for the concurrent path: a batch makes hundreds of calls in flight from one
    event loop, and the client's own work per call is what bounds it. Measured on 127.0.0.1
    (32 in flight, 1,000 calls): ``httpx.AsyncClient`` 2.2 ms of CPU a call with one shared
    pool (its pool scans every connection per request), 0.5 ms with a client per call in
    flight, 0.38 ms through httpx-aiohttp's transport; ``aiohttp`` itself 0.12 ms. The OpenAI
    and Anthropic SDKs offer aiohttp as their async backend for the same reason.
    """

    spec: ModelSpec
    url: str

    def __init__(self, timeout: "httpx.Timeout | float", http_client: Optional[httpx.Client]):
        # The sync client is built on the first sync call: a batch never makes one, and an httpx.Client
        # costs ~20-40 ms (its TLS context), which the first calls of every batch waited out.
        self._http: Optional[httpx.Client] = http_client
        self._owns_http = http_client is None
        self._http_lock = threading.Lock()  # sync calls may come from several threads: one client for them all
        self._sync_timeout = timeout
        self._timeout = request_timeout(timeout, http_client)
        limits = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        # httpx's read timeout is the wait between bytes: aiohttp's sock_read; connect likewise.
        self._async_timeout = aiohttp.ClientTimeout(total=request_deadline_s(limits.connect, limits.read),
                                                    sock_connect=limits.connect, sock_read=limits.read)
        self._loop: Any = None  # the event loop the session below belongs to (a session lives on one loop)
        self._session: Optional[aiohttp.ClientSession] = None
        self._proxy = env_proxy(self.url)  # read once, as httpx.Client reads the environment at construction

    def request_body(self, request: StructuredRequest) -> dict[str, Any]:
        raise NotImplementedError

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    def parse_reply(self, reply: HttpReply, request: StructuredRequest) -> CallResult:
        raise NotImplementedError

    def call(self, request: StructuredRequest) -> CallResult:
        if self._http is None:
            with self._http_lock:
                if self._http is None:
                    self._http, _ = make_http_client(self._sync_timeout, None)
        reply = post_json(self._http, self.url, body=self.request_body(request), headers=self.headers(),
                          model_id=self.spec.id, timeout=self._timeout)
        return self._result(reply, request)

    async def acall(self, request: StructuredRequest) -> CallResult:
        """On the batch's transport process once it is ready (``transport_process``), else on this loop's session."""
        transport = BATCH_TRANSPORT.get()
        if transport is not None and transport.ready:
            reply = await apost_json_via(transport, self.url, body=self.request_body(request), headers=self.headers(),
                                         model_id=self.spec.id, proxy=self._proxy, timeout=self._async_timeout)
        else:
            reply = await apost_json(self._session_of_loop(), self.url, body=self.request_body(request),
                                     headers=self.headers(), model_id=self.spec.id, proxy=self._proxy)
        return self._result(reply, request)

    def _result(self, reply: HttpReply, request: StructuredRequest) -> CallResult:
        if reply.error is not None:
            return call_result(self.spec, latency_s=reply.latency_s, error=reply.error)
        return self.parse_reply(reply, request)

    def _session_of_loop(self) -> aiohttp.ClientSession:
        """The running loop's session (created on first use): one connection pool for every call in flight.

        No pool limit here: the endpoint's concurrency limit (``reliability``) bounds the calls.
        The proxy comes from ``env_proxy``, not aiohttp's ``trust_env``: that also reads
        ``~/.netrc`` in a worker thread on every request (measured: 40 ms of a 100 ms call's
        wait, 24 calls in flight).
        """
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            self._loop = loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=_ssl_context()), timeout=self._async_timeout,
                json_serialize=_json_body,
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session of the running loop (call before the loop ends)."""
        session, self._session, self._loop = self._session, None, None
        if session is not None and not session.closed:
            await session.close()

    def close(self) -> None:
        if self._owns_http and self._http is not None:
            self._http.close()
            self._http = None


# The body bytes httpx sends for ``json=``: both paths send a provider the same request (and a NaN is refused here).
_json_body = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def env_proxy(url: str) -> Optional[str]:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``, ``NO_PROXY`` honoured).

    What ``httpx.Client`` uses for the blocking path, so both paths reach a provider the same way.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    proxies = urllib.request.getproxies_environment()
    if not proxies or urllib.request.proxy_bypass_environment(host, proxies):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


def provider_error_message(payload: Any) -> Optional[str]:
    """The message in OpenAI's ``{"error": {"message"}}`` or Anthropic's ``{"type": "error", "error": {...}}`` body."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        kind = error.get("type") or error.get("code")
        if message and kind and str(kind) not in str(message):
            return f"{message} [{kind}]"
        return str(message or kind or "") or None
    if isinstance(error, str):
        return error
    message = payload.get("message") or payload.get("detail")
    return str(message) if message else None


def token_count(usage: Any, key: str) -> Optional[int]:
    """A usage counter as reported; None when absent or malformed (negative, not an integer)."""
    if not isinstance(usage, dict):
        return None
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


FRAMING_TOKENS = 4096  # what a provider adds to a request's own text: roles, tool and format wrappers, a system preamble


@functools.lru_cache(maxsize=64)
def _schema_characters(schema: type) -> int:
    return len(json.dumps(schema.model_json_schema()))


def _most_input_tokens(request: StructuredRequest) -> int:
    """More tokens than the request has UTF-8 bytes no tokenizer makes: a byte-level BPE token is at least one byte,
    and SentencePiece falls back to bytes. Bytes, not characters: a Georgian or Amharic letter can be 2-3 tokens."""
    return _utf8_length(request.system) + _utf8_length(request.document) + _schema_characters(request.output_schema) + FRAMING_TOKENS


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def usage_tokens(usage: Any, input_key: str, output_key: str, request: StructuredRequest, reply: HttpReply) -> dict[str, Any]:
    """``input_tokens``/``output_tokens`` for ``call_result``: as reported, or, where the provider reported no
    usable count (missing, malformed, or impossible for the request), estimated at ~4 characters a token
    (request text in, reply body out) and flagged: a completed call is never recorded as free because its
    usage block was missing, nor charged $50 because a proxy reported ten million output tokens for a 600-token cap."""
    reported_in, reported_out = token_count(usage, input_key), token_count(usage, output_key)
    # A count no real call can have is a wrong count, not a bill: more output than max_tokens allowed, or more
    # input than the request had bytes (``_most_input_tokens``; its schema and the provider's framing allowed for).
    if reported_out is not None and reported_out > request.max_output_tokens:
        reported_out = None
    if reported_in is not None and reported_in > _most_input_tokens(request):
        reported_in = None
    estimated = reported_in is None or reported_out is None
    if reported_in is None:
        reported_in = max(1, (len(request.system) + len(request.document)) // 4)
    if reported_out is None:
        reported_out = min(request.max_output_tokens, max(1, len(json.dumps(reply.payload or {}, ensure_ascii=False)) // 4))
    return {"input_tokens": reported_in, "output_tokens": reported_out, "usage_estimated": estimated}


def _reason(value: Any) -> Optional[str]:
    """A finish reason as text: a proxy's own shape (``1``, ``{"type": "stop"}``) is said as it came, never raised on
    (raising there lost a good, paid answer and its ledger row)."""
    if value is None or isinstance(value, str):
        return value
    return shorten(json.dumps(value, default=str), 60)


def call_result(
    spec: ModelSpec,
    *,
    latency_s: float,
    output: Optional[BaseModel] = None,
    error: Optional[str] = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    finish_reason: Optional[str] = None,
    usage_estimated: bool = False,
) -> CallResult:
    """The result, priced: reported tokens are charged even when the reply failed validation (they were billed)."""
    return CallResult(
        model_id=spec.id,
        output=output if error is None else None,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=spec.call_cost(input_tokens, output_tokens, latency_s),
        latency_s=latency_s,
        error=shorten(error) if error else None,
        finish_reason=_reason(finish_reason) or ("error" if error else None),
        usage_estimated=usage_estimated,
    )


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """One verifying context for every async client: loading the CA bundle costs ~20 ms a time."""
    return ssl.create_default_context()


def join_url(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def _body_snippet(response: httpx.Response, limit: int = 200) -> str:
    try:
        text = response.text
    except Exception:
        return ""
    return shorten(text, limit) if text.strip() else ""
