#!/usr/bin/env python3
"""The crates.io mirror against its upstream: `cargo fetch --locked` of this repository's
own lockfile with a fresh CARGO_HOME, (1) straight from a local upstream, (2) through a
cold mirror, (3) through the warm mirror; and the server's peak resident set (VmHWM)
before and after the cold fetch.

    python3 benches/mirror.py [BIN_DIR]        (default target/release; needs cargo)

The upstream is a local sparse index made from what cargo already has on this machine:
the index lines in ~/.cargo/registry/index/*/.cache and the crate files in
~/.cargo/registry/cache, served by Python's HTTP server (Last-Modified, 304s). Writes the
table to target/bench-mirror.md too.
"""
import glob, http.server, json, os, shutil, socket, subprocess, sys, tempfile, threading, time
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release"))
HOME = os.path.expanduser("~/.cargo/registry")


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


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def upstream_tree(tree, lock):
    n = 0
    for p in lock["package"]:
        if not p.get("source", "").startswith("registry+https://github.com/rust-lang/crates.io-index"):
            continue
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
        n += 1
    return n


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


def status(pid, key="VmHWM"):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith(key + ":"):
            return int(l.split()[1])
    return 0


def vm_hwm(pid):
    return status(pid)


def cargo_fetch(work, name, index):
    home = os.path.join(work, name)
    os.makedirs(home)
    open(os.path.join(home, "config.toml"), "w").write(
        f'[source.crates-io]\nreplace-with = "m"\n\n[source.m]\nregistry = "{index}"\n')
    env = dict(os.environ, CARGO_HOME=home, CARGO_NET_RETRY="0")
    t = time.monotonic()
    subprocess.run(["cargo", "fetch", "--locked", "-q"], cwd=os.path.join(work, "project"), env=env, check=True)
    return time.monotonic() - t


def main():
    pal = os.path.join(BIN, "palletizer")
    if not os.access(pal, os.X_OK):
        sys.exit(f"error: no palletizer in {BIN} (cargo build --release)")
    lock = tomllib.load(open(os.path.join(ROOT, "Cargo.lock"), "rb"))
    work = tempfile.mkdtemp(prefix="bench-mirror")
    server = None
    try:
        tree = os.path.join(work, "upstream")
        up_port, port = free_port(), free_port()
        os.makedirs(tree)
        open(os.path.join(tree, "config.json"), "w").write(json.dumps({"dl": f"http://127.0.0.1:{up_port}/dl"}))
        crates = upstream_tree(tree, lock)
        serve_upstream(tree, up_port)
        proj = os.path.join(work, "project")
        os.makedirs(proj)
        for f in ["Cargo.toml", "Cargo.lock", "build.rs"]:
            shutil.copy(os.path.join(ROOT, f), proj)
        for d in ["src", "benches", "tests"]:
            shutil.copytree(os.path.join(ROOT, d), os.path.join(proj, d))
        reg = os.path.join(work, "reg")
        subprocess.run([pal, "-r", reg, "init", "--url", f"http://127.0.0.1:{port}", "--access", "open"],
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(reg, "palletizer.toml"), "a") as f:
            f.write(f'\n[mirror]\nupstream = "sparse+http://127.0.0.1:{up_port}/"\n')
        server = subprocess.Popen([pal, "-r", reg, "serve", "--bind", f"127.0.0.1:{port}", "-q"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        mirror = f"sparse+http://127.0.0.1:{port}/mirror/index/"
        direct = cargo_fetch(work, "home-direct", f"sparse+http://127.0.0.1:{up_port}/")
        before = vm_hwm(server.pid)
        cold = cargo_fetch(work, "home-cold", mirror)
        after = vm_hwm(server.pid)
        anon, file_backed = status(server.pid, "RssAnon"), status(server.pid, "RssFile")
        warm = cargo_fetch(work, "home-warm", mirror)
        table = (f"cargo fetch --locked of {crates} crates.io packages, fresh CARGO_HOME each\n\n"
                 "| run | seconds |\n|---|---|\n"
                 f"| straight from the upstream | {direct:.2f} |\n"
                 f"| through the mirror, cold | {cold:.2f} |\n"
                 f"| through the mirror, warm | {warm:.2f} |\n\n"
                 f"server VmHWM: {before} KiB before the cold fetch, {after} KiB after "
                 f"(then resident: {anon} KiB anonymous, {file_backed} KiB file-backed)\n")
        print(table)
        os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
        open(os.path.join(ROOT, "target/bench-mirror.md"), "w").write(table)
    finally:
        if server:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
