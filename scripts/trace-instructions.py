#!/usr/bin/env python3
"""Instructions per event that trace export costs a `switchyard serve` process, counted by callgrind.

On a shared two-core machine, events/s and CPU time move by a third from one run to the next; the
instructions a process executes for the same work do not. This runs the trace-export bench's path
(POST /events -> no-op HTTP function -> SUCCESS record in SQLite, each event carrying a sampled
`traceparent`) twice under `valgrind --tool=callgrind`: export off, then export on to a local OTLP/HTTP
endpoint that accepts every batch. It zeroes the counters after a warm-up of 200 events, drives N
more, and dumps, so start-up is left out. It prints instructions per event for the whole process, for
the tokio worker threads, and for the rest (the records thread, and the span export thread when on).

    cargo build --release --bin switchyard
    python3 scripts/trace-instructions.py target/release/switchyard [N]   # N defaults to 2000

Needs valgrind (every machine of this kind has it). Takes about a minute. To look into the profiles
afterwards, set TRACE_INSTRUCTIONS_KEEP to a directory: the callgrind dumps stay there
(off/cg.out.1 and on/cg.out.1, for callgrind_annotate).
"""
import concurrent.futures as cf
import http.server
import os
import re
import socketserver
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


class Sink(http.server.BaseHTTPRequestHandler):
    """The no-op function, and the OTLP endpoint: reads the body, answers 200."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def start_sink():
    s = Server(("127.0.0.1", 0), Sink)
    threading.Thread(target=s.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{s.server_address[1]}"


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(binary, mode, n, function, otlp, work):
    d = os.path.join(work, mode)
    os.makedirs(d)
    port = free_port()
    telemetry = f"telemetry: {{otlp_endpoint: '{otlp}'}}\n" if mode == "on" else ""
    with open(f"{d}/c.yaml", "w") as f:
        f.write(
            f"store: sqlite://{d}/db.sqlite\nserver: {{bind: '127.0.0.1:{port}'}}\n{telemetry}"
            f"functions:\n  - {{name: noop, runtime: http, url: '{function}/', max_concurrency: 64, queue_size: 100000}}\n"
            "triggers:\n  - {name: all, function: noop}\n"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    p = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.out", binary, "serve", "-c", f"{d}/c.yaml"],
        stderr=open(f"{d}/log", "w"),
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if urllib.request.urlopen(f"{base}/readyz", timeout=2).status == 200:
                break
        except Exception:
            pass
        if time.time() > deadline or p.poll() is not None:
            sys.exit(f"{mode}: switchyard did not become ready; see {d}/log")
        time.sleep(0.5)

    body = b'{"order": 42, "items": [{"sku": "A-1", "qty": 2}], "total": 31.5}'

    def post(i):
        headers = {
            "ce-specversion": "1.0", "ce-id": f"e{i}", "ce-source": "/bench", "ce-type": "bench",
            "content-type": "application/json", "traceparent": f"00-{i + 1:032x}-{i + 1:016x}-01",
        }
        r = urllib.request.Request(f"{base}/events", data=body, method="POST", headers=headers)
        assert urllib.request.urlopen(r, timeout=120).status == 202

    def succeeded():
        c = sqlite3.connect(f"file:{d}/db.sqlite?mode=ro", uri=True)
        try:
            return c.execute("SELECT count(*) FROM event_records WHERE status = 'SUCCESS'").fetchone()[0]
        finally:
            c.close()

    def drive(lo, hi):
        with cf.ThreadPoolExecutor(16) as ex:
            list(ex.map(post, range(lo, hi)))
        while succeeded() < hi:
            time.sleep(0.2)

    drive(0, 200)
    subprocess.run(["callgrind_control", "-z", str(p.pid)], check=True, capture_output=True)
    drive(200, 200 + n)
    subprocess.run(["callgrind_control", "-d", str(p.pid)], check=True, capture_output=True)
    p.terminate()
    p.wait()
    dump = f"{d}/cg.out.1"
    out = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--auto=no", "--inclusive=yes", dump],
        check=True, capture_output=True, text=True,
    ).stdout
    total = int(re.search(r"^summary: (\d+)", open(dump).read(), re.M).group(1))
    workers = 0
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) .*tokio::runtime::scheduler::multi_thread::worker::run ", line)
        if m:
            workers = int(m.group(1).replace(",", ""))
            break
    return total / n, workers / n


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    function, otlp = start_sink(), start_sink()
    keep = os.environ.get("TRACE_INSTRUCTIONS_KEEP")
    if keep:
        if os.path.isdir(keep) and os.listdir(keep):
            sys.exit(f"TRACE_INSTRUCTIONS_KEEP: {keep} is not empty (its records would be counted again)")
        os.makedirs(keep, exist_ok=True)
        off = run(binary, "off", n, function, otlp, keep)
        on = run(binary, "on", n, function, otlp, keep)
    else:
        with tempfile.TemporaryDirectory(prefix="sy-trace-instr") as work:
            off = run(binary, "off", n, function, otlp, work)
            on = run(binary, "on", n, function, otlp, work)
    print(f"\ninstructions per event, {n} events (callgrind; POST /events -> no-op function -> SUCCESS record)\n")
    print("| | export off | export on | on - off | ratio |")
    print("|---|---|---|---|---|")
    names = ["whole process", "tokio workers", "other threads (records, span export)"]
    rows = [(off[0], on[0]), (off[1], on[1]), (off[0] - off[1], on[0] - on[1])]
    for name, (a, b) in zip(names, rows):
        print(f"| {name} | {a:,.0f} | {b:,.0f} | {b - a:,.0f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
