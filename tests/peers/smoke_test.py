#!/usr/bin/env python3
"""Self-check of the peers against each other (no enforcer in between): python3 smoke_test.py

Makes a throwaway CA + server cert (SAN IP:127.0.0.1, DNS:mcp.test) with openssl, starts
mcp_server.py in several modes on 127.0.0.1 (port 0), runs mcp_client.py against it and
checks the JSON lines. Ends with 'N passed, N failed'; exit 1 on any failure.
"""

import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
results = {"passed": 0, "failed": 0}


def check(name: str, ok: bool, detail="") -> None:
    results["passed" if ok else "failed"] += 1
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f"  {detail}"), flush=True)


def make_pki(d: str) -> dict:
    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", "/CN=peers smoke CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=mcp.test")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:mcp.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return {k: os.path.join(d, f) for k, f in (("ca", "ca.pem"), ("cert", "server.pem"), ("key", "server.key"))}


class Server:
    def __init__(self, *args: str):
        self.proc = subprocess.Popen([PY, os.path.join(HERE, "mcp_server.py"), "--host", "127.0.0.1", "--port", "0",
                                      *args], stdout=subprocess.PIPE, text=True)
        self.addr = json.loads(self.proc.stdout.readline())["listening"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)


def client(url: str, *args: str, env=None) -> tuple[int, list[dict]]:
    p = subprocess.run([PY, os.path.join(HERE, "mcp_client.py"), url, *args], capture_output=True, text=True,
                       timeout=60, env={**os.environ, **(env or {})})
    return p.returncode, [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


def first(lines, key, value=None):
    return next((x for x in lines if key in x and (value is None or x[key] == value)), None)


def gaps_ok(lines, delay_ms, n) -> tuple[bool, list]:
    ts = [x["t_ms"] for x in lines if "progress" in x]
    gaps = [round(b - a, 1) for a, b in zip([0.0, *ts], ts)]
    return len(ts) == n and all(delay_ms * 0.6 <= g <= delay_ms * 2.5 for g in gaps), gaps


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        pki = make_pki(d)
        tls = ["--certfile", pki["cert"], "--keyfile", pki["key"]]
        ca = {"SSL_CERT_FILE": pki["ca"]}
        with Server(*tls) as s:
            url = f"https://{s.addr}/mcp"
            for mode, era, pv in (("auto", "stateless", "2026-07-28"), ("legacy", "session", "2025-11-25")):
                rc, out = client(url, "--mode", mode, "--calls", "echo:hello", "whoami:t1", "slow_count:5:200",
                                 "leak_secret", "delete_everything:true", env=ca)
                conn = (first(out, "connected") or {}).get("connected", {})
                check(f"tls {mode}: era {era} at {pv}", rc == 0 and conn.get("era") == era
                      and conn.get("protocol_version") == pv, out[-1:])
                check(f"tls {mode}: session id only in session era",
                      (conn.get("session_id") is not None) == (era == "session"), conn)
                check(f"tls {mode}: tools listed", set((first(out, "tools") or {}).get("tools", [])) >= {
                    "echo", "slow_count", "whoami", "leak_secret", "delete_everything"}, out[:2])
                check(f"tls {mode}: echo", (first(out, "call", "echo") or {}).get("result") == "hello")
                who = json.loads((first(out, "call", "whoami") or {}).get("result", "{}")).get("headers", {})
                want = {"host": s.addr, "mcp-protocol-version": pv}
                if era == "stateless":
                    want.update({"mcp-method": "tools/call", "mcp-name": "whoami", "mcp-param-tag": "t1"})
                else:
                    want["mcp-session-id"] = conn.get("session_id")
                check(f"tls {mode}: whoami headers", all(who.get(k) == v for k, v in want.items()), who)
                ok, gaps = gaps_ok(out, 200, 5)
                print(f"     progress gaps (ms): {gaps}")
                check(f"tls {mode}: progress streamed ~200ms apart", ok, gaps)
                check(f"tls {mode}: leak_secret", "AKIAABCDEFGHIJKLMNOP" in (first(out, "call", "leak_secret") or {})
                      .get("result", ""))
                check(f"tls {mode}: delete_everything", (first(out, "call", "delete_everything") or {})
                      .get("result") == "deleted")
            rc, out = client(url)
            check("tls: untrusted without SSL_CERT_FILE", rc == 1 and "CERTIFICATE_VERIFY_FAILED" in out[-1]["error"])
            rc, out = client(url, "--tls", "sdk", env=ca)
            check("tls: SDK default client honours SSL_CERT_FILE", rc == 0, out[-1:])
            rc, out = client(url, env={"REQUESTS_CA_BUNDLE": pki["ca"]})
            check("tls: REQUESTS_CA_BUNDLE (env mode)", rc == 0, out[-1:])
            rc, out = client(url, "--header", "Host=evil.example", env=ca)
            check("host check: foreign Host refused (421, seen as -32603)", rc == 1, out[-1:])
        with Server(*tls, "--expect-token", "s3cret") as s:
            url = f"https://{s.addr}/mcp"
            rc, out = client(url, env=ca)
            check("token: refused without it", rc == 1 and "error" in out[-1], out[-1:])
            for mode in ("auto", "legacy"):
                rc, out = client(url, "--mode", mode, "--token", "s3cret", "--calls", "leak_secret", env=ca)
                res = json.loads((first(out, "call", "leak_secret") or {}).get("result", "{}"))
                check(f"token {mode}: accepted, Authorization seen", rc == 0
                      and res.get("authorization") == "Bearer s3cret", out[-1:])
        with Server("--legacy-only") as s:
            rc, out = client(f"http://{s.addr}/mcp", "--calls", "echo:x")
            conn = (first(out, "connected") or {}).get("connected", {})
            check("legacy-only: auto client falls back to initialize", rc == 0 and conn.get("era") == "session", out)
        with Server("--stateless") as s:
            rc, out = client(f"http://{s.addr}/mcp", "--mode", "legacy", "--calls", "slow_count:3:100")
            conn = (first(out, "connected") or {}).get("connected", {})
            check("plain http, --stateless legacy: no session id", rc == 0 and conn.get("session_id") is None, out)
            check("plain http, --stateless legacy: progress streamed", gaps_ok(out, 100, 3)[0], out)
            rc, out = client(f"http://{s.addr}/mcp", "--calls", "echo:plain")
            check("plain http, auto: stateless era", rc == 0 and (first(out, "connected") or {})
                  .get("connected", {}).get("era") == "stateless", out)
    print(f"{results['passed']} passed, {results['failed']} failed")
    sys.exit(1 if results["failed"] else 0)


if __name__ == "__main__":
    main()
