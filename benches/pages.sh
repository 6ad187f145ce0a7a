#!/usr/bin/env bash
# What the pages cost under load, for one or more builds side by side (issue: pages must fit
# the memory budget the server had before them).
#
#   benches/pages.sh NAME=PATH/TO/palletizer-server ... 
#
# Makes a registry of $CRATES crates (default 300) whose crate files carry a README of about
# 4 KiB, dependencies and features, with `palletizer add` (the first build's sibling
# `palletizer` binary). For each build, $ROUNDS times (default 3), interleaved, on a fresh start:
#   idle      VmRSS after one index request;
#   load      VmHWM after wrk -c100 on index files and downloads ($SECS s, default 10);
#   pages     VmHWM after that plus wrk -c100 on crate pages ($SECS s).
# Prints the medians as a Markdown table. Needs wrk and python3; 127.0.0.1 only.
set -euo pipefail
CRATES=${CRATES:-300}; ROUNDS=${ROUNDS:-3}; SECS=${SECS:-10}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d -t pages-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
first=${1#*=}
cli="$(dirname "$first")/palletizer"
port=19600
"$cli" -r "$work/reg" init --url "http://127.0.0.1:$port" --access open >/dev/null
python3 - "$work" "$CRATES" <<'PY'
import gzip, io, os, sys, tarfile
work, n = sys.argv[1], int(sys.argv[2])
os.makedirs(f"{work}/files", exist_ok=True)
paths = {"index": [], "dl": [], "pages": []}
words = "registry crate index sparse cargo publish yank owner token page search".split()
for i in range(n):
    name = f"crate{i:04d}-{words[i % len(words)]}"
    deps = "".join(f'\ncrate{j:04d}-{words[j % len(words)]} = "1"' for j in range(max(0, i - 3), i))
    readme = f"# {name}\n\n" + "\n\n".join(
        f"## Section {k}\n\nSome *text* about `{name}` with a [link](https://example.com/{k}) "
        + "and more words " * 20 + "\n\n```rust\nfn main() { println!(\"hi\"); }\n```"
        for k in range(8))
    manifest = (f'[package]\nname = "{name}"\nversion = "1.0.0"\nedition = "2021"\n'
                f'description = "The {name} crate, for tests"\nlicense = "MIT"\nreadme = "README.md"\n'
                f'repository = "https://example.com/{name}"\n[features]\ndefault = ["a"]\na = []\n'
                f'[dependencies]{deps}\n')
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for path, data in [("Cargo.toml", manifest.encode()), ("README.md", readme.encode()),
                           ("src/lib.rs", b"pub fn f() {}\n")]:
            info = tarfile.TarInfo(f"{name}-1.0.0/{path}"); info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    open(f"{work}/files/{name}-1.0.0.crate", "wb").write(gzip.compress(raw.getvalue(), mtime=0))
    rel = f"{name[:2]}/{name[2:4]}/{name}"
    paths["index"].append(f"/index/{rel}")
    paths["dl"].append(f"/crates/{name}/{name}-1.0.0.crate")
    paths["pages"].append(f"/crates/{name}")
with open(f"{work}/load.txt", "w") as f:
    for a, b in zip(paths["index"], paths["dl"]): f.write(f"{a}\n{a}\n{a}\n{b}\n")
with open(f"{work}/pages.txt", "w") as f:
    f.write("\n".join(paths["pages"]) + "\n")
PY
"$cli" -r "$work/reg" add "$work"/files/*.crate >/dev/null
cat > "$work/server.toml" <<CONF
registry = "$work/reg"
[[listener]]
bind = "127.0.0.1:$port"
CONF
# wrk's requests all come from one peer: the per-peer rate is raised out of its reach
# (builds from before the setting existed get the file without it).
cp "$work/server.toml" "$work/server-old.toml"
printf '[limits]\nrequests-per-second = 100000000\nrequest-burst = 100000000\n' >>"$work/server.toml"
status() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; }
results=$work/results.tsv
for round in $(seq "$ROUNDS"); do
  for arg in "$@"; do
    name=${arg%%=*}; bin=${arg#*=}
    "$bin" "$work/server.toml" -q & pid=$!
    sleep 0.3
    kill -0 $pid 2>/dev/null || { "$bin" "$work/server-old.toml" -q & pid=$!; }
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/index/config.json" && break; sleep 0.05; done
    curl -s -o /dev/null "http://127.0.0.1:$port$(head -1 "$work/load.txt")"
    sleep 0.3
    idle=$(status $pid VmRSS)
    wrk -t1 -c100 -d"${SECS}s" -s "$here/../../shared/bench/roundrobin.lua" "http://127.0.0.1:$port" -- "$work/load.txt" >/dev/null 2>&1 \
      || wrk -t1 -c100 -d"${SECS}s" -s /work/shared/bench/roundrobin.lua "http://127.0.0.1:$port" -- "$work/load.txt" >/dev/null
    load=$(status $pid VmHWM)
    out=$(wrk -t1 -c100 -d"${SECS}s" -s /work/shared/bench/roundrobin.lua "http://127.0.0.1:$port" -- "$work/pages.txt" 2>&1)
    pages=$(status $pid VmHWM)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print int($2)}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$idle" "$load" "$pages" "$rps" "${non2xx:-0}" >> "$results"
    kill $pid; wait $pid 2>/dev/null || true
  done
done
python3 - "$results" "$CRATES" "$ROUNDS" "$SECS" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
print(f"{sys.argv[2]} crates with 4 KiB READMEs; medians of {sys.argv[3]} interleaved starts; wrk -t1 -c100, {sys.argv[4]} s per phase; KiB")
print("\n| build | idle VmRSS | VmHWM after index+downloads | VmHWM after crate pages too | crate pages req/s | non-2xx |")
print("|---|---|---|---|---|---|")
for name in dict.fromkeys(r[0] for r in rows):
    rs = [r for r in rows if r[0] == name]
    med = lambda i: int(statistics.median(int(r[i]) for r in rs))
    print(f"| {name} | {med(1)} | {med(2)} | {med(3)} | {med(4)} | {max(int(r[5]) for r in rs)} |")
PY
