#!/usr/bin/env python3
"""The git index at scale: full-clone and incremental-fetch server time against history
length, and a publish's time while 16 full clones run, for one or more palletizer builds
side by side (e.g. the build before a change and after).

    python3 benches/gitscale.py [--sizes 100,2000,20000] NAME=PATH/TO/palletizer ...

Each size makes an index with that many crates, one commit per crate (the history those
publishes make), written with `git fast-import`, then for each build:
- full clone: the server CPU time (utime+stime of the server process) of a `git clone`,
  first (nothing kept) and then the median of the next 5;
- incremental fetch: one publish, then `git fetch` in an existing clone: server CPU time
  and the request time the server logs for the final upload-pack round;
- publish under load: a publish's round trip alone, then while 16 `git clone`s run (the
  clients at nice 19, standing in for other machines).
Needs git and 127.0.0.1 only. Prints a Markdown table.
"""
import gzip, io, json, os, random, re, shutil, socket, struct, subprocess, sys, tarfile
import tempfile, threading, time

def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return int(parts[11]) + int(parts[12])

HZ = os.sysconf("SC_CLK_TCK")

def index_path(name):
    if len(name) <= 2: return f"{len(name)}/{name}"
    if len(name) == 3: return f"3/{name[0]}/{name}"
    return f"{name[:2]}/{name[2:4]}/{name}"

def history(repo, n, url):
    subprocess.run(["git", "init", "-q", repo], check=True)
    cfg = json.dumps({"dl": f"{url}/api/v1/crates", "api": url}).encode() + b"\n"
    out = io.BytesIO()
    w = out.write
    w(b"commit refs/heads/master\ncommitter p <p@l> 1700000000 +0000\ndata 4\ninit\n")
    w(b"M 100644 inline config.json\ndata %d\n" % len(cfg) + cfg + b"\n")
    rnd = random.Random(n)
    for i in range(n):
        name = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(4, 12))) + f"-{i}"
        line = json.dumps({"name": name, "vers": "1.0.0", "deps": [], "cksum": "%064x" % i,
                           "features": {}, "yanked": False}).encode() + b"\n"
        w(b"commit refs/heads/master\ncommitter p <p@l> %d +0000\ndata 10\nadd %05d\n" % (1700000000 + i, i))
        w(b"M 100644 inline " + index_path(name).encode() + b"\ndata %d\n" % len(line) + line + b"\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=out.getvalue(), check=True)
    subprocess.run(["git", "reset", "-q", "--hard", "master"], cwd=repo, check=True)

def crate_file(name, vers):
    manifest = f'[package]\nname = "{name}"\nversion = "{vers}"\nedition = "2021"\n'.encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for path, data in [("Cargo.toml", manifest), ("src/lib.rs", b"")]:
            info = tarfile.TarInfo(f"{name}-{vers}/{path}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)

def publish(addr, name):
    meta = json.dumps({"name": name, "vers": "1.0.0", "deps": [], "features": {}, "authors": [],
                       "description": "d", "license": "MIT"}).encode()
    krate = crate_file(name, "1.0.0")
    body = struct.pack("<I", len(meta)) + meta + struct.pack("<I", len(krate)) + krate
    start = time.monotonic()
    with socket.create_connection(addr, timeout=120) as c:
        c.sendall(b"PUT /api/v1/crates/new HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        reply = b""
        while chunk := c.recv(65536):
            reply += chunk
    took = time.monotonic() - start
    assert b" 200 " in reply.split(b"\r\n", 1)[0], reply[:300]
    return took

class Server:
    def __init__(self, binary, reg, port):
        self.log = open(os.path.join(reg, "..", f"server-{port}.log"), "w+")
        self.p = subprocess.Popen([binary, "-r", reg, "serve", "--bind", f"127.0.0.1:{port}"],
                                  stdout=subprocess.DEVNULL, stderr=self.log)
        self.addr = ("127.0.0.1", port)
        self.url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                socket.create_connection(self.addr, timeout=1).close(); return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")
    def cpu(self):
        return ticks(self.p.pid) / HZ
    def quiet(self):
        """Waits until the server has used no CPU for 300 ms (background work done)."""
        last = self.cpu()
        for _ in range(600):
            time.sleep(0.3)
            now = self.cpu()
            if now == last: return
            last = now
    def last_logged_us(self, pattern):
        self.log.flush()
        lines = [l for l in open(self.log.name) if pattern in l]
        return int(lines[-1].rsplit(" ", 1)[1].rstrip("us\n"))
    def stop(self):
        self.p.terminate(); self.p.wait(timeout=30)

def git(*args, cwd=None):
    subprocess.run(["git", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})

def measure(binary, size, work, port):
    reg = os.path.join(work, f"reg-{port}")
    subprocess.run([binary, "-r", reg, "init", "--url", f"http://127.0.0.1:{port}", "--access", "open"],
                   check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(os.path.join(reg, "index"))
    shutil.copytree(os.path.join(work, f"history-{size}"), os.path.join(reg, "index"), symlinks=True)
    srv = Server(binary, reg, port)
    r = {}
    try:
        clones = []
        for i in range(6):
            dst = os.path.join(work, f"clone-{port}-{i}")
            before = srv.cpu()
            git("clone", "-q", f"{srv.url}/index", dst)
            clones.append(srv.cpu() - before)
            if i: shutil.rmtree(dst)
        r["clone first (CPU ms)"] = clones[0] * 1000
        r["clone next (CPU ms, median)"] = sorted(clones[1:])[2] * 1000
        fetch_cpu, fetch_logged = [], []
        for i in range(5):
            publish(srv.addr, f"fetchprobe{i}")
            srv.quiet()
            before = srv.cpu()
            git("fetch", "-q", cwd=os.path.join(work, f"clone-{port}-0"))
            fetch_cpu.append(srv.cpu() - before)
            fetch_logged.append(srv.last_logged_us("POST /index/git-upload-pack 200") / 1000)
        r["incremental fetch (CPU ms, median)"] = sorted(fetch_cpu)[2] * 1000
        r["incremental fetch (logged ms, median)"] = sorted(fetch_logged)[2]
        idle = sorted(publish(srv.addr, f"idleprobe{i}") for i in range(5))[2]
        r["publish idle (ms)"] = idle * 1000
        srv.quiet()
        # The clients run at the lowest priority: on a real deployment they are other
        # machines, and here their own work (index-pack) would otherwise take the CPU from
        # the server and the publish being measured.
        procs = [subprocess.Popen(["nice", "-n", "19", "git", "clone", "-q", f"{srv.url}/index", os.path.join(work, f"busy-{port}-{i}")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(16)]
        time.sleep(0.3)
        busy = publish(srv.addr, "busyprobe")
        for p in procs: p.wait()
        r["publish during 16 clones (ms)"] = busy * 1000
        for i in range(16): shutil.rmtree(os.path.join(work, f"busy-{port}-{i}"), ignore_errors=True)
    finally:
        srv.stop()
        shutil.rmtree(reg, ignore_errors=True)
        shutil.rmtree(os.path.join(work, f"clone-{port}-0"), ignore_errors=True)
    return r

def main():
    args = sys.argv[1:]
    sizes = [100, 2000, 20000]
    if args and args[0] == "--sizes":
        sizes = [int(s) for s in args[1].split(",")]; args = args[2:]
    builds = [a.split("=", 1) for a in args]
    work = tempfile.mkdtemp(prefix="gitscale-")
    rows = []
    port = 19300
    for size in sizes:
        history(os.path.join(work, f"history-{size}"), size, "http://127.0.0.1:1")
        for name, binary in builds:
            port += 1
            r = measure(binary, size, work, port)
            rows.append((size, name, r))
            print(f"# {size} {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()), file=sys.stderr)
    keys = list(rows[0][2].keys())
    print("| crates (commits) | build | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for size, name, r in rows:
        print(f"| {size} | {name} | " + " | ".join(f"{r[k]:.1f}" for k in keys) + " |")
    shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
