#!/usr/bin/env bash
# What one publish costs the server in system calls: fsync/fdatasync/syncfs, openat, rename and
# mkdir per publish, counted with `strace -f -c` over N sequential publishes (default 20)
# into a registry that already holds 300 crates. Fails (exit 1) when a count passes its
# budget, so a change that adds work to the write path shows up here.
#
#   benches/publish-syscalls.sh [PATH/TO/palletizer-server]     (needs strace, python3, curl)
#
# PUB_N: publishes; PUB_MAX_FSYNC (default 8) and PUB_MAX_OPEN (default 60, what the write
# path takes now; the aim is 30, see docs/performance.md): the budgets per
# publish; PUB_CLI: the `palletizer` that makes the registry (default: beside the server).
set -euo pipefail
cd "$(dirname "$0")/.."
SRV=${1:-target/release/palletizer-server}
CLI=${PUB_CLI:-$(dirname "$SRV")/palletizer}
N=${PUB_N:-20}
MAX_FSYNC=${PUB_MAX_FSYNC:-8}
MAX_OPEN=${PUB_MAX_OPEN:-60}
for tool in strace python3 curl; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed" >&2; exit 1; }
done
[ -x "$SRV" ] || { echo "error: no server at $SRV (cargo build --release)" >&2; exit 1; }
work=$(mktemp -d -t pub-syscalls.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$CLI" -r "$work/reg" init --url "http://127.0.0.1:$port" --access open >/dev/null
python3 - "$work" "$N" <<'PY'
import gzip, io, os, sys, tarfile
work, n = sys.argv[1], int(sys.argv[2])
os.makedirs(f"{work}/files"); os.makedirs(f"{work}/pub")
def crate(name):
    manifest = (f'[package]\nname = "{name}"\nversion = "1.0.0"\nedition = "2021"\n'
                f'description = "d"\nlicense = "MIT"\n').encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for path, data in [("Cargo.toml", manifest), ("src/lib.rs", b"pub fn f() {}\n")]:
            info = tarfile.TarInfo(f"{name}-1.0.0/{path}"); info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)
for i in range(300):
    open(f"{work}/files/have{i:04d}-1.0.0.crate", "wb").write(crate(f"have{i:04d}"))
for i in range(n):
    open(f"{work}/pub/new{i:04d}.crate", "wb").write(crate(f"new{i:04d}"))
PY
"$CLI" -r "$work/reg" add "$work"/files/*.crate >/dev/null
printf 'registry = "%s"\n[[listener]]\nbind = "127.0.0.1:%s"\n' "$work/run" "$port" >"$work/server.toml"
# measure N OUT: a fresh copy of the registry, the server under strace, N publishes.
measure() {
  rm -rf "$work/run"; cp -a "$work/reg" "$work/run"
  strace -f -c -o "$2" -e trace=fsync,fdatasync,syncfs,openat,rename,renameat,renameat2,mkdir,mkdirat \
    "$SRV" "$work/server.toml" -q &
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/index/config.json" && break; sleep 0.05; done
  python3 - "$work/pub" "$port" "$1" <<'PY'
import http.client, json, os, struct, sys
folder, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for f in sorted(os.listdir(folder))[:n]:
    name = f[:-6]
    meta = json.dumps({"name": name, "vers": "1.0.0", "deps": [], "features": {}, "authors": [],
        "description": "d", "license": "MIT", "keywords": [], "categories": [], "badges": {},
        "links": None, "rust_version": None}).encode()
    data = open(os.path.join(folder, f), "rb").read()
    body = struct.pack("<I", len(meta)) + meta + struct.pack("<I", len(data)) + data
    c.request("PUT", "/api/v1/crates/new", body=body, headers={"Host": "localhost"})
    r = c.getresponse(); r.read()
    assert r.status == 200, (r.status, f)
PY
  sleep 0.5
  pkill -INT -f "$work/server.toml" || true
  wait || true
}
measure 0 "$work/base.txt"
measure "$N" "$work/strace.txt"
python3 - "$work/strace.txt" "$N" "$MAX_FSYNC" "$MAX_OPEN" "$work/base.txt" <<'PY'
import sys
path, n, max_fsync, max_open, base = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def counts(path):
    calls = {}
    for line in open(path):
        parts = line.split()
        if len(parts) >= 5 and parts[-1].isidentifier() and parts[3].isdigit():
            calls[parts[-1]] = int(parts[3])
    return calls
calls, start = counts(path), counts(base)
group = lambda *names: sum(calls.get(k, 0) - start.get(k, 0) for k in names)
per = {
    "fsync": group("fsync", "fdatasync", "syncfs") / n,
    "openat": group("openat") / n,
    "rename": group("rename", "renameat", "renameat2") / n,
    "mkdir": group("mkdir", "mkdirat") / n,
}
print(f"per publish, over {n} sequential publishes (a start and stop without publishes subtracted):")
for k, v in per.items():
    print(f"  {k:7} {v:6.1f}")
bad = []
if per["fsync"] > max_fsync: bad.append(f"fsync {per['fsync']:.1f} > {max_fsync}")
if per["openat"] > max_open: bad.append(f"openat {per['openat']:.1f} > {max_open}")
if bad:
    print("over budget: " + ", ".join(bad)); sys.exit(1)
PY
