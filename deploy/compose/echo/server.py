"""A tiny HTTP echo function for the compose stack (http runtime).

Switchyard POSTs each event in CloudEvents binary mode: `ce-*` headers, the data as the body, and
a W3C `traceparent`. This answers 200 with what it received as JSON and logs one line per event.
Standard library only; listens on $PORT (default 9000).
"""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        ce = {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("ce-")}
        answer = {
            "path": self.path,
            "cloudevent": ce,
            "content_type": self.headers.get("content-type"),
            "traceparent": self.headers.get("traceparent"),
            "body": body.decode("utf-8", errors="replace"),
        }
        print(f"echo: {ce.get('ce-type')} id={ce.get('ce-id')} source={ce.get('ce-source')}", flush=True)
        out = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):  # health check
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, fmt, *args):  # one line per event is printed above
        pass


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "9000"))
    ThreadingHTTPServer(("0.0.0.0", port), Echo).serve_forever()
