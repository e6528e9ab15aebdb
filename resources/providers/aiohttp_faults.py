"""aiohttp's transport exceptions named in httpx's words (``ReadTimeout``, ``ConnectError``...).

The in-process session and the batch's transport process (``transport_process``) both raise
aiohttp's exceptions; naming them the way the blocking path's httpx does means one error
wording and one retry classification (``reliability.error_type``) whichever path made a
call. Only aiohttp is imported here: the transport process starts on it alone.
"""

from __future__ import annotations

import asyncio
from typing import Optional

import aiohttp

_DISCONNECTED = "Server disconnected without sending a response."


def aiohttp_fault(exc: BaseException) -> tuple[Optional[str], str, bool]:
    """``(kind, detail, timed_out)`` of an aiohttp transport failure, or ``(None, "", False)`` for anything else."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "ConnectTimeout", str(exc), True
    if isinstance(exc, (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return "ReadTimeout", str(exc), True
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "RemoteProtocolError", _DISCONNECTED, False
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "ConnectError", str(exc.os_error), False
    if isinstance(exc, aiohttp.ClientResponseError):  # a malformed status line or headers
        return "RemoteProtocolError", exc.message or str(exc), False
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "ReadError", str(exc), False
    if isinstance(exc, aiohttp.ClientOSError):
        return "ReadError", str(exc), False
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return None, "", False
    if isinstance(exc, aiohttp.ClientError):
        return type(exc).__name__, str(exc), False
    return None, "", False
