#!/usr/bin/env python3
"""MCP test client (official Python SDK, PyPI `mcp` 2.x) over Streamable HTTP.

    python3 mcp_client.py URL [--token T] [--header K=V ...] [--calls SPEC ...]
                          [--mode auto|legacy|2026-07-28] [--tls env|sdk] [--trace]

Prints one JSON line per event on stdout:
    {"connected": {"protocol_version": ..., "era": "session"|"stateless", "session_id": ..., "server": ...}}
    {"tools": [names]}
    {"progress": p, "total": t, "t_ms": ms-since-call-start}     (as each one arrives)
    {"call": name, "result": text, "is_error": bool, "t_ms": ...}
    {"call": name, "error": message, "code": n, "data": ..., "t_ms": ...}   (a JSON-RPC error for that call)
    {"ack": text}                                                 (each --echo-loop call)
    {"http": ...} / {"http_response": ...}                        (only with --trace)
and on failure {"error": "...", "type": "..."[, "code": n, "data": ...]} with exit code 1.

SPEC is NAME[:ARG...] (e.g. echo:hello, slow_count:5:200, whoami, delete_everything:true);
positional ARGs map onto the tool's inputSchema properties in order and are coerced to
their JSON types. NAME:{json} passes the arguments object as is.
"""

import argparse
import json
import os
import ssl
import sys
import time

import anyio
import httpx2

from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client


def emit(obj) -> None:
    print(json.dumps(obj), flush=True)


def ssl_context(kind: str) -> ssl.SSLContext:
    """`env`: system trust plus every CA file/dir named by SSL_CERT_FILE, SSL_CERT_DIR, REQUESTS_CA_BUNDLE.

    `sdk`: what the SDK's own default client does (httpcore2.default_ssl_context): SSL_CERT_FILE
    (else SSL_CERT_DIR) *replaces* the system trust; REQUESTS_CA_BUNDLE is ignored.
    """
    if kind == "sdk":
        import httpcore2
        return httpcore2.default_ssl_context()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    paths = ssl.get_default_verify_paths()  # compiled-in system locations
    for f in (paths.openssl_cafile, os.environ.get("SSL_CERT_FILE"), os.environ.get("REQUESTS_CA_BUNDLE")):
        if f and os.path.isfile(f):
            ctx.load_verify_locations(cafile=f)
    for d in (paths.openssl_capath, os.environ.get("SSL_CERT_DIR")):
        if d and os.path.isdir(d):
            ctx.load_verify_locations(capath=d)
    return ctx


def http_hooks(trace: bool, seen: dict):
    """httpx2 event hooks: remember the Mcp-Session-Id; with --trace print every request/response."""

    async def on_request(req: httpx2.Request):
        if not trace:
            return
        try:
            body = json.loads(req.content) if req.content else None
        except ValueError:
            body = None
        emit({"http": req.method, "path": req.url.raw_path.decode(), "body": body,
              "headers": {k: v for k, v in req.headers.items()
                          if k.startswith("mcp-") or k in ("accept", "authorization", "last-event-id", "origin")}})

    async def on_response(resp: httpx2.Response):
        if "mcp-session-id" in resp.headers:
            seen["session_id"] = resp.headers["mcp-session-id"]
        if trace:
            emit({"http_response": resp.status_code, "request": resp.request.method,
                  "content_type": resp.headers.get("content-type"),
                  "headers": {k: v for k, v in resp.headers.items()
                              if k.startswith("mcp-") or k == "www-authenticate"}})

    return {"request": [on_request], "response": [on_response]}


def parse_spec(spec: str, tools: dict) -> tuple[str, dict]:
    name, _, rest = spec.partition(":")
    if rest.startswith("{"):
        return name, json.loads(rest)
    schema = tools[name].input_schema if name in tools else {}
    props = list((schema.get("properties") or {}).items())
    values = rest.split(":", max(len(props) - 1, 0)) if rest else []  # the last argument keeps its colons
    if len(values) > len(props):
        raise ValueError(f"{spec!r}: {name} takes at most {len(props)} arguments")
    args = {}
    for value, (key, prop) in zip(values, props):
        kind = prop.get("type")
        if kind == "integer":
            args[key] = int(value)
        elif kind == "number":
            args[key] = float(value)
        elif kind == "boolean":
            args[key] = value.lower() in ("1", "true", "yes")
        else:
            args[key] = value
    return name, args


def result_text(result) -> str:
    return "\n".join(getattr(c, "text", json.dumps(c.model_dump(mode="json"))) for c in result.content)


async def run(a) -> None:
    headers = dict(h.split("=", 1) for h in a.header)
    if a.token:
        headers["Authorization"] = f"Bearer {a.token}"
    seen: dict = {}
    http = httpx2.AsyncClient(headers=headers, verify=ssl_context(a.tls),
                              timeout=httpx2.Timeout(30, read=300), event_hooks=http_hooks(a.trace, seen))
    async with http, Client(streamable_http_client(a.url, http_client=http), mode=a.mode) as client:
        s = client.session
        info = client.server_info
        emit({"connected": {"protocol_version": client.protocol_version,
                            # stateless = 2026-07-28 (server/discover); session = initialize handshake
                            "era": "stateless" if s.discover_result is not None else "session",
                            "session_id": seen.get("session_id"),
                            "server": info.name if info else None}})
        listing = await client.list_tools()
        tools = {t.name: t for t in listing.tools}
        emit({"tools": list(tools)})
        for spec in a.calls:
            name, args = parse_spec(spec, tools)
            start = time.monotonic()

            def ms() -> float:
                return round((time.monotonic() - start) * 1000, 1)

            async def on_progress(progress, total, message):
                emit({"progress": progress, "total": total, "t_ms": ms()})

            try:
                result = await client.call_tool(name, args, progress_callback=on_progress)
            except MCPError as e:  # a JSON-RPC error for this call (e.g. a policy denial): report, go on
                emit({"call": name, "error": e.error.message, "code": e.error.code, "data": e.error.data,
                      "t_ms": ms()})
                continue
            emit({"call": name, "result": result_text(result), "is_error": bool(result.is_error), "t_ms": ms()})
        for i in range(a.echo_loop):
            # Load for durability tests: each acknowledged echo is printed as soon as it returns.
            text = f"{a.echo_prefix}-{i}"
            result = await client.call_tool("echo", {"text": text})
            emit({"ack": result_text(result)})


def root_cause(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url")
    p.add_argument("--token", help="send 'Authorization: Bearer T'")
    p.add_argument("--header", action="append", default=[], metavar="K=V")
    p.add_argument("--calls", nargs="+", action="extend", default=[], metavar="SPEC")
    p.add_argument("--mode", default="auto",
                   help="auto (probe server/discover, fall back to initialize), legacy, or 2026-07-28")
    p.add_argument("--tls", choices=("env", "sdk"), default="env",
                   help="env: system trust + SSL_CERT_FILE/SSL_CERT_DIR/REQUESTS_CA_BUNDLE; sdk: SDK default")
    p.add_argument("--trace", action="store_true", help="also print every HTTP request/response")
    p.add_argument("--echo-loop", type=int, default=0, metavar="N",
                   help="after the calls, call echo N times with PREFIX-i, printing {\"ack\": text} for each")
    p.add_argument("--echo-prefix", default="load")
    a = p.parse_args()
    try:
        anyio.run(run, a)
    except Exception as e:  # ExceptionGroup included
        cause = root_cause(e)
        out = {"error": str(cause) or repr(cause), "type": type(cause).__name__}
        if isinstance(cause, MCPError):  # JSON-RPC error (from the body, or made up from a bodiless HTTP status)
            out.update(code=cause.error.code, data=cause.error.data)
        emit(out)
        sys.exit(1)


if __name__ == "__main__":
    main()
