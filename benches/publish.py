#!/usr/bin/env python3
"""Publishing to palletizer, and to kellnr in the same run: the same tiny crates (a
Cargo.toml and a src/lib.rs each) published with cargo's wire format to a new registry,
(1) one after another on one keep-alive connection, as new crates (version 1.0.0): the
median and 90th percentile latency; (2) then the same crates again as version 1.0.1 from
8 concurrent clients (a connection each, taking crates from one queue): publishes/s and
the median latency; and the server's peak resident set (VmHWM) after both.

    python3 benches/publish.py [PALLETIZER] [--kellnr PATH] [--rounds N] [--crates N] [--clients N]

PALLETIZER (or env PALLETIZER_BIN): the `palletizer` binary, or the folder holding it
(default target/release). The server is the `palletizer-server` beside it (else
`palletizer serve`), with the default settings, on a registry in public mode (made with
`palletizer init`); the publishes carry the token of an admin made with `palletizer user
add` and `palletizer token create`. --kellnr (or env KELLNR): a kellnr binary, with a new
data directory each round and the token of its admin user (see benches/kellnr.py).

--rounds (env PUB_ROUNDS, default 3): each round gives every server a new registry; the
order alternates from round to round and the table gives medians. --crates (PUB_CRATES,
default 300), --clients (PUB_CLIENTS, default 8). 127.0.0.1 only. Writes the table to
target/bench-publish.md and every measurement to target/bench-publish.tsv.
"""
import argparse, gzip, http.client, io, json, os, queue, secrets, shutil, statistics
import struct, subprocess, sys, tarfile, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from benchlib import free_port, kellnr_start, kellnr_version, status, stop  # noqa: E402


def crate_file(name, vers):
    manifest = (f'[package]\nname = "{name}"\nversion = "{vers}"\nedition = "2021"\n'
                f'description = "d"\nlicense = "MIT"\n').encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for path, data in [("Cargo.toml", manifest), ("src/lib.rs", b"pub fn f() {}\n")]:
            info = tarfile.TarInfo(f"{name}-{vers}/{path}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def publish_body(name, vers):
    """cargo's publish request: u32 LE length, the JSON metadata, u32 LE length, the crate."""
    meta = json.dumps({
        "name": name, "vers": vers, "deps": [], "features": {}, "authors": [],
        "description": "d", "documentation": None, "homepage": None, "readme": None,
        "readme_file": None, "keywords": [], "categories": [], "license": "MIT",
        "license_file": None, "repository": None, "badges": {}, "links": None,
        "rust_version": None}).encode()
    data = crate_file(name, vers)
    return struct.pack("<I", len(meta)) + meta + struct.pack("<I", len(data)) + data


def publish(conn, body, token):
    t = time.perf_counter()
    conn.request("PUT", "/api/v1/crates/new", body=body,
                 headers={"Authorization": token, "Content-Type": "application/octet-stream"})
    r = conn.getresponse()
    answer = r.read()
    took = time.perf_counter() - t
    if r.status != 200 or b'"errors"' in answer:
        raise RuntimeError(f"publish answered {r.status}: {answer[:300]!r}")
    return took


def sequential(port, bodies, token):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    took = [publish(conn, b, token) for b in bodies]
    conn.close()
    return took


def concurrent(port, bodies, token, clients):
    todo = queue.Queue()
    for b in bodies:
        todo.put(b)
    took, failed = [], []

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            try:
                b = todo.get_nowait()
            except queue.Empty:
                break
            try:
                took.append(publish(conn, b, token))
            except Exception as e:  # noqa: BLE001 - reported below, the run fails
                failed.append(e)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    if failed:
        raise RuntimeError(f"{len(failed)} concurrent publishes failed, the first: {failed[0]}")
    return wall, took


def wait_http(port, path, proc):
    for _ in range(400):
        if proc.poll() is not None:
            sys.exit(f"error: the server exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                c.close()
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit("error: the server did not start")


def index_lines(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    return len(body.splitlines()) if r.status == 200 else 0


class Palletizer:
    label = "palletizer"

    def __init__(self, where):
        cli = os.path.join(where, "palletizer") if os.path.isdir(where) else where
        if not os.access(cli, os.X_OK):
            sys.exit(f"error: no palletizer at {where} (cargo build --release)")
        self.cli = os.path.abspath(cli)
        server = os.path.join(os.path.dirname(self.cli), "palletizer-server")
        self.server = server if os.access(server, os.X_OK) else None

    def start(self, work, tag):
        port = free_port()
        reg = os.path.join(work, f"reg-{tag}")
        run = lambda *a: subprocess.run([self.cli, "-r", reg, *a], check=True, capture_output=True, text=True).stdout
        run("init", "--url", f"http://127.0.0.1:{port}")
        run("user", "add", "bencher", "--admin")
        self.token = run("token", "create", "--user", "bencher").strip()
        conf = os.path.join(work, f"server-{tag}.toml")
        open(conf, "w").write(f'registry = "{reg}"\n\n[[listener]]\nbind = "127.0.0.1:{port}"\n')
        cmd = [self.server, conf, "-q"] if self.server else [self.cli, "serve", conf, "-q"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(port, "/index/config.json", proc)
        return proc, port, reg

    def index_path(self, name):
        return f"/index/{name[:2]}/{name[2:4]}/{name}"


class Kellnr:
    def __init__(self, binary, log):
        if not os.access(binary, os.X_OK):
            sys.exit(f"error: no kellnr binary at {binary}")
        self.binary, self.log = os.path.abspath(binary), log
        self.label = f"kellnr {kellnr_version(binary)}"

    def start(self, work, tag):
        port = free_port()
        data = os.path.join(work, f"kellnr-{tag}")
        self.token = secrets.token_hex(16)
        proc = kellnr_start(self.binary, data, port, admin_token=self.token, log=self.log)
        return proc, port, data

    def index_path(self, name):
        return f"/api/v1/crates/{name[:2]}/{name[2:4]}/{name}"


def main():
    ap = argparse.ArgumentParser(description="publishes to palletizer (and kellnr)")
    ap.add_argument("palletizer", nargs="?", default=os.environ.get("PALLETIZER_BIN", os.path.join(ROOT, "target/release")))
    ap.add_argument("--kellnr", default=os.environ.get("KELLNR"))
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("PUB_ROUNDS", 3)))
    ap.add_argument("--crates", type=int, default=int(os.environ.get("PUB_CRATES", 300)))
    ap.add_argument("--clients", type=int, default=int(os.environ.get("PUB_CLIENTS", 8)))
    args = ap.parse_args()
    os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
    servers = [Palletizer(args.palletizer)]
    if args.kellnr:
        log = os.path.join(ROOT, "target/bench-publish-kellnr.log")
        open(log, "w").close()
        servers.append(Kellnr(args.kellnr, log))
    names = [f"pubbench{i:04d}" for i in range(args.crates)]
    first = [publish_body(n, "1.0.0") for n in names]
    second = [publish_body(n, "1.0.1") for n in names]

    work = tempfile.mkdtemp(prefix="bench-publish")
    rows = []  # (label, round, seq median ms, seq p90 ms, conc publishes/s, conc median ms, VmHWM KiB)
    try:
        for r in range(args.rounds):
            for s in (servers if r % 2 == 0 else servers[::-1]):
                proc, port, state = s.start(work, r)
                try:
                    seq = sequential(port, first, s.token)
                    wall, conc = concurrent(port, second, s.token, args.clients)
                    hwm = status(proc.pid)
                    for n in (names[0], names[len(names) // 2], names[-1]):
                        lines = index_lines(port, s.index_path(n))
                        if lines != 2:
                            raise RuntimeError(f"{s.label}: the index of {n} has {lines} lines, not 2")
                finally:
                    stop(proc)
                shutil.rmtree(state, ignore_errors=True)
                q = statistics.quantiles(seq, n=10)
                row = (s.label, r, statistics.median(seq) * 1000, q[8] * 1000, len(second) / wall,
                       statistics.median(conc) * 1000, hwm)
                rows.append(row)
                print(f"round {r + 1}: {s.label}: sequential median {row[2]:.1f} ms (p90 {row[3]:.1f}), "
                      f"{args.clients} clients {row[4]:.0f}/s (median {row[5]:.1f} ms), VmHWM {hwm} KiB",
                      file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = lambda label, i: statistics.median(row[i] for row in rows if row[0] == label)
    table = (f"{args.crates} tiny crates published to a new registry: one after another on one keep-alive "
             f"connection (new crates), then the same crates' next version from {args.clients} concurrent "
             f"clients; medians of {args.rounds} rounds, the order alternated\n\n"
             f"| server | sequential median ms | sequential p90 ms | {args.clients} clients publishes/s "
             f"| {args.clients} clients median ms | VmHWM KiB |\n|---|---|---|---|---|---|\n")
    for s in servers:
        table += (f"| {s.label} | {med(s.label, 2):.1f} | {med(s.label, 3):.1f} | {med(s.label, 4):.0f} "
                  f"| {med(s.label, 5):.1f} | {med(s.label, 6):.0f} |\n")
    print(table)
    open(os.path.join(ROOT, "target/bench-publish.md"), "w").write(table)
    with open(os.path.join(ROOT, "target/bench-publish.tsv"), "w") as f:
        f.write("server\tround\tseq_median_ms\tseq_p90_ms\tconc_per_s\tconc_median_ms\tvmhwm_kib\n")
        for row in rows:
            f.write("\t".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + "\n")


if __name__ == "__main__":
    main()
