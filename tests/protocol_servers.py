"""Real HTTP servers on 127.0.0.1 that speak the providers' wire protocols, for adapter tests.

Each server validates requests the way the provider does (path, method, auth headers,
required body fields) and answers with the provider's real reply and error shapes, so the
adapters are tested over real sockets, real timeouts and real dropped connections, with no
mocked HTTP library.

Replies come from a scripted queue of behaviours, then from a default:

    with OpenAIChatServer(api_key="sk-test") as server:
        server.script(RateLimited(retry_after=7), Slow(2.0), Success({"total": 12.0}))
        ...  # point a client at server.url
        server.requests[0].body["model"]

A behaviour is any object with ``serve(exchange)``; the ``Exchange`` it receives can send
the protocol's success body, its error body, raw bytes, or drop the connection. Add a new
fault by writing one small class.

Faults on a schedule: ``PerDocument`` gives each document its own plan (the n-th request
carrying it gets the n-th behaviour, the last repeating), so a retry of the same item can
succeed whatever order items arrive in; ``Cycle`` picks by request index:

    server = OpenAIChatServer(default=PerDocument({text_a: [RateLimited(retry_after=0.05), Success(a)],
                                                   text_b: [ServerError()]}))
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence, Union

# --------------------------------------------------------------------------------------
# What was asked
# --------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # the parsed JSON body, or None when absent or not JSON
    raw: bytes = b""

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())


class Exchange:
    """One request being answered; behaviours reply through it (at most once)."""

    def __init__(self, server: "ProtocolServer", handler: BaseHTTPRequestHandler, request: RecordedRequest):
        self.server = server
        self.handler = handler
        self.request = request
        self.answered = False

    def send_bytes(self, status: int, data: bytes, content_type: str = "application/json", headers: Optional[Mapping[str, str]] = None) -> None:
        self.answered = True
        handler = self.handler
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            handler.close_connection = True  # the client gave up (e.g. timed out); nothing to do

    def send_json(self, status: int, body: Any, headers: Optional[Mapping[str, str]] = None) -> None:
        self.send_bytes(status, json.dumps(body).encode(), "application/json", {**self.server.extra_headers(), **(headers or {})})

    def send_error(self, status: int, message: Optional[str] = None, *, error_type: Optional[str] = None,
                   code: Optional[str] = None, headers: Optional[Mapping[str, str]] = None) -> None:
        """The provider's error body for ``status``, with its usual message and type unless given."""
        default_message, default_type, default_code = self.server.default_error(status, self.request)
        body = self.server.error_body(status, message or default_message, error_type or default_type, code or default_code)
        self.send_json(status, body, headers)

    def send_success(self, output: Union[dict, str], *, input_tokens: int, output_tokens: int, finish_reason: Optional[str] = None) -> None:
        body = self.server.success_body(self.request, output, input_tokens=input_tokens, output_tokens=output_tokens, finish_reason=finish_reason)
        self.send_json(200, body)

    def drop(self) -> None:
        """Close the socket without a byte of reply."""
        self.answered = True
        self.handler.close_connection = True
        try:
            self.handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# --------------------------------------------------------------------------------------
# Behaviours: how the next request is answered
# --------------------------------------------------------------------------------------


class Behaviour:
    def serve(self, exchange: Exchange) -> None:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class Success(Behaviour):
    """A well-formed reply: ``output`` is the JSON object produced (OpenAI: the message content,
    Anthropic: the tool's input) or, as a string, the raw text the model wrote."""

    output: Union[dict, str] = field(default_factory=dict)
    input_tokens: int = 120
    output_tokens: int = 40
    finish_reason: Optional[str] = None  # protocol default: 'stop' / 'tool_use' (or 'end_turn' for text)

    def serve(self, exchange: Exchange) -> None:
        exchange.send_success(self.output, input_tokens=self.input_tokens, output_tokens=self.output_tokens, finish_reason=self.finish_reason)


@dataclass
class Gzipped(Success):
    """A well-formed reply sent gzip-compressed (``Content-Encoding: gzip``), as many providers and proxies send it."""

    def serve(self, exchange: Exchange) -> None:
        import gzip

        body = exchange.server.success_body(exchange.request, self.output, input_tokens=self.input_tokens,
                                            output_tokens=self.output_tokens, finish_reason=self.finish_reason)
        exchange.send_bytes(200, gzip.compress(json.dumps(body).encode()), "application/json",
                            {**exchange.server.extra_headers(), "Content-Encoding": "gzip"})


@dataclass
class InvalidJSON(Success):
    """The model wrote text that is not JSON (here: cut off mid-object). Anthropic: a text block, no tool call."""

    output: Union[dict, str] = '{"vendor": "ACME Ltd", "total": '


@dataclass
class HTTPError(Behaviour):
    """An error status with the provider's error body (message and type default per status)."""

    status: int = 500
    message: Optional[str] = None
    error_type: Optional[str] = None
    code: Optional[str] = None
    retry_after: Optional[float] = None
    headers: dict[str, str] = field(default_factory=dict)

    def serve(self, exchange: Exchange) -> None:
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = f"{self.retry_after:g}"
        exchange.send_error(self.status, self.message, error_type=self.error_type, code=self.code, headers=headers)


@dataclass
class RateLimited(HTTPError):
    status: int = 429
    retry_after: Optional[float] = 7


@dataclass
class ServerError(HTTPError):
    status: int = 500


@dataclass
class Unavailable(HTTPError):
    status: int = 503


@dataclass
class Overloaded(HTTPError):
    """Anthropic's 529; OpenAI-compatible servers answer 503."""

    status: int = 529


@dataclass
class Unauthorized(HTTPError):
    status: int = 401


@dataclass
class NotJSON(Behaviour):
    """A body that is not JSON, e.g. a proxy's HTML error page."""

    status: int = 200
    body: str = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    content_type: str = "text/html"

    def serve(self, exchange: Exchange) -> None:
        exchange.send_bytes(self.status, self.body.encode(), self.content_type)


@dataclass
class RawJSON(Behaviour):
    """Any JSON body, e.g. a completion without ``choices``."""

    body: Any = field(default_factory=dict)
    status: int = 200

    def serve(self, exchange: Exchange) -> None:
        exchange.send_json(self.status, self.body)


@dataclass
class Slow(Behaviour):
    """Wait ``seconds``, then answer as ``then`` does (a client with a shorter timeout gives up first).

    The wait ends early when the server stops, so a test never leaves a sleeping thread behind."""

    seconds: float = 2.0
    then: Behaviour = field(default_factory=Success)

    def serve(self, exchange: Exchange) -> None:
        if exchange.server.stopping.wait(self.seconds):
            exchange.drop()
            return
        self.then.serve(exchange)


@dataclass
class Trickle(Behaviour):
    """Answer 200 with a long Content-Length, then send a byte every ``every_s`` for ``seconds``: no single read
    ever waits long, so only a limit on the whole request ends the call."""

    seconds: float = 3.0
    every_s: float = 0.1

    def serve(self, exchange: Exchange) -> None:
        handler = exchange.handler
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", "100000")
            handler.end_headers()
            deadline = time.monotonic() + self.seconds
            while time.monotonic() < deadline and not exchange.server.stopping.wait(self.every_s):
                handler.wfile.write(b" ")
                handler.wfile.flush()
        except OSError:  # the client gave up and closed the connection
            pass
        handler.close_connection = True


@dataclass
class DropConnection(Behaviour):
    """Read the request, then close the connection without replying."""

    def serve(self, exchange: Exchange) -> None:
        exchange.drop()


@dataclass
class Truncated(Success):
    """The reply was cut at max tokens: JSON text ending mid-object, with the protocol's 'length' stop
    (OpenAI ``finish_reason: length``; Anthropic ``stop_reason: max_tokens`` before any tool call)."""

    output: Union[dict, str] = '{"vendor": "ACME Ltd", "invoice_number": "INV-1", "total": 12.'

    def serve(self, exchange: Exchange) -> None:
        stop = "max_tokens" if isinstance(exchange.server, AnthropicMessagesServer) else "length"
        exchange.send_success(self.output, input_tokens=self.input_tokens, output_tokens=self.output_tokens, finish_reason=stop)


@dataclass
class SchemaInvalid(Success):
    """Well-formed JSON (OpenAI: the message content; Anthropic: the tool input) that breaks the schema:
    a line item without its required description."""

    output: Union[dict, str] = field(default_factory=lambda: {
        "vendor": "ACME Ltd", "invoice_number": "INV-1", "date": "2026-03-14", "currency": "EUR",
        "total": 12.0, "tax": 2.0, "line_items": [{"quantity": 2, "unit_price": 5.0, "amount": 10.0}]})


_NO_USAGE = object()


@dataclass
class WrongUsage(Success):
    """A good answer whose ``usage`` object is wrong: ``usage`` is sent in its place as it is (negative,
    non-integer or absurd counts, a total that does not add up), or left out when ``usage`` is ``MISSING``."""

    usage: Any = _NO_USAGE

    MISSING: ClassVar[object] = _NO_USAGE

    def serve(self, exchange: Exchange) -> None:
        body = exchange.server.success_body(exchange.request, self.output, input_tokens=self.input_tokens,
                                            output_tokens=self.output_tokens, finish_reason=self.finish_reason)
        if self.usage is _NO_USAGE:
            body.pop("usage", None)
        else:
            body["usage"] = self.usage
        exchange.send_json(200, body)


# --------------------------------------------------------------------------------------
# Schedules: which behaviour answers which request
# --------------------------------------------------------------------------------------


def document_text(request: RecordedRequest) -> str:
    """The document a completion request carries: its last user turn (a string or text blocks)."""
    body = request.body if isinstance(request.body, dict) else {}
    users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return content if isinstance(content, str) else ""


def stable_bucket(text: str, buckets: int) -> int:
    """A bucket in ``range(buckets)`` from the SHA-256 of ``text``: the same on every run and machine."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % buckets


class PerDocument(Behaviour):
    """A fault plan per document: the n-th request carrying a document is answered by the n-th behaviour of
    its plan, the plan's last behaviour answering every request after that. So ``[RateLimited(), Success()]``
    is a transient fault the retry gets past and ``[ServerError()]`` a permanent one, whatever order (or
    concurrency) the items arrive in. Documents without a plan get ``default``.

    ``key`` reads the plan's key from the request (default: the document text itself).
    """

    def __init__(self, plans: Mapping[str, Sequence[Behaviour]], default: Optional[Behaviour] = None,
                 key: Callable[[RecordedRequest], str] = document_text):
        if any(not plan for plan in plans.values()):
            raise ValueError("every plan needs at least one behaviour")
        self.plans = {k: list(v) for k, v in plans.items()}
        self.default = default or Success()
        self.key = key
        self.seen: collections.Counter[str] = collections.Counter()  # requests per key
        self._lock = threading.Lock()

    def serve(self, exchange: Exchange) -> None:
        key = self.key(exchange.request)
        with self._lock:
            index = self.seen[key]
            self.seen[key] += 1
        plan = self.plans.get(key)
        behaviour = self.default if plan is None else plan[min(index, len(plan) - 1)]
        behaviour.serve(exchange)


class Cycle(Behaviour):
    """Behaviours in turn by request index (0, 1, 2, … modulo their number): a fault every n-th request."""

    def __init__(self, *behaviours: Behaviour):
        if not behaviours:
            raise ValueError("Cycle needs at least one behaviour")
        self.behaviours = behaviours
        self._count = itertools.count()

    def serve(self, exchange: Exchange) -> None:
        self.behaviours[next(self._count) % len(self.behaviours)].serve(exchange)


# --------------------------------------------------------------------------------------
# The servers
# --------------------------------------------------------------------------------------


class Rejection(Exception):
    """A request the provider would refuse before any model runs."""

    def __init__(self, status: int, message: str, error_type: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.error_type, self.code = status, message, error_type, code


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the providers
    server: "_HTTPServer"

    def _handle(self) -> None:
        self.server.owner._handle(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: "ProtocolServer"):
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:  # a client hanging up is not a test failure
        return None


class ProtocolServer:
    """Shared machinery: threads, the behaviour queue, request recording and validation hooks."""

    base_path = ""  # what ``url`` ends with

    def __init__(self, *, default: Optional[Behaviour] = None, api_key: Optional[str] = None):
        self.default = default or Success()
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self._queue: collections.deque[Behaviour] = collections.deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._httpd: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.stopping = threading.Event()  # set by stop(): ends a Slow reply's wait

    # lifecycle --------------------------------------------------------------------
    def start(self) -> "ProtocolServer":
        if self._httpd is None:
            self.stopping.clear()
            self._httpd = _HTTPServer(self)
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_path}"

    # scripting ----------------------------------------------------------------------
    def script(self, *behaviours: Behaviour) -> "ProtocolServer":
        """Answer the next requests with these, in order; then with ``default``."""
        with self._lock:
            self._queue.extend(behaviours)
        return self

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def _next_behaviour(self) -> Behaviour:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    # serving ------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        request = RecordedRequest(
            method=handler.command, path=handler.path.split("?", 1)[0],
            headers={k.lower(): v for k, v in handler.headers.items()}, body=body, raw=raw,
        )
        with self._lock:
            self.requests.append(request)
        exchange = Exchange(self, handler, request)
        try:
            if self.route(exchange):
                return
            self.validate(request)
        except Rejection as rejection:
            exchange.send_error(rejection.status, rejection.message, error_type=rejection.error_type, code=rejection.code)
            return
        self._next_behaviour().serve(exchange)
        if not exchange.answered:
            exchange.send_error(500, "test behaviour sent no reply")

    # protocol hooks -------------------------------------------------------------------
    def route(self, exchange: Exchange) -> bool:
        """Answer requests other than the completion endpoint (e.g. a model list); True when answered."""
        return False

    def validate(self, request: RecordedRequest) -> None:
        """Raise ``Rejection`` as the provider would for this request."""
        raise NotImplementedError

    def success_body(self, request: RecordedRequest, output: Union[dict, str], *, input_tokens: int, output_tokens: int,
                     finish_reason: Optional[str]) -> dict:
        raise NotImplementedError

    def error_body(self, status: int, message: str, error_type: Optional[str], code: Optional[str]) -> dict:
        raise NotImplementedError

    def default_error(self, status: int, request: RecordedRequest) -> tuple[str, str, Optional[str]]:
        raise NotImplementedError

    def extra_headers(self) -> dict[str, str]:
        return {}


def _require(condition: bool, message: str, status: int = 400, error_type: Optional[str] = None, code: Optional[str] = None) -> None:
    if not condition:
        raise Rejection(status, message, error_type, code)


class OpenAIChatServer(ProtocolServer):
    """OpenAI's ``POST /v1/chat/completions`` (and ``GET /v1/models``).

    ``api_key=None`` accepts requests without ``Authorization`` (a local llama.cpp or vLLM
    server); with a key, a missing or different bearer token gets OpenAI's 401.
    ``rejects_json_schema=True`` answers ``response_format.type == "json_schema"`` with
    HTTP 500, as llama.cpp's server does.
    """

    base_path = "/v1"
    _NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

    def __init__(self, *, default: Optional[Behaviour] = None, api_key: Optional[str] = None, rejects_json_schema: bool = False):
        super().__init__(default=default, api_key=api_key)
        self.rejects_json_schema = rejects_json_schema

    def route(self, exchange: Exchange) -> bool:
        request = exchange.request
        if request.method == "GET" and request.path == "/v1/models":
            self._check_auth(request)
            models = sorted({r.body["model"] for r in self.requests if isinstance(r.body, dict) and isinstance(r.body.get("model"), str)})
            exchange.send_json(200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "test"} for m in models]})
            return True
        return False

    def _check_auth(self, request: RecordedRequest) -> None:
        if self.api_key is None:
            return
        authorization = request.header("authorization") or ""
        _require(bool(authorization), "You didn't provide an API key. You need to provide your API key in an Authorization header "
                 "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", 401, "invalid_request_error")
        token = authorization[len("Bearer "):] if authorization.startswith("Bearer ") else ""
        _require(token == self.api_key, f"Incorrect API key provided: {token[:3]}***{token[-4:]}. You can find your API key at "
                 "https://platform.openai.com/account/api-keys.", 401, "invalid_request_error", "invalid_api_key")

    def validate(self, request: RecordedRequest) -> None:
        _require(request.path == "/v1/chat/completions" and request.method == "POST",
                 f"Invalid URL ({request.method} {request.path})", 404, "invalid_request_error")
        self._check_auth(request)
        body = request.body
        _require(isinstance(body, dict), "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                 "using your HTTP library correctly. The OpenAI API expects a JSON payload.)", 400, "invalid_request_error")
        _require(isinstance(body.get("model"), str) and body["model"] != "", "you must provide a model parameter", 400, "invalid_request_error")
        messages = body.get("messages")
        _require(isinstance(messages, list) and len(messages) > 0, "Missing required parameter: 'messages'.", 400,
                 "invalid_request_error", "missing_required_parameter")
        for index, message in enumerate(messages):
            _require(isinstance(message, dict) and message.get("role") in {"system", "developer", "user", "assistant", "tool"},
                     f"Invalid value for 'messages[{index}].role'.", 400, "invalid_request_error", "invalid_value")
            _require("content" in message, f"Missing required parameter: 'messages[{index}].content'.", 400,
                     "invalid_request_error", "missing_required_parameter")
        fmt = body.get("response_format")
        if fmt is not None:
            _require(isinstance(fmt, dict) and fmt.get("type") in {"text", "json_object", "json_schema"},
                     "Invalid value for 'response_format.type'.", 400, "invalid_request_error", "invalid_value")
            if fmt["type"] == "json_schema":
                _require(not self.rejects_json_schema, "response_format json_schema is not supported", 500, "server_error")
                spec = fmt.get("json_schema")
                _require(isinstance(spec, dict), "Missing required parameter: 'response_format.json_schema'.", 400,
                         "invalid_request_error", "missing_required_parameter")
                _require(isinstance(spec.get("name"), str) and bool(self._NAME.match(spec["name"])),
                         "Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string that "
                         "matches the pattern '^[a-zA-Z0-9_-]+$'.", 400, "invalid_request_error", "invalid_value")
                _require(isinstance(spec.get("schema"), dict), "Invalid type for 'response_format.json_schema.schema'.", 400,
                         "invalid_request_error", "invalid_type")
        max_tokens = body.get("max_tokens")
        _require(max_tokens is None or (isinstance(max_tokens, int) and max_tokens > 0),
                 "Invalid 'max_tokens': integer below minimum value.", 400, "invalid_request_error", "integer_below_min_value")

    def success_body(self, request, output, *, input_tokens, output_tokens, finish_reason):
        content = output if isinstance(output, str) else json.dumps(output)
        return {
            "id": self.next_id("chatcmpl-test"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.body.get("model"),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason or "stop",
            }],
            "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens, "total_tokens": input_tokens + output_tokens},
        }

    def error_body(self, status, message, error_type, code):
        return {"error": {"message": message, "type": error_type, "param": None, "code": code}}

    def default_error(self, status, request):
        model = request.body.get("model") if isinstance(request.body, dict) else "the model"
        return {
            400: ("Invalid request.", "invalid_request_error", None),
            401: ("Incorrect API key provided: sk-***test. You can find your API key at https://platform.openai.com/account/api-keys.",
                  "invalid_request_error", "invalid_api_key"),
            404: (f"The model `{model}` does not exist or you do not have access to it.", "invalid_request_error", "model_not_found"),
            429: (f"Rate limit reached for {model} in organization org-test on requests per min (RPM): Limit 3, Used 3, "
                  "Requested 1. Please try again in 20s.", "requests", "rate_limit_exceeded"),
            500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
            503: ("The engine is currently overloaded, please try again later.", "server_error", None),
        }.get(status, (f"HTTP {status}", "server_error" if status >= 500 else "invalid_request_error", None))

    def extra_headers(self):
        return {"x-request-id": self.next_id("req_")}


class AnthropicMessagesServer(ProtocolServer):
    """Anthropic's ``POST /v1/messages``: needs ``x-api-key`` (equal to ``api_key``) and ``anthropic-version``."""

    base_path = ""
    _TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")

    def __init__(self, *, default: Optional[Behaviour] = None, api_key: str = "sk-ant-test"):
        super().__init__(default=default, api_key=api_key)

    def validate(self, request: RecordedRequest) -> None:
        _require(request.path == "/v1/messages", f"Not found: {request.path}", 404, "not_found_error")
        _require(request.method == "POST", f"Method {request.method} not allowed", 405, "invalid_request_error")
        key = request.header("x-api-key")
        _require(bool(key), "x-api-key header is required", 401, "authentication_error")
        _require(key == self.api_key, "invalid x-api-key", 401, "authentication_error")
        _require(bool(request.header("anthropic-version")), "anthropic-version: header is required", 400, "invalid_request_error")
        body = request.body
        _require(isinstance(body, dict), "There was an issue with your request body: not valid JSON", 400, "invalid_request_error")
        for name in ("model", "max_tokens", "messages"):
            _require(name in body, f"{name}: Field required", 400, "invalid_request_error")
        _require(isinstance(body["max_tokens"], int) and body["max_tokens"] >= 1, "max_tokens: Input should be greater than or equal to 1",
                 400, "invalid_request_error")
        messages = body["messages"]
        _require(isinstance(messages, list) and len(messages) > 0, "messages: at least one message is required", 400, "invalid_request_error")
        for index, message in enumerate(messages):
            _require(isinstance(message, dict) and message.get("role") in {"user", "assistant"},
                     f"messages.{index}.role: Input should be 'user' or 'assistant'", 400, "invalid_request_error")
        _require(messages[0].get("role") == "user", "messages: first message must use the \"user\" role", 400, "invalid_request_error")
        tools = body.get("tools") or []
        _require(isinstance(tools, list), "tools: Input should be a valid list", 400, "invalid_request_error")
        names = set()
        for index, tool in enumerate(tools):
            _require(isinstance(tool, dict) and isinstance(tool.get("name"), str) and bool(self._TOOL_NAME.match(tool["name"])),
                     f"tools.{index}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'", 400, "invalid_request_error")
            schema = tool.get("input_schema")
            _require(isinstance(schema, dict) and schema.get("type") == "object",
                     f"tools.{index}.custom.input_schema.type: Input should be 'object'", 400, "invalid_request_error")
            names.add(tool["name"])
        choice = body.get("tool_choice")
        if choice is not None:
            _require(isinstance(choice, dict) and choice.get("type") in {"auto", "any", "tool", "none"},
                     "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'", 400, "invalid_request_error")
            if choice["type"] == "tool":
                _require(choice.get("name") in names, f"Tool '{choice.get('name')}' not found in provided tools", 400, "invalid_request_error")

    def success_body(self, request, output, *, input_tokens, output_tokens, finish_reason):
        body = request.body
        if isinstance(output, str):
            content = [{"type": "text", "text": output}]
            default_stop = "end_turn"
        else:
            choice = body.get("tool_choice") or {}
            tools = body.get("tools") or [{}]
            name = choice.get("name") or tools[0].get("name") or "record"
            content = [{"type": "tool_use", "id": self.next_id("toolu_test"), "name": name, "input": output}]
            default_stop = "tool_use"
        return {
            "id": self.next_id("msg_test"),
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": content,
            "stop_reason": finish_reason or default_stop,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }

    def error_body(self, status, message, error_type, code):
        return {"type": "error", "error": {"type": error_type, "message": message}}

    def default_error(self, status, request):
        return {
            400: ("Invalid request.", "invalid_request_error", None),
            401: ("invalid x-api-key", "authentication_error", None),
            403: ("Your API key does not have permission to use the specified resource.", "permission_error", None),
            404: ("The requested resource could not be found.", "not_found_error", None),
            413: ("Request exceeds the maximum allowed number of bytes.", "request_too_large", None),
            429: ("Number of request tokens has exceeded your per-minute rate limit", "rate_limit_error", None),
            500: ("Internal server error", "api_error", None),
            503: ("Service unavailable", "api_error", None),
            529: ("Overloaded", "overloaded_error", None),
        }.get(status, (f"HTTP {status}", "api_error" if status >= 500 else "invalid_request_error", None))

    def extra_headers(self):
        return {"request-id": self.next_id("req_test")}


