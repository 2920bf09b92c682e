"""A SIEM webhook receiver for the export tests: appends every POSTed batch (a JSON array of
events) to a JSON-lines file, one event per line, with the Authorization header it came with.

    webhook_receiver.py ADDR PORT OUT_FILE

Prints {"ready": port} once listening. Standard library only.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        batch = json.loads(self.rfile.read(length))
        auth = self.headers.get("Authorization", "")
        with open(self.server.out, "a") as f:
            for event in batch:
                f.write(json.dumps({"auth": auth, "event": event}) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main() -> None:
    addr, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    server = HTTPServer((addr, port), Handler)
    server.out = out
    print(json.dumps({"ready": port}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
