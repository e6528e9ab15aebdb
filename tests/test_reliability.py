"""Retries, circuit breaker, rate limiter and idempotency, over real loopback servers and the real OpenAI adapter.

Time is faked where waits are long (``FakeClock.sleep`` records and advances instead of
sleeping), so Retry-After of minutes and breaker cooldowns cost nothing; the HTTP is real.
"""

from __future__ import annotations

import threading
import time
from email.utils import formatdate

import pytest

from resources.model_call import CallResult
from resources.providers.openai_chat import OpenAIChatClient
from resources.reliability import (
    Attempt,
    BreakerState,
    CircuitBreaker,
    RateLimiter,
    ReliableCaller,
    RetryPolicy,
    is_retryable,
    parse_retry_after,
)
from tests.protocol_servers import (
    Behaviour,
    DropConnection,
    HTTPError,
    InvalidJSON,
    Overloaded,
    RateLimited,
    ServerError,
    Slow,
    Success,
    Unauthorized,
    Unavailable,
)
from tests.test_openai_chat_adapter import INVOICE, KEY, client, cloud_spec, invoice_request, server  # noqa: F401 (fixtures)

WALL = 1_790_000_000.0  # a fixed wall clock for HTTP-date Retry-After


class FakeClock:
    """Monotonic time that only moves when something sleeps (or the test advances it)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


def caller(client, clock, *, retry=None, breaker=None, limiter=None, **kwargs) -> ReliableCaller:
    return ReliableCaller(
        client.call, "openai:gpt-4o-mini", retry or RetryPolicy(base_delay_s=0.5, max_delay_s=8.0),
        breaker or CircuitBreaker("openai:gpt-4o-mini", clock=clock, wall_clock=lambda: WALL),
        limiter, sleep=clock.sleep, clock=clock, wall_clock=lambda: WALL, random=lambda: 0.5, model_id="gpt-4o-mini", **kwargs,
    )


# --- retries ------------------------------------------------------------------------------------


def test_429_is_retried_after_at_least_its_retry_after(server, client, clock):
    server.script(RateLimited(retry_after=7), Success(INVOICE))
    outcome = caller(client, clock).call(invoice_request())
    assert outcome.result.ok and outcome.result.output.total == 12.0
    assert len(server.requests) == 2
    assert clock.sleeps == [7.0]  # backoff (0.25 with this jitter) is below the provider's floor
    assert [(a.attempt, a.status) for a in outcome.attempts] == [(1, 429), (2, None)]
    assert "HTTP 429" in outcome.attempts[0].error and outcome.attempts[1].error is None
    assert outcome.attempts[1].waited_s == 7.0 and outcome.waited_s == 7.0


def test_retry_after_as_an_http_date(server, client, clock):
    server.script(HTTPError(429, headers={"Retry-After": formatdate(WALL + 30, usegmt=True)}), Success(INVOICE))
    outcome = caller(client, clock).call(invoice_request())
    assert outcome.result.ok
    assert clock.sleeps == [pytest.approx(30.0, abs=1.0)]


def test_a_retry_after_longer_than_the_policy_allows_ends_the_retries(server, client, clock):
    server.script(RateLimited(retry_after=600), Success(INVOICE))
    outcome = caller(client, clock, retry=RetryPolicy(max_retry_after_s=60)).call(invoice_request())
    assert "HTTP 429" in outcome.result.error and len(server.requests) == 1 and clock.sleeps == []


@pytest.mark.parametrize("fault", [ServerError(), Unavailable(), HTTPError(502), HTTPError(504), Overloaded()],
                         ids=["500", "503", "502", "504", "529"])
def test_server_errors_are_retried_with_backoff_then_succeed(server, client, clock, fault):
    server.script(fault, fault, Success(INVOICE))
    outcome = caller(client, clock).call(invoice_request())
    assert outcome.result.ok
    assert len(server.requests) == 3
    assert clock.sleeps == [0.25, 0.5]  # full jitter at rand=0.5 of 0.5s, 1s
    assert [a.status for a in outcome.attempts] == [fault.status, fault.status, None]


@pytest.mark.parametrize("fault, status", [(HTTPError(400), 400), (Unauthorized(), 401), (HTTPError(403), 403),
                                           (HTTPError(404), 404)], ids=["400", "401", "403", "404"])
def test_client_errors_are_not_retried(server, client, clock, fault, status):
    server.script(fault, Success(INVOICE))
    outcome = caller(client, clock).call(invoice_request())
    assert f"HTTP {status}" in outcome.result.error
    assert len(server.requests) == 1 and clock.sleeps == []
    assert outcome.attempts == [Attempt(1, outcome.result.error, status, 0.0)]


def test_schema_invalid_output_is_not_retried_and_keeps_its_billed_tokens(server, client, clock):
    server.script(InvalidJSON(input_tokens=1200, output_tokens=300), Success(INVOICE))
    outcome = caller(client, clock).call(invoice_request())
    assert outcome.result.error.startswith("reply is not valid JSON")
    assert len(server.requests) == 1
    assert outcome.cost_usd == outcome.result.cost_usd == 0.00036


def test_output_not_matching_the_schema_is_not_retried(server, client, clock):
    server.script(Success({**INVOICE, "line_items": [{"amount": 1}]}), Success(INVOICE))
    outcome = caller(client, clock).call(invoice_request())
    assert outcome.result.error.startswith("reply does not match the schema") and len(server.requests) == 1


def test_a_dropped_connection_is_retried(server, client, clock):
    server.script(DropConnection(), Success(INVOICE))
    outcome = caller(client, clock).call(invoice_request())
    assert outcome.result.ok and len(server.requests) == 2
    assert outcome.attempts[0].error.startswith("connection error calling gpt-4o-mini") and outcome.attempts[0].status is None


def test_a_timeout_is_retried(server, clock):
    adapter = OpenAIChatClient(cloud_spec(server.url), KEY, timeout=0.2)
    try:
        server.script(Slow(1.0, then=Success(INVOICE)), Success(INVOICE))
        outcome = caller(adapter, clock).call(invoice_request())
    finally:
        adapter.close()
    assert outcome.result.ok and "timed out" in outcome.attempts[0].error
    assert outcome.latency_s >= 0.2  # both attempts' time is accounted


def test_exhausted_retries_return_the_last_error_and_the_history(server, client, clock):
    server.script(RateLimited(retry_after=2), ServerError(), Unavailable(), Unavailable(), Success(INVOICE))
    outcome = caller(client, clock, retry=RetryPolicy(max_attempts=4, base_delay_s=1.0, max_delay_s=8.0)).call(invoice_request())
    assert not outcome.result.ok and outcome.result.error.startswith("HTTP 503 from gpt-4o-mini")
    assert len(server.requests) == 4  # the scripted success is never reached
    assert [a.status for a in outcome.attempts] == [429, 500, 503, 503]
    assert [a.waited_s for a in outcome.attempts] == [0.0, 2.0, 1.0, 2.0]
    assert clock.sleeps == [2.0, 1.0, 2.0] and outcome.waited_s == 5.0


def test_is_retryable_classification():
    def failed(error):
        return CallResult(model_id="m", error=error)

    assert is_retryable(CallResult(model_id="m")) == (False, None)
    assert is_retryable(failed("HTTP 429 from m: slow down (retry after 7s)")) == (True, 7.0)
    assert is_retryable(failed("HTTP 429 from m: Please try again in 250ms. [rate_limit_exceeded]")) == (True, 0.25)
    assert is_retryable(failed("HTTP 529 from m: Overloaded")) == (True, None)
    assert is_retryable(failed("timed out after 5.0s calling m (ReadTimeout)")) == (True, None)
    assert is_retryable(failed("HTTP 400 from m: Invalid request.")) == (False, None)
    assert is_retryable(failed("HTTP 200 from m: reply is not JSON")) == (False, None)
    assert is_retryable(failed("could not call m: InvalidURL: bad")) == (False, None)
    assert is_retryable(failed("model refused: no")) == (False, None)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 10) == 10.0
    assert parse_retry_after("soon") is None


# --- circuit breaker --------------------------------------------------------------------------


def test_breaker_opens_fails_fast_half_opens_after_cooldown_and_closes_on_success(server, client, clock):
    breaker = CircuitBreaker("openai:gpt-4o-mini", failure_threshold=3, cooldown_s=30, clock=clock, wall_clock=lambda: WALL)
    reliable = caller(client, clock, retry=RetryPolicy(max_attempts=2, base_delay_s=0.1), breaker=breaker)
    server.default = Unavailable()

    # The breaker counts calls that gave up, not attempts: three calls of two attempts each open it.
    failed = [reliable.call(invoice_request()) for _ in range(3)]
    assert len(server.requests) == 6
    assert [[a.status for a in f.attempts] for f in failed] == [[503, 503]] * 3
    assert breaker.state is BreakerState.OPEN

    second = reliable.call(invoice_request())
    assert len(server.requests) == 6 and second.attempts == []  # failed fast
    assert second.result.error.startswith("circuit open for openai:gpt-4o-mini since ")
    assert "next probe at " in second.result.error and "3 consecutive failures" in second.result.error

    clock.advance(30)
    assert breaker.state is BreakerState.HALF_OPEN
    server.default = Success(INVOICE)
    probe = reliable.call(invoice_request())
    assert probe.result.ok and len(server.requests) == 7
    assert breaker.state is BreakerState.CLOSED


def test_a_failed_probe_reopens_the_circuit(server, client, clock):
    breaker = CircuitBreaker("ep", failure_threshold=2, cooldown_s=10, clock=clock)
    reliable = caller(client, clock, retry=RetryPolicy(max_attempts=1), breaker=breaker)
    server.default = ServerError()
    reliable.call(invoice_request())
    reliable.call(invoice_request())
    assert breaker.state is BreakerState.OPEN and len(server.requests) == 2
    clock.advance(10)
    assert "HTTP 500" in reliable.call(invoice_request()).result.error  # the probe went through and failed
    assert len(server.requests) == 3 and breaker.state is BreakerState.OPEN
    assert "probe failed" in reliable.call(invoice_request()).result.error and len(server.requests) == 3


def test_client_errors_and_bad_output_do_not_trip_the_breaker(server, client, clock):
    breaker = CircuitBreaker("ep", failure_threshold=2, clock=clock)
    reliable = caller(client, clock, breaker=breaker)
    server.script(Unauthorized(), InvalidJSON(), HTTPError(400))
    for _ in range(3):
        reliable.call(invoice_request())
    assert breaker.state is BreakerState.CLOSED and len(server.requests) == 3


def test_half_open_lets_only_one_probe_through():
    clock = FakeClock()
    breaker = CircuitBreaker("ep", failure_threshold=1, cooldown_s=5, clock=clock)
    breaker.record_failure("boom")
    clock.advance(5)
    breaker.check()  # the probe
    with pytest.raises(Exception, match="a probe is in flight"):
        breaker.check()
    breaker.record_success()
    breaker.check()
    assert breaker.state is BreakerState.CLOSED


def test_breaker_opens_on_failure_rate_over_the_window():
    clock = FakeClock()
    breaker = CircuitBreaker("ep", failure_threshold=100, failure_rate=0.5, window_s=60, min_calls=6, clock=clock)
    for ok in [True, False, True, False, True]:
        breaker.record_success() if ok else breaker.record_failure()
        clock.advance(1)
    assert breaker.state is BreakerState.CLOSED  # below min_calls
    breaker.record_failure("HTTP 503")
    assert breaker.state is BreakerState.OPEN  # 3 of 6 failed


# --- rate limiter -----------------------------------------------------------------------------


class CountingSlow(Behaviour):
    """Succeeds after ``seconds``, counting how many requests are being served at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.active, self.peak = seconds, 0, 0
        self.lock = threading.Lock()

    def serve(self, exchange) -> None:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(self.seconds)
        with self.lock:
            self.active -= 1
        Success(INVOICE).serve(exchange)


def test_the_limiter_caps_requests_in_flight(server, client):
    behaviour = CountingSlow(0.15)
    server.default = behaviour
    limiter = RateLimiter("ep", max_concurrency=2)
    reliable = ReliableCaller(client.call, "ep", limiter=limiter)
    results = []
    threads = [threading.Thread(target=lambda: results.append(reliable.call(invoice_request()))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 6 and all(r.result.ok for r in results)
    assert behaviour.peak == 2 and len(server.requests) == 6


def test_the_limiter_caps_requests_per_minute(server, client, clock):
    limiter = RateLimiter("ep", requests_per_minute=3, clock=clock, sleep=clock.sleep)
    reliable = caller(client, clock, limiter=limiter)
    outcomes = [reliable.call(invoice_request()) for _ in range(5)]
    assert all(o.result.ok for o in outcomes) and len(server.requests) == 5
    assert clock.sleeps == [20.0, 20.0]  # a burst of 3, then one every 20 s
    assert [o.attempts[0].waited_s for o in outcomes] == [0.0, 0.0, 0.0, 20.0, 20.0]


def test_the_limiter_caps_tokens_per_minute_and_settles_on_real_usage(server, client, clock):
    limiter = RateLimiter("ep", tokens_per_minute=600, clock=clock, sleep=clock.sleep)
    reliable = caller(client, clock, limiter=limiter, estimate=lambda request: 300)
    server.default = Success(INVOICE, input_tokens=400, output_tokens=200)  # 600 used, 300 reserved
    reliable.call(invoice_request())
    assert clock.sleeps == []
    reliable.call(invoice_request())  # the settled first call emptied the bucket: wait 300 tokens' refill
    assert clock.sleeps == [30.0]


def test_the_limiter_refuses_a_wait_longer_than_allowed(server, client, clock):
    limiter = RateLimiter("ep", requests_per_minute=1, max_wait_s=5, clock=clock, sleep=clock.sleep)
    reliable = caller(client, clock, limiter=limiter)
    assert reliable.call(invoice_request()).result.ok
    refused = reliable.call(invoice_request())
    assert refused.result.error.startswith("rate limit for ep: the next call could go in 60.0s")
    assert len(server.requests) == 1 and clock.sleeps == []


def test_a_429_pauses_every_caller_of_the_endpoint(server, client, clock):
    limiter = RateLimiter("ep", requests_per_minute=1000, clock=clock, sleep=clock.sleep)
    server.script(RateLimited(retry_after=10))
    reliable = caller(client, clock, retry=RetryPolicy(max_attempts=1), limiter=limiter)
    reliable.call(invoice_request())
    assert reliable.call(invoice_request()).result.ok
    assert clock.sleeps == [10.0]  # the second call waited out the first one's Retry-After


def test_a_retry_after_past_the_policys_limit_pauses_the_endpoint_only_as_long_as_the_policy_waits(server, client, clock):
    """One 429 asking for an hour once held every other call of the batch for that hour."""
    limiter = RateLimiter("ep", requests_per_minute=1000, clock=clock, sleep=clock.sleep)
    server.script(RateLimited(retry_after=3600))
    reliable = caller(client, clock, retry=RetryPolicy(max_attempts=1, max_retry_after_s=60), limiter=limiter)
    assert "HTTP 429" in reliable.call(invoice_request()).result.error
    assert reliable.call(invoice_request()).result.ok
    assert clock.sleeps == [60.0]


# --- idempotency ------------------------------------------------------------------------------


def test_an_idempotency_key_prevents_a_second_provider_call(server, client, clock):
    reliable = caller(client, clock)
    first = reliable.call(invoice_request(), idempotency_key="item-1:gpt-4o-mini")
    again = reliable.call(invoice_request(), idempotency_key="item-1:gpt-4o-mini")
    assert len(server.requests) == 1
    assert first.result.ok and not first.replayed
    assert again.replayed and again.result.output == first.result.output and again.cost_usd == 0.0
    reliable.call(invoice_request(), idempotency_key="item-2:gpt-4o-mini")
    assert len(server.requests) == 2


def test_concurrent_calls_with_one_key_make_one_provider_call(server, client):
    server.default = Slow(0.3, then=Success(INVOICE))
    reliable = ReliableCaller(client.call, "ep")
    results = []
    threads = [threading.Thread(target=lambda: results.append(reliable.call(invoice_request(), "same"))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(server.requests) == 1 and len(results) == 3
    assert all(r.result.ok for r in results) and sum(r.replayed for r in results) == 2


def test_a_key_whose_retries_ran_out_may_try_again(server, client, clock):
    server.script(Unavailable(), Unavailable())
    reliable = caller(client, clock, retry=RetryPolicy(max_attempts=2))
    assert not reliable.call(invoice_request(), idempotency_key="k").result.ok
    assert reliable.call(invoice_request(), idempotency_key="k").result.ok
    assert len(server.requests) == 3


def test_a_definitive_failure_is_remembered_for_its_key(server, client, clock):
    server.script(InvalidJSON())
    reliable = caller(client, clock)
    first = reliable.call(invoice_request(), idempotency_key="k")
    again = reliable.call(invoice_request(), idempotency_key="k")
    assert again.replayed and again.result.error == first.result.error and len(server.requests) == 1


# --- the same layer over Anthropic's protocol ---------------------------------------------------


def test_anthropic_529_overloaded_is_retried_and_401_is_not(clock):
    from resources.providers.anthropic_messages import AnthropicMessagesClient
    from tests.protocol_servers import AnthropicMessagesServer
    from tests.test_anthropic_messages_adapter import KEY as ANTHROPIC_KEY, claude_spec

    with AnthropicMessagesServer(api_key=ANTHROPIC_KEY) as anthropic:
        adapter = AnthropicMessagesClient(claude_spec(anthropic.url), ANTHROPIC_KEY, timeout=5.0)
        try:
            reliable = caller(adapter, clock)
            anthropic.script(Overloaded(), RateLimited(retry_after=3), Success(INVOICE))
            outcome = reliable.call(invoice_request())
            assert outcome.result.ok and [a.status for a in outcome.attempts] == [529, 429, None]
            assert clock.sleeps == [0.25, 3.0]
            anthropic.script(Unauthorized())
            assert "HTTP 401" in reliable.call(invoice_request()).result.error
            assert len(anthropic.requests) == 4
        finally:
            adapter.close()
