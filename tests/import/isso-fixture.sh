#!/usr/bin/env bash
# Makes a real Isso database for io360's import test: installs Isso 0.14 from PyPI (cached in
# ~/.cache/io360/isso-venv, as the Isso benchmark does), runs it on loopback with its own data
# directory, and through Isso's own API posts a nested thread, votes from other addresses,
# edits one comment, deletes another that has a reply, and posts on a second page. Then stops
# Isso and leaves the database at OUT_DIR/comments.db.
#
#   bash tests/import/isso-fixture.sh OUT_DIR
set -euo pipefail
out=${1:?usage: isso-fixture.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/io360"
venv="$cache/isso-venv"
if ! "$venv/bin/python" -c 'import isso' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q isso==0.14.0 gunicorn
fi
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$out/isso.cfg" <<CFG
[general]
dbpath = $out/comments.db
host = http://127.0.0.1:$port/
notify = stdout
[server]
listen = http://127.0.0.1:$port/
trusted-proxies = 127.0.0.1
[guard]
enabled = false
[moderation]
enabled = false
CFG
rm -f "$out/comments.db"
"$venv/bin/isso" -c "$out/isso.cfg" run >"$out/isso.log" 2>&1 &
isso=$!
trap 'kill $isso 2>/dev/null || true; wait $isso 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/info" >/dev/null 2>&1 && break
  sleep 0.1
done

"$venv/bin/python" - "$port" <<'PY'
import json, sys, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
cookies = {}

def call(method, path, body=None, ip="192.0.2.1", cookie=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "X-Forwarded-For": ip,
                                          "Referer": base + "/"})
    if cookie:
        req.add_header("Cookie", cookie)
    with urllib.request.urlopen(req) as r:
        text = r.read().decode()
        return r.status, r.headers.get_all("Set-Cookie") or [], (json.loads(text) if text else None)

def post(uri, body, ip):
    status, set_cookies, c = call("POST", f"/new?uri={uri}", body, ip)
    assert status == 201, (status, c)
    cookies[c["id"]] = "; ".join(s.split(";")[0] for s in set_cookies)
    return c["id"]

a = post("/posts/a/", {"text": "First **comment** & <script>alert(1)</script>", "author": "Ann",
                        "email": "ann@example.org", "website": "https://ann.example.org", "title": "Post A"}, "192.0.2.1")
b = post("/posts/a/", {"text": "A reply", "author": "Bob", "parent": a}, "192.0.2.2")
c = post("/posts/a/", {"text": "A reply to the reply", "parent": b}, "192.0.2.3")
d = post("/posts/b/", {"text": "Café on another page", "author": "Zoë", "title": "Post B"}, "2001:db8::1")
e = post("/posts/b/", {"text": "Answering Zoë", "author": "Eve", "parent": d}, "2001:db8:1::1")
# Isso counts one vote per /24 (or /48): voters from different networks.
for i in (1, 2, 3):
    call("POST", f"/id/{a}/like", {}, f"198.51.{i}.1")
call("POST", f"/id/{a}/dislike", {}, "198.51.4.1")
call("PUT", f"/id/{a}", {"text": "First **comment**, edited", "author": "Ann"}, "192.0.2.1", cookies[a])
# Isso keeps one level of nesting (c replies to a), so b has no reply and goes; d has one, so
# its place stays, marked deleted.
call("DELETE", f"/id/{b}", None, "192.0.2.2", cookies[b])
call("DELETE", f"/id/{d}", None, "2001:db8::1", cookies[d])
print(json.dumps({"a": a, "b": b, "c": c, "d": d, "e": e}))
PY
