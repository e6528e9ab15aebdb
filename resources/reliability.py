"""Retries, circuit breaking, rate limiting and idempotency around one model client's ``call``.

Adapters report every fault in ``CallResult.error`` and never raise; this layer decides which
of those faults are the transport's (a 429, a 5xx, a timeout, a dropped connection: worth
another try at the same endpoint) and which are answers (a 400, a bad key, output that does
not match the schema: the cascade's business, retrying changes nothing but the bill). It wraps
any ``Callable[[StructuredRequest], CallResult]``, so no adapter needs to know it exists.

Until ``CallResult`` carries the HTTP status and ``Retry-After`` as fields, both are read back
from the error text that ``providers.http_call.post_json`` writes:
``"HTTP 429 from <model>: <message> (retry after <header value>s)"``.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random as _random
import re
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import AsyncIterator, Awaitable, Callable, Generator, Iterator, NamedTuple, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from resources.model_call import CallResult, StructuredRequest

Clock = Callable[[], float]
Sleep = Callable[[float], None]

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})

_STATUS = re.compile(r"^HTTP (\d{3}) from ")
_RETRY_AFTER = re.compile(r"\(retry after ([^()]+?)s\)")
# OpenAI also says it in words: "Please try again in 20s." / "in 1.5s" / "in 250ms".
_TRY_AGAIN_IN = re.compile(r"try again in (\d+(?:\.\d+)?)\s*(ms|s)\b", re.IGNORECASE)
_TRANSPORT_PREFIXES = ("timed out after ", "connection error calling ")


# --------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------


def error_status(result: CallResult) -> Optional[int]:
    """The HTTP status of a failed call: a ``status`` field when ``CallResult`` has one, else read from the error."""
    status = getattr(result, "status", None)
    if isinstance(status, int):
        return status
    if not result.error:
        return None
    match = _STATUS.match(result.error)
    return int(match.group(1)) if match else None


def parse_retry_after(value: str, *, now: Optional[float] = None) -> Optional[float]:
    """A ``Retry-After`` header value in seconds from ``now`` (wall clock): delta-seconds or an HTTP date."""
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is not None:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_after_s(result: CallResult, *, now: Optional[float] = None) -> Optional[float]:
    """How long the provider asked us to wait: a ``retry_after_s`` field, the header echoed in the error, or its words."""
    field_value = getattr(result, "retry_after_s", None)
    if isinstance(field_value, (int, float)) and not isinstance(field_value, bool):
        return max(0.0, float(field_value))
    if not result.error:
        return None
    header = _RETRY_AFTER.search(result.error)
    if header:
        parsed = parse_retry_after(header.group(1), now=now)
        if parsed is not None:
            return parsed
    words = _TRY_AGAIN_IN.search(result.error)
    if words:
        amount = float(words.group(1))
        return amount / 1000.0 if words.group(2).lower() == "ms" else amount
    return None


def is_transport_failure(result: CallResult, statuses: frozenset[int] = RETRYABLE_STATUSES) -> bool:
    """True when the endpoint, not the model, failed: a retryable status, a timeout or a connection fault."""
    if result.error is None:
        return False
    status = error_status(result)
    if status is not None:
        return status in statuses
    return result.error.startswith(_TRANSPORT_PREFIXES)


def is_retryable(result: CallResult, *, statuses: frozenset[int] = RETRYABLE_STATUSES,
                 now: Optional[float] = None) -> tuple[bool, Optional[float]]:
    """``(retry?, seconds the provider asked to wait or None)``.

    Retryable: 408, 429, 500, 502, 503, 504, 529, timeouts and connection errors. Not retryable:
    a success, any other status (400, 401, 403, 404 …), and replies that arrived but are unusable
    (not JSON, schema mismatch, refusal, truncation): those are the model's quality, for the cascade.
    """
    if not is_transport_failure(result, statuses):
        return False, None
    return True, retry_after_s(result, now=now)


_ERROR_TYPES = [
    (re.compile(r"^circuit open"), "circuit_open"),
    (re.compile(r"^rate limit for "), "rate_limited"),
    # A 2xx whose body is unusable is bad output, not an HTTP error.
    (re.compile(r"^HTTP 2\d\d .*reply is not", re.S), "invalid_output"),
    (re.compile(r"^HTTP (\d{3}) "), None),  # the status code itself, as OTel's HTTP conventions do
    (re.compile(r"^timed out"), "timeout"),
    (re.compile(r"^connection error"), "connection_error"),
    (re.compile(r"^could not start"), "model_unavailable"),
    (re.compile(r"does not match|not JSON|not valid JSON|no choices|invalid|truncated at max tokens|"
                r"has no \S+ tool call|has no content|model refused", re.I), "invalid_output"),
    (re.compile(r"^([A-Z][A-Za-z0-9_]*(?:Error|Exception|Timeout)):"), None),  # "ValueError: ..." from a python model
]


def error_type(message: str) -> str:
    """A low-cardinality ``error.type`` for a provider's error message: ``429``, ``timeout``, ``ValueError``, ``_OTHER``."""
    for pattern, kind in _ERROR_TYPES:
        match = pattern.search(message)
        if match:
            return kind or match.group(1)
    return "_OTHER"


# --------------------------------------------------------------------------------------
# Retry policy
# --------------------------------------------------------------------------------------


class RetryPolicy(BaseModel):
    """Exponential backoff with full jitter; a provider's ``Retry-After`` is a floor on the wait."""

    model_config = ConfigDict(frozen=True)

    max_attempts: int = Field(default=4, ge=1, description="Provider calls in all, the first included.")
    base_delay_s: float = Field(default=0.5, ge=0)
    max_delay_s: float = Field(default=20.0, ge=0, description="Cap on the backoff (not on a Retry-After).")
    jitter: bool = Field(default=True, description="Full jitter: wait uniform(0, backoff) instead of backoff.")
    max_retry_after_s: float = Field(default=60.0, ge=0, description=(
        "A Retry-After longer than this ends the retries at once: the caller (the cascade) does better "
        "trying another model than holding a worker that long."))
    max_total_wait_s: float = Field(default=120.0, ge=0, description="Give up rather than wait longer than this in all.")
    retryable_statuses: frozenset[int] = RETRYABLE_STATUSES

    def backoff_s(self, retry: int, rand: float) -> float:
        """The wait before retry number ``retry`` (1 = the second attempt); ``rand`` in [0, 1)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** (retry - 1)))
        return ceiling * rand if self.jitter else ceiling

    def delay_s(self, retry: int, rand: float, retry_after: Optional[float]) -> float:
        backoff = self.backoff_s(retry, rand)
        return backoff if retry_after is None else max(retry_after, backoff)


# --------------------------------------------------------------------------------------
# Circuit breaker
# --------------------------------------------------------------------------------------


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(Exception):
    """Raised by ``CircuitBreaker.check``; its message says since when and when the next probe goes."""


class CircuitBreaker:
    """Per endpoint: opens after ``failure_threshold`` consecutive failures, or when at least
    ``failure_rate`` of the last ``window_s`` seconds' calls (``min_calls`` or more) failed.

    While open every call is refused at once; after ``cooldown_s`` one probe goes through
    (half-open): success closes the circuit, failure opens it for another cooldown. A probe
    that never reports back frees the slot after another ``cooldown_s``. Thread-safe.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        failure_threshold: int = 5,
        failure_rate: float = 0.5,
        window_s: float = 60.0,
        min_calls: int = 10,
        cooldown_s: float = 30.0,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ):
        if failure_threshold < 1 or not 0 < failure_rate <= 1 or cooldown_s < 0 or window_s <= 0:
            raise ValueError("failure_threshold >= 1, 0 < failure_rate <= 1, window_s > 0 and cooldown_s >= 0 are required")
        self.endpoint = endpoint
        self.failure_threshold = failure_threshold
        self.failure_rate = failure_rate
        self.window_s = window_s
        self.min_calls = min_calls
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._outcomes: collections.deque[tuple[float, bool]] = collections.deque()
        self._opened_at: Optional[float] = None
        self._probe_started: Optional[float] = None
        self._reason = ""

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._current_state(self._clock())

    def _current_state(self, now: float) -> BreakerState:
        if self._state is BreakerState.OPEN and self._opened_at is not None and now - self._opened_at >= self.cooldown_s:
            return BreakerState.HALF_OPEN
        return self._state

    def check(self) -> None:
        """Let a call through or raise ``CircuitOpen``; in half-open, only one probe at a time passes."""
        with self._lock:
            now = self._clock()
            state = self._current_state(now)
            if state is BreakerState.CLOSED:
                return
            if state is BreakerState.HALF_OPEN:
                probe_stale = self._probe_started is not None and now - self._probe_started >= self.cooldown_s
                if self._probe_started is None or probe_stale:
                    self._state = BreakerState.HALF_OPEN
                    self._probe_started = now
                    return
                raise CircuitOpen(self._message(now, probe_in_flight=True))
            raise CircuitOpen(self._message(now))

    def record_success(self) -> None:
        with self._lock:
            now = self._clock()
            self._remember(now, True)
            self._consecutive = 0
            if self._state is not BreakerState.CLOSED:
                self._state, self._opened_at, self._probe_started, self._reason = BreakerState.CLOSED, None, None, ""
                self._outcomes.clear()

    def record_failure(self, error: Optional[str] = None) -> None:
        with self._lock:
            now = self._clock()
            self._remember(now, False)
            self._consecutive += 1
            last = f"; last: {error}" if error else ""
            if self._state is BreakerState.HALF_OPEN or self._probe_started is not None:
                self._open(now, f"probe failed{last}")
            elif self._state is BreakerState.CLOSED:
                failures = sum(1 for _, ok in self._outcomes if not ok)
                if self._consecutive >= self.failure_threshold:
                    self._open(now, f"{self._consecutive} consecutive failures{last}")
                elif len(self._outcomes) >= self.min_calls and failures / len(self._outcomes) >= self.failure_rate:
                    self._open(now, f"{failures} of {len(self._outcomes)} calls failed in {self.window_s:g}s{last}")

    def _remember(self, now: float, ok: bool) -> None:
        self._outcomes.append((now, ok))
        while self._outcomes and now - self._outcomes[0][0] > self.window_s:
            self._outcomes.popleft()

    def _open(self, now: float, reason: str) -> None:
        self._state, self._opened_at, self._probe_started, self._reason = BreakerState.OPEN, now, None, reason

    def _wall(self, monotonic_at: float, now: float) -> str:
        wall = self._wall_clock() - (now - monotonic_at)
        return datetime.fromtimestamp(wall, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _message(self, now: float, probe_in_flight: bool = False) -> str:
        opened = self._opened_at if self._opened_at is not None else now
        if probe_in_flight:
            nxt = "a probe is in flight"
        else:
            at = opened + self.cooldown_s
            nxt = f"next probe at {self._wall(at, now)} (in {max(0.0, at - now):.1f}s)"
        return f"circuit open for {self.endpoint} since {self._wall(opened, now)}, {nxt} ({self._reason})"


# --------------------------------------------------------------------------------------
# Rate limiter
# --------------------------------------------------------------------------------------


class RateLimited(Exception):
    """Raised by ``RateLimiter.acquire`` when the wait would exceed ``max_wait_s``."""


class _Bucket:
    """A token bucket that reserves: the balance may go negative and the taker waits it off."""

    def __init__(self, per_minute: float, capacity: Optional[float], now: float):
        self.rate = per_minute / 60.0
        self.capacity = float(capacity if capacity is not None else per_minute)
        self.balance = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        self.balance = min(self.capacity, self.balance + max(0.0, now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def wait_for(self, amount: float) -> float:
        return max(0.0, amount - self.balance) / self.rate


class RateLimiter:
    """Per endpoint: requests/min and tokens/min token buckets plus a cap on calls in flight. Thread-safe.

    ``acquire`` reserves (one request, ``tokens`` tokens) and sleeps until the buckets cover the
    reservation, so callers are served in order and each sleeps once; ``slot`` holds one of the
    ``max_concurrency`` places while the request is on the wire. ``settle`` corrects the token
    bucket once the real usage is known, and ``pause`` holds everyone back after a 429.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        requests_per_minute: Optional[float] = None,
        tokens_per_minute: Optional[float] = None,
        max_concurrency: Optional[int] = None,
        burst_requests: Optional[float] = None,
        burst_tokens: Optional[float] = None,
        max_wait_s: Optional[float] = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ):
        for name, value in (("requests_per_minute", requests_per_minute), ("tokens_per_minute", tokens_per_minute),
                            ("max_concurrency", max_concurrency)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None (unlimited), not {value}")
        self.endpoint = endpoint
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        now = clock()
        self._requests = _Bucket(requests_per_minute, burst_requests, now) if requests_per_minute else None
        self._tokens = _Bucket(tokens_per_minute, burst_tokens, now) if tokens_per_minute else None
        self._slots = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None
        self._max_concurrency = max_concurrency
        self._async_slots: Optional[tuple[asyncio.AbstractEventLoop, asyncio.Semaphore]] = None
        self._paused_until = -math.inf

    def acquire(self, tokens: int = 0) -> float:
        """Reserve one request and ``tokens`` tokens, sleeping as long as needed; returns the seconds slept."""
        wait = self.reserve(tokens)
        if wait > 0:
            self._sleep(wait)
        return wait

    def reserve(self, tokens: int = 0) -> float:
        """Reserve one request and ``tokens`` tokens now; returns how long the caller must wait before sending
        (an async caller awaits it, ``acquire`` sleeps it). Raises ``RateLimited`` past ``max_wait_s``."""
        with self._lock:
            now = self._clock()
            wait = max(0.0, self._paused_until - now)
            for bucket, amount in ((self._requests, 1.0), (self._tokens, float(tokens))):
                if bucket is not None:
                    bucket.refill(now)
                    wait = max(wait, bucket.wait_for(amount))
            if self.max_wait_s is not None and wait > self.max_wait_s:
                raise RateLimited(f"rate limit for {self.endpoint}: the next call could go in {wait:.1f}s, "
                                  f"more than the {self.max_wait_s:g}s allowed")
            if self._requests is not None:
                self._requests.balance -= 1.0
            if self._tokens is not None:
                self._tokens.balance -= float(tokens)
        return wait

    def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        """Charge (or refund) the difference between the tokens reserved and those the provider reported."""
        if self._tokens is None:
            return
        with self._lock:
            self._tokens.refill(self._clock())
            self._tokens.balance = min(self._tokens.capacity, self._tokens.balance - (actual_tokens - estimated_tokens))

    def pause(self, seconds: float) -> None:
        """Hold back every caller of this endpoint for ``seconds`` (the provider's Retry-After)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    @asynccontextmanager
    async def async_slot(self) -> AsyncIterator[float]:
        """``slot`` for coroutines: the same cap, kept by an ``asyncio.Semaphore`` of the running loop."""
        if self._max_concurrency is None:
            yield 0.0
            return
        loop = asyncio.get_running_loop()
        if self._async_slots is None or self._async_slots[0] is not loop:
            self._async_slots = (loop, asyncio.Semaphore(self._max_concurrency))
        semaphore = self._async_slots[1]
        started = time.monotonic()
        async with semaphore:
            yield time.monotonic() - started

    @contextmanager
    def slot(self) -> Iterator[float]:
        """One place among ``max_concurrency``; yields the (real) seconds spent waiting for it."""
        if self._slots is None:
            yield 0.0
            return
        started = time.monotonic()
        self._slots.acquire()
        try:
            yield time.monotonic() - started
        finally:
            self._slots.release()


def estimate_tokens(request: StructuredRequest) -> int:
    """What a request may use, for the tokens/min bucket: ~4 characters a token in, plus the output cap."""
    return (len(request.system) + len(request.document)) // 4 + request.max_output_tokens


# --------------------------------------------------------------------------------------
# The caller
# --------------------------------------------------------------------------------------


class Attempt(NamedTuple):
    """One provider call: its number (from 1), its error (None on success), HTTP status, seconds waited before it."""

    attempt: int
    error: Optional[str]
    status: Optional[int]
    waited_s: float


@dataclass
class ReliableResult:
    """The final ``CallResult`` and how it was reached.

    ``cost_usd`` and ``latency_s`` sum every attempt (``result`` carries only the last one's):
    a local model bills compute time for a timed-out attempt too. ``replayed`` is True when the
    idempotency key had already completed and no provider call was made.
    """

    result: CallResult
    attempts: list[Attempt] = field(default_factory=list)
    replayed: bool = False
    cost_usd: float = 0.0
    latency_s: float = 0.0
    waited_s: float = 0.0


class _InFlight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.outcome: Optional[ReliableResult] = None


class _Send(NamedTuple):
    """Step of the retry plan: make one provider call (``tokens`` reserved against the rate limiter)."""

    tokens: int


class _Wait(NamedTuple):
    """Step of the retry plan: back off for ``seconds`` before the next attempt."""

    seconds: float


RetryPlan = Generator[Union[_Send, _Wait], "tuple[CallResult, float]", ReliableResult]


class ReliableCaller:
    """``client_call`` with retries, a circuit breaker, rate limits and in-process idempotency.

    ``call`` never raises for provider faults, like the adapters: a refused call (circuit open,
    rate-limit wait too long) comes back as a ``CallResult`` whose error says so. ``acall`` is the
    same for coroutines (``client_acall``): the retry decisions are one plan (``_plan``) that
    both drive, so blocking and concurrent batches retry, back off and break circuits alike.
    """

    def __init__(
        self,
        client_call: Callable[[StructuredRequest], CallResult],
        endpoint: str,
        retry: Optional[RetryPolicy] = None,
        breaker: Optional[CircuitBreaker] = None,
        limiter: Optional[RateLimiter] = None,
        *,
        client_acall: Optional[Callable[[StructuredRequest], Awaitable[CallResult]]] = None,
        sleep: Sleep = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        random: Callable[[], float] = _random.random,
        estimate: Callable[[StructuredRequest], int] = estimate_tokens,
        model_id: Optional[str] = None,
        max_remembered_keys: int = 10_000,
    ):
        self._call = client_call
        self._acall = client_acall
        self.endpoint = endpoint
        self.retry = retry or RetryPolicy()
        self.breaker = breaker if breaker is not None else CircuitBreaker(endpoint, clock=clock, wall_clock=wall_clock)
        self.limiter = limiter
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._random = random
        self._estimate = estimate
        self._model_id = model_id or endpoint
        self._max_keys = max_remembered_keys
        self._keys_lock = threading.Lock()
        self._completed: "collections.OrderedDict[str, ReliableResult]" = collections.OrderedDict()
        self._in_flight: dict[str, _InFlight] = {}

    # idempotency ----------------------------------------------------------------------
    def call(self, request: StructuredRequest, idempotency_key: Optional[str] = None) -> ReliableResult:
        """The final result; with a key, a call that already completed (or is running) is not made again.

        Completed means the provider gave an answer: a success or a non-retryable failure (a 400,
        output that fails the schema). Transport failures that exhausted the retries, an open
        circuit or a rate-limit refusal are not remembered, so the same key may try again later.
        """
        if idempotency_key is None:
            return self._drive(request)
        while True:
            replay, flight = self._claim(idempotency_key)
            if replay is not None:
                return replay
            if flight is not None:
                break
            self._waiting_on(idempotency_key).done.wait()
        outcome: Optional[ReliableResult] = None
        try:
            outcome = self._drive(request)
            return outcome
        finally:
            self._finish(idempotency_key, flight, outcome)

    async def acall(self, request: StructuredRequest, idempotency_key: Optional[str] = None) -> ReliableResult:
        """``call`` for coroutines; without ``client_acall`` the blocking call runs in a worker thread."""
        if idempotency_key is None:
            return await self._adrive(request)
        while True:
            replay, flight = self._claim(idempotency_key)
            if replay is not None:
                return replay
            if flight is not None:
                break
            await asyncio.to_thread(self._waiting_on(idempotency_key).done.wait)  # rare: the same key twice at once
        outcome: Optional[ReliableResult] = None
        try:
            outcome = await self._adrive(request)
            return outcome
        finally:
            self._finish(idempotency_key, flight, outcome)

    def _claim(self, key: str) -> tuple[Optional[ReliableResult], Optional[_InFlight]]:
        """``(replay, None)`` when the key completed, ``(None, flight)`` when we own the call, ``(None, None)`` to wait."""
        with self._keys_lock:
            done = self._completed.get(key)
            if done is not None:
                self._completed.move_to_end(key)
                return ReliableResult(done.result, list(done.attempts), replayed=True), None
            if key in self._in_flight:
                return None, None
            flight = self._in_flight[key] = _InFlight()
            return None, flight

    def _waiting_on(self, key: str) -> _InFlight:
        with self._keys_lock:
            return self._in_flight.get(key) or _done_flight()

    def _finish(self, key: str, flight: _InFlight, outcome: Optional[ReliableResult]) -> None:
        definitive = outcome is not None and (outcome.result.ok or not self._transport_or_refusal(outcome))
        with self._keys_lock:
            if definitive:
                self._completed[key] = outcome
                while len(self._completed) > self._max_keys:
                    self._completed.popitem(last=False)
            del self._in_flight[key]
        flight.outcome = outcome if definitive else None
        flight.done.set()

    def forget(self, idempotency_key: str) -> None:
        with self._keys_lock:
            self._completed.pop(idempotency_key, None)

    def _transport_or_refusal(self, outcome: ReliableResult) -> bool:
        last = outcome.attempts[-1] if outcome.attempts else None
        if last is None or last.error != outcome.result.error:
            return True  # refused before (another) provider call: circuit open or rate limit
        return is_transport_failure(outcome.result, self.retry.retryable_statuses)

    # drivers ----------------------------------------------------------------------------
    def _drive(self, request: StructuredRequest) -> ReliableResult:
        plan = self._plan(request)
        try:
            step = next(plan)
            while True:
                if isinstance(step, _Wait):
                    self._sleep(step.seconds)
                    step = plan.send(None)
                    continue
                try:
                    sent = self._send(request, step.tokens)
                except RateLimited as exc:
                    step = plan.throw(exc)
                    continue
                step = plan.send(sent)
        except StopIteration as finished:
            return finished.value

    async def _adrive(self, request: StructuredRequest) -> ReliableResult:
        plan = self._plan(request)
        try:
            step = next(plan)
            while True:
                if isinstance(step, _Wait):
                    await self._async_sleep(step.seconds)
                    step = plan.send(None)
                    continue
                try:
                    sent = await self._asend(request, step.tokens)
                except RateLimited as exc:
                    step = plan.throw(exc)
                    continue
                step = plan.send(sent)
        except StopIteration as finished:
            return finished.value

    def _send(self, request: StructuredRequest, tokens: int) -> tuple[CallResult, float]:
        """One provider call through the limiter: the result and the seconds spent waiting for the limits."""
        if self.limiter is None:
            return self._call(request), 0.0
        waited = self.limiter.acquire(tokens)
        with self.limiter.slot() as slot_wait:
            result = self._call(request)
        self.limiter.settle(tokens, result.input_tokens + result.output_tokens)
        return result, waited + slot_wait

    async def _asend(self, request: StructuredRequest, tokens: int) -> tuple[CallResult, float]:
        call = self._acall or (lambda r: asyncio.to_thread(self._call, r))
        if self.limiter is None:
            return await call(request), 0.0
        waited = self.limiter.reserve(tokens)
        if waited > 0:
            await self._async_sleep(waited)
        async with self.limiter.async_slot() as slot_wait:
            result = await call(request)
        self.limiter.settle(tokens, result.input_tokens + result.output_tokens)
        return result, waited + slot_wait

    # the plan ---------------------------------------------------------------------------
    def _refused(self, error: str, attempts: list[Attempt], cost: float, latency: float, waited: float) -> ReliableResult:
        result = CallResult(model_id=self._model_id, error=error, finish_reason="error")
        return ReliableResult(result, attempts, cost_usd=cost, latency_s=latency, waited_s=waited)

    def _plan(self, request: StructuredRequest) -> RetryPlan:
        """The retry decisions, free of I/O: yields ``_Send`` (get back the result and the limiter wait)
        or ``_Wait`` (back off), returns the ``ReliableResult``; a ``RateLimited`` thrown in ends it."""
        attempts: list[Attempt] = []
        cost = latency = total_waited = 0.0
        pending_wait = 0.0  # backoff already slept before the next attempt
        result: Optional[CallResult] = None
        for number in range(1, self.retry.max_attempts + 1):
            try:
                self.breaker.check()
            except CircuitOpen as exc:
                if attempts and self._counts_against_endpoint(result):
                    self.breaker.record_failure(result.error)  # our failed probe: the circuit opens again
                return self._refused(str(exc), attempts, cost, latency, total_waited)
            estimated = self._estimate(request) if self.limiter is not None else 0
            try:
                result, limiter_wait = yield _Send(estimated)
            except RateLimited as exc:
                return self._refused(str(exc), attempts, cost, latency, total_waited)
            waited = pending_wait + limiter_wait
            total_waited += limiter_wait
            cost += result.cost_usd
            latency += result.latency_s
            status = error_status(result)
            attempts.append(Attempt(number, result.error, status, waited))
            retry, retry_after = is_retryable(result, statuses=self.retry.retryable_statuses, now=self._wall_clock())
            if not retry:
                # The endpoint answered: a success, or a refusal / bad output that is no transport fault.
                self.breaker.record_success()
                break
            if retry_after is not None and self.limiter is not None and status == 429:
                # Held back as long as the policy lets a worker wait, never the hour a provider may ask: the
                # calls queued behind the pause would all wait it out, where this one moves on (below).
                self.limiter.pause(min(retry_after, self.retry.max_retry_after_s))
            if number == self.retry.max_attempts:
                break
            if retry_after is not None and retry_after > self.retry.max_retry_after_s:
                break  # the provider wants longer than we hold a worker: let the cascade move on
            delay = self.retry.delay_s(number, self._random(), retry_after)
            if total_waited + delay > self.retry.max_total_wait_s:
                break
            if delay > 0:
                yield _Wait(delay)
            total_waited += delay
            pending_wait = delay
        assert result is not None
        if result.error is not None and self._counts_against_endpoint(result):
            # One outcome per call, not per attempt: a call that recovers on a retry is no failure,
            # and a batch whose calls all recover never opens the circuit.
            self.breaker.record_failure(result.error)
        return ReliableResult(result, attempts, cost_usd=cost, latency_s=latency, waited_s=total_waited)

    def _counts_against_endpoint(self, result: Optional[CallResult]) -> bool:
        """A transport failure says the endpoint is unwell, except a 429: that is the provider pacing us,
        which the limiter's pause answers; opening the circuit would refuse calls it is ready for."""
        return result is not None and is_transport_failure(result, self.retry.retryable_statuses) and error_status(result) != 429


def _done_flight() -> _InFlight:
    """A flight that has already landed: the key's owner finished between our two looks."""
    flight = _InFlight()
    flight.done.set()
    return flight
