#!/usr/bin/env bash
# Same-run A/B of palletizer-server builds: each round starts every build in turn on a fresh
# copy of one registry and measures, interleaved:
#   index c10      wrk -t1 -c10 over index files (plain HTTP), req/s
#   TLS index c10  the same over TLS, req/s
#   1M c10         wrk -t1 -c10 on one 1 MiB crate file, MB/s
#   publish        median latency of 40 sequential publishes (one keep-alive connection), ms
#   VmHWM          peak RSS after all of the above, KiB
# Prints medians over the rounds as a Markdown table (also written to target/bench-ab.md).
#
#   benches/ab.sh LABEL=PATH/TO/palletizer-server ...
#
# AB_CLI: the `palletizer` that makes the registry (default: beside the first build; use the
# oldest build's, whose files every newer build reads). AB_ROUNDS (default 5), AB_SECS (3).
# Needs wrk, curl, openssl, python3; 127.0.0.1 only. Static builds give the figures the
# README quotes (see benches/idle.sh for idle memory).
set -euo pipefail
ROUNDS=${AB_ROUNDS:-5}; SECS=${AB_SECS:-3}
[ $# -ge 1 ] || { sed -n '2,16p' "$0" >&2; exit 1; }
for tool in wrk curl openssl python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed" >&2; exit 1; }
done
here=$(cd "$(dirname "$0")" && pwd)
lua=$here/../../shared/bench/roundrobin.lua
[ -f "$lua" ] || lua=/work/shared/bench/roundrobin.lua
first=${1#*=}
cli=${AB_CLI:-$(dirname "$first")/palletizer}
work=$(mktemp -d -t ab-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=19700; tport=19701
"$cli" -r "$work/reg" init --url "http://127.0.0.1:$port" --access open >/dev/null
python3 - "$work" <<'PY'
import base64, gzip, io, os, random, sys, tarfile
work = sys.argv[1]
os.makedirs(f"{work}/files", exist_ok=True)
os.makedirs(f"{work}/pub", exist_ok=True)
def crate(name, vers, payload=b"pub fn f() {}\n"):
    manifest = (f'[package]\nname = "{name}"\nversion = "{vers}"\nedition = "2021"\n'
                f'description = "d"\nlicense = "MIT"\n').encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for path, data in [("Cargo.toml", manifest), ("src/lib.rs", payload)]:
            info = tarfile.TarInfo(f"{name}-{vers}/{path}"); info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0, compresslevel=1 if len(payload) > 1000 else 9)
index = []
for i in range(300):
    name = f"abcrate{i:04d}"
    open(f"{work}/files/{name}-1.0.0.crate", "wb").write(crate(name, "1.0.0"))
    index.append(f"/index/{name[:2]}/{name[2:4]}/{name}")
big = base64.b64encode(random.Random(1).randbytes(1_000_000))  # gzips to about 1 MiB
open(f"{work}/files/abbig-1.0.0.crate", "wb").write(crate("abbig", "1.0.0", b"// " + big))
open(f"{work}/index.txt", "w").write("\n".join(index) + "\n")
open(f"{work}/big.txt", "w").write("/crates/abbig/abbig-1.0.0.crate\n")
for i in range(40):
    open(f"{work}/pub/p{i:02d}.crate", "wb").write(crate(f"abpub{i:02d}", "1.0.0"))
PY
"$cli" -r "$work/reg" add "$work"/files/*.crate >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
base="registry = \"$work/run\"
[[listener]]
bind = \"127.0.0.1:$port\"
[[listener]]
bind = \"127.0.0.1:$tport\"
tls = { private_key = \"$work/key.pem\", certificate_chain = \"$work/cert.pem\" }"
printf '%s\n' "$base" >"$work/server-old.toml"
# wrk's requests all come from one peer: the per-peer rate is raised out of its reach.
printf '%s\n[limits]\nrequests-per-second = 100000000\nrequest-burst = 100000000\n' "$base" >"$work/server.toml"
status() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; }
rps() { awk '/Requests\/sec/ {print int($2)}'; }
mbps() { awk '/Transfer\/sec/ {v=$2; if (v ~ /GB/) {sub("GB","",v); v*=1024} else if (v ~ /MB/) {sub("MB","",v)} else {sub("KB","",v); v/=1024}; print int(v)}'; }
publish_ms() {
  python3 - "$work/pub" "$port" <<'PY'
import http.client, json, os, statistics, struct, sys, time
folder, port = sys.argv[1], int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
took = []
for f in sorted(os.listdir(folder)):
    name = f[:-6].replace("p", "abpub", 1)
    meta = json.dumps({"name": name, "vers": "1.0.0", "deps": [], "features": {}, "authors": [],
        "description": "d", "license": "MIT", "keywords": [], "categories": [], "badges": {},
        "links": None, "rust_version": None}).encode()
    data = open(os.path.join(folder, f), "rb").read()
    body = struct.pack("<I", len(meta)) + meta + struct.pack("<I", len(data)) + data
    t = time.perf_counter()
    c.request("PUT", "/api/v1/crates/new", body=body, headers={"Host": "localhost"})
    r = c.getresponse(); r.read()
    took.append(time.perf_counter() - t)
    assert r.status == 200, (r.status, f)
print(f"{statistics.median(took) * 1000:.1f}")
PY
}
results=$work/results.tsv
for round in $(seq "$ROUNDS"); do
  for arg in "$@"; do
    name=${arg%%=*}; bin=${arg#*=}
    rm -rf "$work/run"; cp -a "$work/reg" "$work/run"
    "$bin" "$work/server.toml" -q & pid=$!
    sleep 0.3
    kill -0 $pid 2>/dev/null || { "$bin" "$work/server-old.toml" -q & pid=$!; }
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/index/config.json" && break; sleep 0.05; done
    idx=$(wrk -t1 -c10 -d"${SECS}s" -s "$lua" "http://127.0.0.1:$port" -- "$work/index.txt" 2>&1 | rps)
    tls=$(wrk -t1 -c10 -d"${SECS}s" -s "$lua" "https://127.0.0.1:$tport" -- "$work/index.txt" 2>&1 | rps)
    big=$(wrk -t1 -c10 -d"${SECS}s" -s "$lua" "http://127.0.0.1:$port" -- "$work/big.txt" 2>&1 | mbps)
    pub=$(publish_ms)
    hwm=$(status $pid VmHWM)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$idx" "$tls" "$big" "$pub" "$hwm" >>"$results"
    kill $pid; wait $pid 2>/dev/null || true
  done
done
mkdir -p target
cp "$results" target/bench-ab.tsv
python3 - "$results" "$ROUNDS" "$SECS" <<'PY' | tee target/bench-ab.md
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
print(f"Medians of {sys.argv[2]} interleaved rounds (fresh start and registry copy each), wrk -t1 -c10, {sys.argv[3]} s per scenario; 300 index files, one 1 MiB crate, 40 sequential publishes")
print("\n| build | index c10 req/s | TLS index c10 req/s | 1M c10 MB/s | publish median ms | VmHWM KiB |")
print("|---|---|---|---|---|---|")
names = list(dict.fromkeys(r[0] for r in rows))
for name in names:
    rs = [r for r in rows if r[0] == name]
    med = lambda i: statistics.median(float(r[i]) for r in rs)
    print(f"| {name} | {med(1):.0f} | {med(2):.0f} | {med(3):.0f} | {med(4):.1f} | {med(5):.0f} |")
if len(names) == 2:
    a = [r for r in rows if r[0] == names[0]]; b = [r for r in rows if r[0] == names[1]]
    ratio = lambda i: statistics.median(float(r[i]) for r in b) / statistics.median(float(r[i]) for r in a)
    print(f"| {names[1]} / {names[0]} | {ratio(1):.3f} | {ratio(2):.3f} | {ratio(3):.3f} | {ratio(4):.3f} | {ratio(5):.3f} |")
PY
