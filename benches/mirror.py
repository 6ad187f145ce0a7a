#!/usr/bin/env python3
"""The crates.io mirror against its upstream, and against kellnr's crates.io proxy:
`cargo fetch --locked` of one lockfile with a fresh CARGO_HOME, (1) straight from the
upstream, (2) through a cold mirror (a new registry), (3) through the warm mirror; and the
server's peak resident set (VmHWM) before and after the cold fetch, and the peaks of its
anonymous and file-backed parts (RssAnon, RssFile) sampled every 10 ms during it.

    python3 benches/mirror.py [BIN_DIR] [--kellnr PATH] [--upstream local|crates.io]
                              [--project repo|300] [--rounds N]

BIN_DIR: where `palletizer` is (default target/release; needs cargo). --kellnr (or env
KELLNR): a kellnr binary, whose crates.io proxy is measured the same way in the same run
(a new data directory for each cold fetch; see benches/kellnr.py).

--upstream (env MIRROR_UPSTREAM): `local` (the default) is a local sparse index made from
what cargo already has on this machine: the index lines in ~/.cargo/registry/index/*/.cache
and the crate files in ~/.cargo/registry/cache, served by Python's HTTP server
(Last-Modified, 304s); missing packages are fetched into those caches first with a plain
`cargo fetch`. `crates.io` is the real one (https://index.crates.io/, crate files from
static.crates.io), for palletizer's mirror and kellnr's proxy alike.

--project (env MIRROR_PROJECT): `repo` is this repository's own lockfile (177 crates.io
packages); `300` is benches/fetch300.lock (304 packages). The default is `300` with
--kellnr, else `repo`.

MIRROR_SETTINGS: lines added to palletizer's [mirror] table (e.g. "fetchers = 16").

--rounds (env MIRROR_ROUNDS; default 3 with --kellnr, else 1): each round measures every
server in turn, the order rotated from round to round; the table gives medians. Writes the
table to target/bench-mirror.md, every measurement to target/bench-mirror.tsv and kellnr's
log to target/bench-mirror-kellnr.log.
"""
import argparse, glob, http.server, json, os, shutil, socket, statistics, subprocess
import sys, tempfile, threading, time
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from benchlib import free_port, kellnr_start, kellnr_version, status, stop  # noqa: E402

HOME = os.path.expanduser("~/.cargo/registry")
CRATES_IO_INDEX = "https://index.crates.io/"
CRATES_IO_DL = "https://static.crates.io/crates/"
TARGET_KIB = 8 * 1024


def index_path(name):
    n = name.lower()
    return {1: f"1/{n}", 2: f"2/{n}", 3: f"3/{n[0]}/{n}"}.get(len(n), f"{n[:2]}/{n[2:4]}/{n}")


def cached_lines(name):
    """The index lines cargo keeps for `name`: after a version byte and a u32, the cache
    key, then (version, line) pairs, each NUL-terminated."""
    for d in glob.glob(f"{HOME}/index/*/.cache"):
        p = os.path.join(d, index_path(name))
        if os.path.exists(p):
            parts = open(p, "rb").read()[5:].split(b"\0")
            return [parts[i] for i in range(2, len(parts) - 1, 2)]
    return None


def crates_io_packages(lock):
    return [p for p in lock["package"]
            if p.get("source", "").startswith("registry+https://github.com/rust-lang/crates.io-index")]


def missing_here(packages):
    return [p for p in packages
            if not cached_lines(p["name"]) or not glob.glob(f"{HOME}/cache/*/{p['name']}-{p['version']}.crate")]


def upstream_tree(tree, packages):
    for p in packages:
        lines = cached_lines(p["name"])
        crate = glob.glob(f"{HOME}/cache/*/{p['name']}-{p['version']}.crate")
        if not lines or not crate:
            sys.exit(f"error: {p['name']} {p['version']} is not in cargo's caches here (run cargo fetch first)")
        dest = os.path.join(tree, index_path(p["name"]))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if not os.path.exists(dest):
            open(dest, "wb").write(b"".join(l + b"\n" for l in lines))
        dl = os.path.join(tree, "dl", p["name"], p["version"], "download")
        os.makedirs(os.path.dirname(dl), exist_ok=True)
        shutil.copy(crate[0], dl)


def serve_upstream(tree, port):
    class H(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def __init__(self, *a, **k):
            super().__init__(*a, directory=tree, **k)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class Peaks:
    """The largest RssAnon and RssFile of a process, read from /proc every 10 ms while in
    the `with`: what its VmHWM was made of."""

    def __init__(self, pid):
        self.pid, self.anon, self.file, self.done = pid, 0, 0, threading.Event()

    def __enter__(self):
        def sample():
            while not self.done.wait(0.01):
                self.anon = max(self.anon, status(self.pid, "RssAnon"))
                self.file = max(self.file, status(self.pid, "RssFile"))
        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


def make_project(work, which):
    proj = os.path.join(work, "project")
    os.makedirs(proj)
    if which == "repo":
        for f in ["Cargo.toml", "Cargo.lock", "build.rs"]:
            shutil.copy(os.path.join(ROOT, f), proj)
        for d in ["src", "benches", "tests"]:
            shutil.copytree(os.path.join(ROOT, d), os.path.join(proj, d))
        return proj, "this repository's Cargo.lock"
    shutil.copy(os.path.join(ROOT, "benches/fetch300.toml"), os.path.join(proj, "Cargo.toml"))
    shutil.copy(os.path.join(ROOT, "benches/fetch300.lock"), os.path.join(proj, "Cargo.lock"))
    os.makedirs(os.path.join(proj, "src"))
    open(os.path.join(proj, "src/lib.rs"), "w").close()
    return proj, "benches/fetch300.lock"


def cargo_fetch(work, proj, name, index):
    """Seconds for `cargo fetch --locked` with a new CARGO_HOME whose crates-io is replaced
    by `index` (None: crates.io itself)."""
    home = os.path.join(work, name)
    os.makedirs(home)
    if index:
        open(os.path.join(home, "config.toml"), "w").write(
            f'[source.crates-io]\nreplace-with = "m"\n\n[source.m]\nregistry = "{index}"\n')
    env = dict(os.environ, CARGO_HOME=home, CARGO_NET_RETRY="0")
    t = time.monotonic()
    subprocess.run(["cargo", "fetch", "--locked", "-q"], cwd=proj, env=env, check=True)
    took = time.monotonic() - t
    shutil.rmtree(home, ignore_errors=True)
    return took


def wait_port(port, proc):
    for _ in range(400):
        if proc.poll() is not None:
            sys.exit(f"error: the server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("error: the server did not start")


class Palletizer:
    label = "palletizer mirror"

    def __init__(self, bin_dir, upstream_index):
        self.pal = os.path.join(bin_dir, "palletizer")
        if not os.access(self.pal, os.X_OK):
            sys.exit(f"error: no palletizer in {bin_dir} (cargo build --release)")
        self.upstream = upstream_index

    def start(self, work, tag):
        port = free_port()
        reg = os.path.join(work, f"reg-{tag}")
        subprocess.run([self.pal, "-r", reg, "init", "--url", f"http://127.0.0.1:{port}", "--access", "open"],
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(reg, "palletizer.toml"), "a") as f:
            f.write(f'\n[mirror]\nupstream = "sparse+{self.upstream}"\n{os.environ.get("MIRROR_SETTINGS", "")}\n')
        proc = subprocess.Popen([self.pal, "-r", reg, "serve", "--bind", f"127.0.0.1:{port}", "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, proc)
        return proc, f"sparse+http://127.0.0.1:{port}/mirror/index/", reg


class Kellnr:
    def __init__(self, binary, upstream_index, upstream_dl, upstream_api, log):
        if not os.access(binary, os.X_OK):
            sys.exit(f"error: no kellnr binary at {binary}")
        self.binary, self.index, self.dl, self.api, self.log = binary, upstream_index, upstream_dl, upstream_api, log
        self.label = f"kellnr {kellnr_version(binary)} proxy"

    def start(self, work, tag):
        port = free_port()
        data = os.path.join(work, f"kellnr-{tag}")
        proc = kellnr_start(self.binary, data, port, index=self.index, dl=self.dl, api=self.api, log=self.log)
        return proc, f"sparse+http://127.0.0.1:{port}/api/v1/cratesio/", data


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description="cargo fetch through palletizer's mirror (and kellnr's proxy)")
    ap.add_argument("bin_dir", nargs="?", default=os.path.join(ROOT, "target/release"))
    ap.add_argument("--kellnr", default=os.environ.get("KELLNR"))
    ap.add_argument("--upstream", choices=["local", "crates.io"], default=os.environ.get("MIRROR_UPSTREAM", "local"))
    ap.add_argument("--project", choices=["repo", "300"], default=os.environ.get("MIRROR_PROJECT"))
    ap.add_argument("--rounds", type=int, default=os.environ.get("MIRROR_ROUNDS"))
    args = ap.parse_args()
    project = args.project or ("300" if args.kellnr else "repo")
    rounds = int(args.rounds or (3 if args.kellnr else 1))

    work = tempfile.mkdtemp(prefix="bench-mirror")
    try:
        proj, lock_name = make_project(work, project)
        packages = crates_io_packages(tomllib.load(open(os.path.join(proj, "Cargo.lock"), "rb")))
        if args.upstream == "local":
            if missing_here(packages):
                print(f"filling cargo's caches for {lock_name} (cargo fetch --locked)", file=sys.stderr)
                subprocess.run(["cargo", "fetch", "--locked", "-q"], cwd=proj, check=True)
            tree = os.path.join(work, "upstream")
            up_port = free_port()
            os.makedirs(tree)
            open(os.path.join(tree, "config.json"), "w").write(json.dumps({"dl": f"http://127.0.0.1:{up_port}/dl"}))
            upstream_tree(tree, packages)
            serve_upstream(tree, up_port)
            index, dl = f"http://127.0.0.1:{up_port}/", f"http://127.0.0.1:{up_port}/dl/"
            api = f"http://127.0.0.1:{up_port}/api/"  # a 404 at once: kellnr goes on without it
            upstream_name = "a local upstream (Python's HTTP server)"
        else:
            index, dl, api = CRATES_IO_INDEX, CRATES_IO_DL, None
            upstream_name = f"crates.io ({CRATES_IO_INDEX})"
        servers = [Palletizer(os.path.abspath(args.bin_dir), index)]
        if args.kellnr:
            os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
            log = os.path.join(ROOT, "target/bench-mirror-kellnr.log")
            open(log, "w").close()
            servers.append(Kellnr(os.path.abspath(args.kellnr), index, dl, api, log))
        direct_index = f"sparse+{index}" if args.upstream == "local" else None

        rows = []  # (label, round, cold, warm, hwm_before, hwm_after, peak anon, peak file, anon after)
        for r in range(rounds):
            order = ["direct"] + servers
            k = r % len(order)
            order = order[k:] + order[:k]
            for s in order:
                if s == "direct":
                    t = cargo_fetch(work, proj, f"home-direct-{r}", direct_index)
                    rows.append(("straight from the upstream", r, t, None, None, None, None, None, None))
                    print(f"round {r + 1}: straight {t:.2f} s", file=sys.stderr)
                    continue
                proc, mirror, state = s.start(work, r)
                try:
                    before = status(proc.pid)
                    with Peaks(proc.pid) as peaks:
                        cold = cargo_fetch(work, proj, f"home-cold-{r}", mirror)
                    after, anon = status(proc.pid), status(proc.pid, "RssAnon")
                    warm = cargo_fetch(work, proj, f"home-warm-{r}", mirror)
                finally:
                    stop(proc)
                shutil.rmtree(state, ignore_errors=True)
                rows.append((s.label, r, cold, warm, before, after, peaks.anon, peaks.file, anon))
                print(f"round {r + 1}: {s.label} cold {cold:.2f} s, warm {warm:.2f} s, "
                      f"VmHWM {before} -> {after} KiB", file=sys.stderr)

        labels = ["straight from the upstream"] + [s.label for s in servers]
        med = lambda label, i: median([row[i] for row in rows if row[0] == label and row[i] is not None])
        fmt = lambda v, f: "" if v != v else format(v, f)
        table = (f"cargo fetch --locked of {len(packages)} crates.io packages ({lock_name}) from "
                 f"{upstream_name}, a fresh CARGO_HOME for each fetch and a new registry (empty cache) "
                 f"for each cold one; " +
                 (f"medians of {rounds} rounds, the order rotated each round\n\n" if rounds > 1 else "one round\n\n") +
                 "| through | cold s | warm s | VmHWM before cold KiB | VmHWM after cold KiB "
                 "| peak RssAnon KiB | peak RssFile KiB | RssAnon after KiB |\n"
                 "|---|---|---|---|---|---|---|---|\n")
        for label in labels:
            cols = [fmt(med(label, 2), ".2f"), fmt(med(label, 3), ".2f")] + [fmt(med(label, i), ".0f") for i in range(4, 9)]
            table += f"| {label} | " + " | ".join(cols) + " |\n"
        if rounds > 1:
            table += "\nper round, cold s: " + "; ".join(
                f"{label} " + " ".join(f"{row[2]:.2f}" for row in rows if row[0] == label) for label in labels) + "\n"
        pal = servers[0].label
        hwm = med(pal, 5)
        table += f"\ntarget: palletizer VmHWM after the cold fetch <= {TARGET_KIB} KiB: " \
                 f"{'met' if hwm <= TARGET_KIB else 'NOT met'} ({hwm:.0f} KiB)\n"
        if args.kellnr:
            mine, theirs = med(pal, 2), med(servers[1].label, 2)
            table += f"target: palletizer cold fetch <= kellnr's: {'met' if mine <= theirs else 'NOT met'} " \
                     f"({mine:.2f} s against {theirs:.2f} s)\n"
        print(table)
        os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
        open(os.path.join(ROOT, "target/bench-mirror.md"), "w").write(table)
        with open(os.path.join(ROOT, "target/bench-mirror.tsv"), "w") as f:
            f.write("server\tround\tcold_s\twarm_s\thwm_before_kib\thwm_after_kib\tpeak_rss_anon_kib\tpeak_rss_file_kib\trss_anon_after_kib\n")
            for row in rows:
                f.write("\t".join("" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)) for v in row) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
