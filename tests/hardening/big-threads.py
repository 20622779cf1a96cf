#!/usr/bin/env python3
"""Page size and thread read time for threads of 100, 5,000 and 50,000 comments.

Starts `io360 up` (IO360_BIN, or target/debug/io360) on a loopback port with a site of three
pages, one per thread, posts the comments through the public API (rate limits off), then
measures, for each thread: the page's size (with its server-rendered snapshot), the time to
read the whole first answer of the thread (`GET /api/v1/comments?thread=T`), and the time to
read its newest comments (`after=head-10`), as medians of 20 reads after one warm-up read.
Checks on the way that the newest comments are found and the page says how many there are.

Usage: tests/hardening/big-threads.py [SIZES...]   (default: 100 5000 50000)
"""

import http.client
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

REPO = pathlib.Path(__file__).resolve().parents[2]


def binary():
    if os.environ.get("IO360_BIN"):
        return os.environ["IO360_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", str(REPO / "target"))
    return os.path.join(target, "debug", "io360")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(conn, method, path, body=None):
    headers = {"content-type": "application/json"} if body is not None else {}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    res = conn.getresponse()
    return res.status, res.read()


def post_many(port, thread, n, workers=32):
    """Posts n comments to thread from `workers` keep-alive connections."""
    todo = iter(range(n))
    lock = threading.Lock()
    failures = []

    def work():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            path = "/api/v1/comments?thread=" + urllib.parse.quote(thread, safe="")
            status, body = request(conn, "POST", path, {"text": f"comment {i} of {thread}"})
            if status != 201:
                failures.append((status, body[:200]))

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"{len(failures)} posts failed, first: {failures[0]}")


def timed(conn, path, reads=20):
    request(conn, "GET", path)
    times = []
    for _ in range(reads):
        start = time.perf_counter()
        status, body = request(conn, "GET", path)
        times.append(time.perf_counter() - start)
        assert status == 200, (path, status, body[:200])
    return statistics.median(times) * 1000, body


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [100, 5000, 50000]
    with tempfile.TemporaryDirectory() as tmp:
        site = pathlib.Path(tmp, "site")
        for n in sizes:
            page = site / f"t{n}"
            page.mkdir(parents=True)
            (page / "index.html").write_text(
                f'<!doctype html><title>{n}</title><section id="io360-thread" '
                f'data-thread="/t{n}/"></section><script src="/embed.js" defer></script>\n'
            )
        port = free_port()
        env = dict(os.environ, IO360_NO_RATE_LIMITS="true", IO360_LOG="warn")
        proc = subprocess.Popen(
            [binary(), "up", "--addr", f"127.0.0.1:{port}", "--data-dir", f"{tmp}/data", "--site", str(site)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        try:
            for _ in range(400):
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    if request(c, "GET", "/api/v1/status")[0] == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.05)
            print(f"{'comments':>8} {'post s':>7} {'page bytes':>10} {'shown':>5} "
                  f"{'read all ms':>11} {'read newest ms':>14}")
            for n in sizes:
                thread = f"/t{n}/"
                q = urllib.parse.quote(thread, safe="")
                start = time.perf_counter()
                post_many(port, thread, n)
                post_s = time.perf_counter() - start
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                all_ms, first = timed(conn, f"/api/v1/comments?thread={q}")
                head = json.loads(first)["head"]
                assert head == n, (head, n)
                new_ms, newest = timed(conn, f"/api/v1/comments?thread={q}&after={head - 10}")
                seqs = [c["seq"] for c in json.loads(newest)["comments"]]
                assert seqs == list(range(head - 9, head + 1)), seqs
                # The snapshot refreshes in the background: wait until the page says n.
                html = b""
                label = f"{n} comments".encode()
                for _ in range(600):
                    _, html = request(conn, "GET", f"/t{n}/")
                    if label in html:
                        break
                    time.sleep(0.1)
                assert label in html, f"the page of {thread} never said {n} comments"
                shown = html.count(b"<li ")
                print(f"{n:>8} {post_s:>7.1f} {len(html):>10} {shown:>5} {all_ms:>11.2f} {new_ms:>14.2f}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
