"""What benches/mirror.py and benches/publish.py share: a free port, a process's memory
figures, and kellnr, a peer registry run beside palletizer to compare the two: one
`kellnr start` on 127.0.0.1 with a data directory of its own (SQLite, the local file
system), configured through its KELLNR_* environment variables. kellnr is not part of this
repository: build it from its crate (`cargo build --release --locked` in the unpacked
kellnr-X.Y.Z.crate) and pass the binary.
"""
import os, signal, socket, subprocess, time, urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def status(pid, key="VmHWM"):
    """A field of /proc/PID/status in KiB (VmHWM: the peak resident set)."""
    for l in open(f"/proc/{pid}/status"):
        if l.startswith(key + ":"):
            return int(l.split()[1])
    return 0


def kellnr_version(binary):
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.split()
    return out[-1] if out else "?"


def kellnr_start(binary, data_dir, port, admin_token=None, index=None, dl=None, api=None, log=None):
    """A kellnr on 127.0.0.1:port, ready for requests. With index (the upstream's sparse
    index URL, ending in /) and dl (its crate download base, ending in /: kellnr asks for
    dl/NAME/VERSION/download) its crates.io proxy is on, under /api/v1/cratesio/. api:
    where it asks for each crate's description and licenses (API/NAME; default crates.io's
    web API; a failure there is logged and skipped).
    admin_token becomes the token of the user `admin` on the first start."""
    os.makedirs(data_dir, exist_ok=True)
    env = dict(os.environ,
               KELLNR_REGISTRY__DATA_DIR=data_dir,
               KELLNR_LOCAL__IP="127.0.0.1",
               KELLNR_LOCAL__PORT=str(port),
               KELLNR_ORIGIN__HOSTNAME="127.0.0.1",
               KELLNR_ORIGIN__PORT=str(port),
               KELLNR_LOG__LEVEL="warn",
               KELLNR_LOG__LEVEL_WEB_SERVER="warn")
    if admin_token:
        env["KELLNR_SETUP__ADMIN_TOKEN"] = admin_token
    if index:
        env.update(KELLNR_PROXY__ENABLED="true", KELLNR_PROXY__INDEX=index, KELLNR_PROXY__URL=dl)
    if api:
        env["KELLNR_PROXY__API"] = api
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen([binary, "start"], env=env, stdout=out, stderr=out, cwd=data_dir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kellnr exited with {proc.returncode}" + (f" (see {log})" if log else ""))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError("kellnr did not answer within 60 s")


def stop(proc):
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
