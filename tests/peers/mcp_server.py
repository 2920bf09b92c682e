#!/usr/bin/env python3
"""MCP test server (official Python SDK, PyPI `mcp` 2.x) over Streamable HTTP at /mcp.

    python3 mcp_server.py --host H --port P [--certfile C --keyfile K [--client-ca CA]] [--stateless]
                          [--json-response] [--legacy-only] [--expect-token T]
                          [--allowed-host H ...] [--no-host-check]

Serves both protocol eras on the same endpoint: a request whose MCP-Protocol-Version
header names 2026-07-28 is served statelessly (server/discover, no session); anything
else goes through the handshake-era transport (initialize + Mcp-Session-Id, or no
session with --stateless). Prints {"listening": "H:P"} once ready (port 0 = pick one).
"""

import argparse
import asyncio
import hashlib
import json
import ssl
import sys
from typing import Annotated

import anyio
import uvicorn
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import Field

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventMessage, EventStore
from mcp.server.transport_security import TransportSecuritySettings

FAKE_SECRET = "AKIAABCDEFGHIJKLMNOP"

mcp = MCPServer("mcp-enforcer-test-peer", version="1", log_level="WARNING")


def _headers(ctx: Context) -> dict[str, str]:
    """All headers of the HTTP request that carried this tool call (lower-case names)."""
    raw = getattr(ctx.request_context.request, "headers", None)
    if raw is None:
        return {}
    out: dict[str, str] = {}
    for k, v in raw.items():  # starlette Headers.items() keeps duplicates
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


@mcp.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@mcp.tool()
async def slow_count(n: int, delay_ms: int, ctx: Context) -> str:
    """Send n progress notifications, one every delay_ms, then return "done"."""
    for i in range(1, n + 1):
        await anyio.sleep(delay_ms / 1000)
        await ctx.report_progress(i, n, f"step {i}")
    return "done"


@mcp.tool()
def whoami(
    ctx: Context,
    # Mirrored by 2026-07-28 clients into an `Mcp-Param-Tag` request header.
    tag: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Tag"})] = "",
) -> str:
    """Return JSON with the HTTP request headers this call arrived with, and the peer address."""
    client = getattr(ctx.request_context.request, "client", None)
    headers = _headers(ctx)
    # SHA-256 of each header value: proves what arrived (e.g. an injected credential) without
    # echoing a secret the enforcer redacts on the way back.
    digests = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in headers.items()}
    return json.dumps({"headers": headers, "digests": digests, "protocol_version": ctx.protocol_version,
                       "tag": tag, "peer": client.host if client else None})


@mcp.tool()
def leak_secret(ctx: Context) -> str:
    """Return a fixed fake secret and the Authorization header received (masking tests)."""
    return json.dumps({"secret": FAKE_SECRET, "authorization": _headers(ctx).get("authorization")})


@mcp.tool()
def delete_everything(
    # Mirrored by 2026-07-28 clients into an `Mcp-Param-Confirm` request header.
    confirm: Annotated[bool, Field(json_schema_extra={"x-mcp-header": "Confirm"})],
) -> str:
    """A 'risky' tool for policy tests."""
    return "deleted"


class MemoryEventStore(EventStore):
    """Keeps every SSE event so a client can resume a stream with Last-Event-ID (--resumable)."""

    def __init__(self):
        self.events: list[tuple[str, str, object]] = []  # (event id, stream id, message)

    async def store_event(self, stream_id, message):
        event_id = str(len(self.events) + 1)
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id, send_callback):
        at = next((i for i, (e, _, _) in enumerate(self.events) if e == last_event_id), None)
        if at is None:
            return None
        stream = self.events[at][1]
        for event_id, stream_id, message in self.events[at + 1:]:
            if stream_id == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream


class RequireBearer:
    """Pure-ASGI middleware (never buffers, so SSE streams pass through): 401 without the token."""

    def __init__(self, app, token: str):
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != self.expected:
            body = b'{"error":"invalid_token","error_description":"missing or wrong bearer token"}'
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate", b'Bearer realm="mcp-test-peer", error="invalid_token"'),
                (b"content-length", str(len(body)).encode()),
            ]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class LegacyOnly:
    """Answer like a pre-2026 server: 400 for any MCP-Protocol-Version it does not know (so
    `server/discover` probes fail and `mode=auto` clients fall back to `initialize`)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        pv = dict(scope.get("headers", [])).get(b"mcp-protocol-version")
        if scope["type"] == "http" and pv is not None and pv.decode("latin-1") not in HANDSHAKE_PROTOCOL_VERSIONS:
            body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message":
                               f"Bad Request: Unsupported protocol version: {pv.decode('latin-1')}"}}).encode()
            await send({"type": "http.response.start", "status": 400, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--certfile")
    p.add_argument("--client-ca", help="require a TLS client certificate signed by this CA (mTLS)")
    p.add_argument("--keyfile")
    p.add_argument("--stateless", action="store_true",
                   help="handshake era without Mcp-Session-Id (2026-07-28 is stateless anyway)")
    p.add_argument("--json-response", action="store_true",
                   help="answer POSTs with application/json instead of an SSE stream")
    p.add_argument("--resumable", action="store_true",
                   help="keep SSE events in memory so streams resume with Last-Event-ID")
    p.add_argument("--legacy-only", action="store_true",
                   help="refuse 2026-07-28 requests with 400, like a pre-2026 server")
    p.add_argument("--expect-token", help="answer 401 unless 'Authorization: Bearer T'")
    p.add_argument("--allowed-host", action="append", default=[],
                   help="extra Host value accepted by DNS-rebinding protection (others get 421)")
    p.add_argument("--no-host-check", action="store_true", help="turn off Host/Origin checks")
    a = p.parse_args()
    if bool(a.certfile) != bool(a.keyfile):
        p.error("--certfile and --keyfile go together")

    hosts = ["127.0.0.1", "localhost", "[::1]", "mcp.test", a.host, *a.allowed_host]
    hosts = list(dict.fromkeys(hosts))
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=not a.no_host_check,
        allowed_hosts=[x for h in hosts for x in (h, f"{h}:*")],
        allowed_origins=[f"{s}://{x}" for s in ("http", "https") for h in hosts for x in (h, f"{h}:*")],
    )
    app = mcp.streamable_http_app(streamable_http_path="/mcp", stateless_http=a.stateless,
                                  json_response=a.json_response, transport_security=security, host=a.host,
                                  event_store=MemoryEventStore() if a.resumable else None)
    if a.legacy_only:
        app = LegacyOnly(app)
    if a.expect_token:
        app = RequireBearer(app, a.expect_token)

    mtls = {"ssl_ca_certs": a.client_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED} if a.client_ca else {}
    config = uvicorn.Config(app, host=a.host, port=a.port, ssl_certfile=a.certfile, ssl_keyfile=a.keyfile, **mtls,
                            log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task
                sys.exit(1)
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        print(json.dumps({"listening": f"{a.host}:{port}"}), flush=True)
        await task

    asyncio.run(serve())


if __name__ == "__main__":
    main()
