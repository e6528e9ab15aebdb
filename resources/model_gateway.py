"""The gateway: which catalog models can serve right now, and a client for each.

Availability is decided here and explained in words ("OPENAI_API_KEY is not set"), so the
router can skip a model with a reason instead of crashing on it. Clients, and the local
model servers behind some of them, are created on first use and closed together.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from typing import AsyncIterator, Mapping, Optional

import dagster as dg
import httpx
from pydantic import BaseModel, Field, PrivateAttr

from resources.catalog import ModelCatalog, ModelSpec, Protocol
from resources.model_call import CallResult, StructuredRequest
from resources.providers.base import ModelClient
from resources.reliability import CircuitBreaker, RateLimiter, ReliableCaller, ReliableResult, RetryPolicy, error_type
from resources.providers.local_server import LocalLlamaServer, LocalServerError, local_server_unavailable_reason
from resources.providers.transport_process import BATCH_TRANSPORT, TransportProcess


class Availability(BaseModel):
    available: bool
    reason: str = ""


TURNS_TO_SEND = 2  # loop turns a worker's first call takes from its routing to its request on the wire (connect, write)


async def _start_after_turns(transport: TransportProcess, turns: int) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)
    await transport.start()


class ModelGateway:
    def __init__(self, catalog: ModelCatalog, api_keys: Optional[Mapping[str, str]] = None, *, timeout_s: float = 120.0,
                 retry: Optional[RetryPolicy] = None, max_concurrency: int = 16, endpoint_concurrency: int = 16,
                 transport_process_min_items: Optional[int] = 64):
        if max_concurrency < 1 or endpoint_concurrency < 1:
            raise ValueError(f"max_concurrency and endpoint_concurrency must be at least 1, not {max_concurrency}/{endpoint_concurrency}")
        self.catalog = catalog
        self.max_concurrency = max_concurrency  # items of one step in flight at once
        self.endpoint_concurrency = endpoint_concurrency  # calls in flight per endpoint unless the catalog says
        # Batches of at least this many items send their HTTP calls from a child process (None: never).
        self.transport_process_min_items = transport_process_min_items
        self.transport: Optional[TransportProcess] = None  # the running batch's, while one runs
        # How long a batch waits for its transport process before the first call; 0: the first calls go
        # in-process until it is ready (no call waits on the child's start).
        self.transport_process_wait_s = 0.0
        self.transport_calls = 0  # calls carried by transport processes, over this gateway's life
        self._api_keys = {k: v for k, v in (api_keys or {}).items() if v}
        self.timeout_s = timeout_s
        self._clients: dict[str, ModelClient] = {}
        self._servers: dict[str, LocalLlamaServer] = {}
        self._broken: dict[str, str] = {}
        self.retry = retry or RetryPolicy()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._reliable: dict[str, ReliableCaller] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self._client_lock = threading.Lock()

    def api_key(self, spec: ModelSpec) -> Optional[str]:
        if not spec.api_key_env:
            return None
        return self._api_keys.get(spec.api_key_env) or os.environ.get(spec.api_key_env) or None

    def availability(self, spec: ModelSpec) -> Availability:
        if spec.id in self._broken:
            return Availability(available=False, reason=self._broken[spec.id])
        if spec.api_key_env and not self.api_key(spec):
            return Availability(available=False, reason=f"{spec.api_key_env} is not set")
        if spec.local_server and not spec.endpoint:
            reason = local_server_unavailable_reason(spec.local_server)
            if reason:
                return Availability(available=False, reason=reason)
        return Availability(available=True)

    def client(self, model_id: str) -> ModelClient:
        if model_id not in self._clients:
            with self._client_lock:  # concurrent first calls must not start two servers for one model
                if model_id not in self._clients:
                    self._clients[model_id] = self._make_client(self.catalog.get(model_id))
        return self._clients[model_id]

    def _make_client(self, spec: ModelSpec) -> ModelClient:
        if spec.protocol is Protocol.PYTHON:
            from resources.providers.python_callable import PythonCallableClient

            return PythonCallableClient(spec)
        base_url = spec.endpoint or self._start_local_server(spec)
        if spec.protocol is Protocol.OPENAI_CHAT:
            from resources.providers.openai_chat import OpenAIChatClient

            return OpenAIChatClient(spec, self.api_key(spec), base_url=base_url, timeout=self.http_timeout())
        if spec.protocol is Protocol.ANTHROPIC_MESSAGES:
            from resources.providers.anthropic_messages import AnthropicMessagesClient

            return AnthropicMessagesClient(spec, self.api_key(spec), base_url=base_url, timeout=self.http_timeout())
        raise ValueError(f"no adapter for protocol {spec.protocol}")

    def http_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s))

    def _start_local_server(self, spec: ModelSpec) -> str:
        server = self._servers.get(spec.id) or LocalLlamaServer(spec.local_server, model_alias=spec.wire_model)
        self._servers[spec.id] = server
        return server.start()

    def call(self, model_id: str, request: StructuredRequest, idempotency_key: Optional[str] = None) -> CallResult:
        """Call a model; a model that cannot even start is marked unavailable for the rest of this gateway's life.

        HTTP models go through ``reliability``: retries with backoff and jitter for 429/5xx/
        timeouts/dropped connections (honouring Retry-After), a circuit breaker per endpoint,
        and idempotency by key. The result's cost and latency add up every attempt.
        """
        client, failed = self._client_or_error(model_id)
        if failed is not None:
            return failed
        if self.catalog.get(model_id).protocol is Protocol.PYTHON:
            return client.call(request)
        outcome = self._caller(model_id, client).call(request, idempotency_key)
        return settled_result(outcome)

    async def acall(self, model_id: str, request: StructuredRequest, idempotency_key: Optional[str] = None) -> CallResult:
        """``call`` for a concurrent batch: HTTP models over ``aiohttp``, bounded by the endpoint's limits.

        A local server is started (once, blocking) on first use; an in-process Python model runs
        inline, since it holds the interpreter either way.
        """
        if model_id in self._clients or not self._slow_to_make(model_id):
            client, failed = self._client_or_error(model_id)
        else:  # starting a local server takes seconds: not on the event loop
            client, failed = await asyncio.to_thread(self._client_or_error, model_id)
        if failed is not None:
            return failed
        if self.catalog.get(model_id).protocol is Protocol.PYTHON:
            return client.call(request)
        caller = self._caller(model_id, client)
        outcome = await caller.acall(request, idempotency_key)
        return settled_result(outcome)

    @contextlib.asynccontextmanager
    async def batch_transport(self, items: int, first_wave: int = 0) -> AsyncIterator[Optional[TransportProcess]]:
        """For a batch worth it, a ``TransportProcess`` carrying its HTTP calls; None for the others.

        Worth it: at least ``transport_process_min_items`` items and an available model reached
        over HTTP with more than one call in flight (a local llama.cpp server takes one at a time:
        nothing waits behind the batch's work there). A small batch would pay the child's start
        (a Python process, ~0.2 s of CPU) for calls that rarely wait on each other.

        With no wait for the child (``transport_process_wait_s`` 0, the default), it is started
        once the batch's ``first_wave`` calls have had their loop turns to leave, in-process:
        forking a step's process takes about 10 ms, in which no request could leave, while
        right after the first wave nothing is waiting (every call is in flight). By the first
        replies the child is ready, and the calls after them go through it.
        """
        wanted = (self.transport_process_min_items is not None and items >= self.transport_process_min_items
                  and any(spec.protocol is not Protocol.PYTHON and (spec.max_concurrency or self.endpoint_concurrency) > 1
                          and self.availability(spec).available for spec in self.catalog))
        if not wanted:
            yield None
            return
        transport = TransportProcess()
        starting: Optional[asyncio.Task] = None
        if self.transport_process_wait_s > 0 or first_wave < 1:
            await transport.start()
            await transport.wait_ready(self.transport_process_wait_s)
        else:
            starting = asyncio.create_task(_start_after_turns(transport, first_wave + TURNS_TO_SEND),
                                           name="transport-start")
        token = BATCH_TRANSPORT.set(transport)
        self.transport = transport
        try:
            yield transport
        finally:
            BATCH_TRANSPORT.reset(token)
            self.transport = None
            if starting is not None:  # cut short if the batch ended first; its outcome read either way
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
            self.transport_calls += transport.calls
            await transport.aclose()

    async def aclose_async(self) -> None:
        """Close the async connection pools of the running event loop (the batch's loop, before it ends)."""
        for client in list(self._clients.values()):
            closer = getattr(client, "aclose", None)
            if closer is not None:
                await closer()

    def _slow_to_make(self, model_id: str) -> bool:
        """Could a first call's client take long to make: a local server to start, an in-process model to load
        (seconds)? A client of an endpoint takes microseconds, made on the loop without a thread hop."""
        spec = self.catalog.get(model_id)
        return spec.protocol is Protocol.PYTHON or not spec.endpoint

    def _client_or_error(self, model_id: str) -> tuple[Optional[ModelClient], Optional[CallResult]]:
        """The model's client, or the failed call of a model that cannot even start (marked unavailable for good)."""
        try:
            return self.client(model_id), None
        except (LocalServerError, ImportError, ValueError, OSError) as exc:
            reason = f"could not start: {exc}"[:300]
            self._broken[model_id] = reason
            return None, CallResult(model_id=model_id, error=reason)

    def _caller(self, model_id: str, client: ModelClient) -> ReliableCaller:
        caller = self._reliable.get(model_id)
        if caller is None:
            spec = self.catalog.get(model_id)
            endpoint = self.endpoint(spec)
            breaker = self._breakers.setdefault(endpoint, CircuitBreaker(endpoint))
            caller = self._reliable[model_id] = ReliableCaller(
                client.call, endpoint, self.retry, breaker, self.limiter(spec), model_id=model_id,
                client_acall=getattr(client, "acall", None))
        return caller

    @staticmethod
    def endpoint(spec: ModelSpec) -> str:
        """What limits and circuit breakers are kept per: the base URL (several models may share one)."""
        return spec.endpoint or f"local:{spec.id}"

    def limiter(self, spec: ModelSpec) -> RateLimiter:
        """The endpoint's limits: calls in flight (catalog ``max_concurrency`` or the gateway's default) and,
        where the catalog states them, requests and tokens per minute. The first model seen sets them."""
        endpoint = self.endpoint(spec)
        if endpoint not in self._limiters:
            self._limiters[endpoint] = RateLimiter(
                endpoint, max_concurrency=spec.max_concurrency or self.endpoint_concurrency,
                requests_per_minute=spec.requests_per_minute, tokens_per_minute=spec.tokens_per_minute)
        return self._limiters[endpoint]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        for server in self._servers.values():
            server.stop()
        self._clients.clear()
        self._servers.clear()
        self._reliable.clear()

    def __enter__(self) -> "ModelGateway":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def settled_result(outcome: ReliableResult) -> CallResult:
    """The last attempt's result carrying the whole call's cost and time, and a code-only log of every attempt."""
    if outcome.replayed:  # answered from the idempotency cache: no request made, nothing charged again
        return outcome.result.model_copy(update={"cost_usd": 0.0, "latency_s": 0.0, "transport_attempts": 0,
                                                 "attempt_log": [], "replayed": True})
    log = [{"attempt": a.attempt, "status": a.status, "error_type": error_type(a.error) if a.error else None,
            "waited_s": round(a.waited_s, 4)} for a in outcome.attempts]
    return outcome.result.model_copy(update={
        "cost_usd": outcome.cost_usd, "latency_s": outcome.latency_s,
        "transport_attempts": len(outcome.attempts), "attempt_log": log})


class ModelGatewayResource(dg.ConfigurableResource):
    """Models as a Dagster resource. Keys come from ``EnvVar``; a model whose key is unset is unavailable, not an error."""

    catalog_path: Optional[str] = None
    openai_api_key: Optional[str] = None
    anthropic_api_key: Optional[str] = None
    timeout_s: float = Field(120.0, gt=0, description="Per HTTP request (read); connecting gets at most 10 s of it.")
    max_concurrency: int = Field(16, ge=1, description="Items of one step in flight at once.")
    endpoint_concurrency: int = Field(16, ge=1, description="Calls in flight per endpoint, unless its catalog entry says.")
    retry_max_attempts: int = Field(4, ge=1, description="HTTP attempts per call for 429/5xx/timeouts/dropped connections.")
    retry_base_delay_s: float = Field(0.5, ge=0, description="First backoff; doubles each retry, full jitter.")
    retry_max_delay_s: float = Field(20.0, ge=0)
    transport_process_min_items: Optional[int] = Field(64, ge=1, description=(
        "Batches of at least this many items send their HTTP calls from a child process, so the batch's own "
        "per-item work never delays a reply (resources/providers/transport_process.py); unset: never."))

    _gateway: Optional[ModelGateway] = PrivateAttr(default=None)

    def catalog(self) -> ModelCatalog:
        return ModelCatalog.load(self.catalog_path)

    def gateway(self) -> ModelGateway:
        if self._gateway is None:
            keys = {"OPENAI_API_KEY": self.openai_api_key or "", "ANTHROPIC_API_KEY": self.anthropic_api_key or ""}
            retry = RetryPolicy(max_attempts=self.retry_max_attempts, base_delay_s=self.retry_base_delay_s,
                                max_delay_s=self.retry_max_delay_s)
            self._gateway = ModelGateway(self.catalog(), keys, timeout_s=self.timeout_s, retry=retry,
                                         max_concurrency=self.max_concurrency, endpoint_concurrency=self.endpoint_concurrency,
                                         transport_process_min_items=self.transport_process_min_items)
        return self._gateway

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._gateway is not None:
            self._gateway.close()
            self._gateway = None
