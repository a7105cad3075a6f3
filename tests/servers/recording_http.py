"""A small HTTP server for the sink tests: records every request, keeps the bodies it accepted,
and misbehaves on request numbers given on the command line.

    python3 recording_http.py [--status N:CODE ...] [--retry-after SECONDS] [--hang N ...]

Request numbers count from 1 over every POST/PUT. `--status 3:503` answers the third with 503
(with `Retry-After` if given) and drops its body; `--hang 2` sleeps 5 s before answering the
second (the client's timeout fires first). Loopback only; prints "PORT <n>" when listening.
GET /log lists the requests, one per line: number, method, Content-Range, body length, status
and Authorization, tab-separated; GET /data is the accepted bodies, in order.
"""

import argparse
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--status", action="append", default=[])
parser.add_argument("--retry-after", type=int, default=None)
parser.add_argument("--hang", action="append", type=int, default=[])
args = parser.parse_args()
statuses = {int(n): int(code) for n, code in (s.split(":") for s in args.status)}

lock = threading.Lock()
log = []
accepted = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, code, payload=b"", headers=()):
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def record(self):
        data = self.body()
        with lock:
            number = len(log) + 1
            entry = {
                "n": number,
                "method": self.command,
                "path": self.path,
                "range": self.headers.get("Content-Range"),
                "auth": self.headers.get("Authorization"),
                "len": len(data),
            }
            log.append(entry)
        if number in args.hang:
            time.sleep(5)
        code = statuses.get(number, 201)
        entry["status"] = code
        if 200 <= code < 300:
            with lock:
                accepted.append((number, data))
            self.send(code)
        else:
            headers = [("Retry-After", str(args.retry_after))] if args.retry_after is not None else []
            self.send(code, b"scripted failure", headers)

    do_POST = record
    do_PUT = record

    def do_GET(self):
        with lock:
            if self.path == "/log":
                lines = [
                    "\t".join(str(e.get(k)) for k in ("n", "method", "range", "len", "status", "auth"))
                    for e in log
                ]
                self.send(200, ("\n".join(lines) + "\n").encode())
            elif self.path == "/data":
                ordered = [d for _, d in sorted(accepted)]
                self.send(200, b"".join(ordered))
            else:
                self.send(404)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print("PORT", server.server_address[1], flush=True)
server.serve_forever()
