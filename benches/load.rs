//! Load and memory bench: palletizer-server against nginx (one worker, when installed) and
//! axum on tokio (current-thread and multi-thread), serving the same generated registry
//! with the same headers, driven in turn by the same load generator (wrk).
//!
//! `cargo bench --bench load` — settings through the environment:
//! - `BENCH_SECS` (default 4): seconds per scenario and system;
//! - `BENCH_ROUNDS` (default 3): rounds over all scenarios; the table shows medians;
//! - `BENCH_CRATES` (default 2000): crates in the generated registry (5 versions each);
//! - `BENCH_OUT` (default `target/bench-load.md`): where the Markdown table is written;
//! - `BENCH_SERVER`: a palletizer-server binary to measure instead of the bench build
//!   (for example the static build the README describes);
//! - `BENCH_SKIP_SCALE=1`: skip the 100 / 20,000 crate scale runs.
//!
//! Needs `wrk` (Debian: `apt-get install wrk`); nginx is measured when `nginx` is on PATH.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use palletizer::registry::names::Version;
use palletizer::registry::tarball::testing::{noise, publish_body, simple_crate};
use palletizer::registry::{git, index, CrateName, InitOptions, Registry};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--axum") {
        return axum_variant::run(Path::new(&args[2]), args[3].parse().unwrap(), &args[4]);
    }
    raise_fd_limit();
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("the load bench needs wrk: apt-get install wrk");
        std::process::exit(1);
    }
    let secs: u64 = env_or("BENCH_SECS", 4);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let crates: usize = env_or("BENCH_CRATES", 2000);
    let work = tempfile::Builder::new()
        .prefix("palletizer-bench")
        .tempdir()
        .unwrap();
    let root = work.path().join("reg");
    eprintln!(
        "generating a registry of {crates} crates x 5 versions in {}",
        root.display()
    );
    let lists = generate(&root, crates, 5, true);
    let lua = work.path().join("roundrobin.lua");
    fs::write(&lua, LUA).unwrap();

    let mut systems: Vec<(&str, Starter)> = Vec::new();
    let server_bin = std::env::var("BENCH_SERVER")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_palletizer-server").into());
    let root_p = root.clone();
    let cfg_dir = work.path().to_owned();
    let server_bin2 = server_bin.clone();
    systems.push((
        "palletizer",
        Box::new(move |port| start_palletizer(&server_bin2, &root_p, &cfg_dir, port)),
    ));
    if Command::new("nginx").arg("-v").output().is_ok() {
        let root_n = root.clone();
        let run = work.path().join("nginx");
        systems.push((
            "nginx-w1",
            Box::new(move |port| start_nginx(&root_n, &run, port)),
        ));
    }
    for mode in ["ct", "mt"] {
        let root_a = root.clone();
        let name = if mode == "ct" {
            "axum-current-thread"
        } else {
            "axum-multi-thread"
        };
        systems.push((name, Box::new(move |port| start_axum(&root_a, port, mode))));
    }

    let scenarios: [(&str, &Path, u32); 5] = [
        ("index c10", &lists.index, 10),
        ("index c256", &lists.index, 256),
        ("20K c10", &lists.small, 10),
        ("1M c10", &lists.big, 10),
        ("index c1000", &lists.index, 1000),
    ];
    // Every system runs at once on its own port (an idle server costs nothing), and each
    // scenario drives them in turn, round after round: a burst of noise from other tenants
    // of the machine then hits all systems alike, and the medians over rounds smooth it.
    let mut running = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    for (name, start) in &systems {
        eprintln!("== {name}: memory");
        let port = free_port();
        let child = start(port);
        wait_ready(port);
        std::thread::sleep(Duration::from_millis(300));
        let pid = child.id();
        let mut row = Row {
            name: name.to_string(),
            idle_rss: mem(pid).rss,
            ..Default::default()
        };
        // Per-connection memory: 1,000 idle keep-alive connections.
        let before = mem(pid).rss;
        let conns = idle_connections(port, 1000, "/index/config.json");
        std::thread::sleep(Duration::from_millis(300));
        let after = mem(pid).rss;
        row.kib_per_conn = (after as f64 - before as f64) / 1000.0;
        row.hwm_idle_conns = mem(pid).hwm;
        drop(conns);
        // Ten concurrent 1 MiB downloads.
        parallel_downloads(port, &lists.big_paths, 10, 3);
        row.hwm_downloads = mem(pid).hwm;
        wrk(port, &lua, &lists.index, 10, 1); // warm-up
        rows.push(row);
        running.push((child, port));
    }
    let mut samples: Vec<BTreeMap<String, Vec<(WrkResult, f64)>>> =
        vec![BTreeMap::new(); rows.len()];
    for round in 0..rounds {
        for (label, list, conns) in &scenarios {
            for (i, (child, port)) in running.iter().enumerate() {
                let pid = child.id();
                let cpu0 = cpu_us(pid);
                let r = wrk(*port, &lua, list, *conns, secs);
                let cpu = cpu_us(pid) - cpu0;
                eprintln!(
                    "   round {round} {label} {}: {:.0} req/s {:.1} MB/s p50 {} us p99 {} us, {:.1} us CPU/req",
                    rows[i].name,
                    r.rps,
                    r.mbps,
                    r.p50,
                    r.p99,
                    cpu / r.requests.max(1) as f64
                );
                samples[i]
                    .entry(label.to_string())
                    .or_default()
                    .push((r, cpu));
            }
        }
    }
    for (i, (mut child, port)) in running.into_iter().enumerate() {
        let pid = child.id();
        for (label, mut runs) in std::mem::take(&mut samples[i]) {
            runs.sort_by(|a, b| a.0.rps.total_cmp(&b.0.rps));
            let median = runs[runs.len() / 2].clone();
            rows[i].results.insert(label, median);
        }
        if rows[i].name == "palletizer" {
            rows[i].publish = Some(publish_loop(port, pid, &root));
        }
        let m = mem(pid);
        rows[i].hwm_after = m.hwm;
        rows[i].threads = m.threads;
        let _ = child.kill();
        let _ = child.wait();
    }
    let scale = if std::env::var("BENCH_SKIP_SCALE").is_ok() {
        Vec::new()
    } else {
        [100usize, 20_000]
            .iter()
            .map(|&n| scale_run(&server_bin, work.path(), n))
            .collect()
    };
    let md = render(&rows, &scale, secs, rounds, crates);
    println!("\n{md}");
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/bench-load.md")
            .display()
            .to_string()
    });
    fs::write(&out, &md).unwrap();
    eprintln!("written to {out}");
}

/// Starts a system under test on a port.
type Starter = Box<dyn Fn(u16) -> Child>;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on this process with a properly initialized struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

struct Lists {
    index: PathBuf,
    small: PathBuf,
    big: PathBuf,
    big_paths: Vec<String>,
}

/// Names of every length class: 1, 2, 3 and 4+ characters.
fn crate_name(i: usize) -> String {
    const L: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    match i {
        0..=25 => (L[i] as char).to_string(),
        26..=125 => format!("{}{}", L[(i - 26) / 10] as char, L[(i - 26) % 10] as char),
        126..=225 => format!(
            "{}{}{}",
            L[(i - 126) / 10 % 26] as char,
            L[(i - 126) % 10] as char,
            'x'
        ),
        _ => format!("bench-crate-{i}"),
    }
}

/// Writes a registry: index files for every crate, search data, 20 KiB crate files for
/// the first 200 crates and 1 MiB ones for eight `big-N` crates, and the path lists.
fn generate(root: &Path, crates: usize, versions: usize, files: bool) -> Lists {
    let reg = Registry::init(root, InitOptions::for_url("http://127.0.0.1:1")).unwrap();
    let mut index_paths = Vec::new();
    let mut small = Vec::new();
    let mut big = Vec::new();
    let mut search = String::new();
    let blob20: Vec<u8> = (0..20 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let blob1m: Vec<u8> = (0..1 << 20).map(|i| (i * 13 % 251) as u8).collect();
    let write_crate = |name: &str, count: usize, blob: &[u8], list: &mut Vec<String>| {
        let crate_name = CrateName::parse(name).unwrap();
        let mut lines = String::new();
        for v in 0..count {
            let vers = format!("0.{v}.0");
            let line = serde_json::json!({
                "name": name, "vers": vers,
                "deps": [{"name": "serde", "req": "^1.0", "features": ["derive"], "optional": false,
                          "default_features": true, "target": null, "kind": "normal",
                          "registry": "https://github.com/rust-lang/crates.io-index"}],
                "cksum": "0".repeat(64), "features": {"default": ["std"], "std": []}, "yanked": false,
                "pubtime": "2026-01-01T00:00:00Z"
            });
            lines.push_str(&line.to_string());
            lines.push('\n');
            if files && !blob.is_empty() {
                let p = reg.crate_path(&crate_name, &Version::parse(&vers).unwrap());
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(&p, blob).unwrap();
                list.push(format!("/crates/{name}/{name}-{vers}.crate"));
            }
        }
        let rel = index::index_path(&crate_name);
        let p = root.join("index").join(&rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, lines).unwrap();
        rel
    };
    for i in 0..crates {
        let name = crate_name(i);
        let blob: &[u8] = if i < 200 { &blob20 } else { &[] };
        let rel = write_crate(&name, versions, blob, &mut small);
        index_paths.push(format!("/index/{rel}"));
        let _ = writeln!(
            search,
            "{}",
            serde_json::json!({"name": name, "max_version": format!("0.{}.0", versions - 1),
                               "description": format!("Synthetic crate number {i} for benchmarks"), "keywords": []})
        );
    }
    for i in 0..8 {
        write_crate(&format!("big-{i}"), 1, &blob1m, &mut big);
    }
    // search.jsonl is sorted by canonical name.
    let mut lines: Vec<&str> = search.lines().collect();
    lines.sort_by_key(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        palletizer::registry::names::canonical(v["name"].as_str().unwrap())
    });
    fs::write(root.join("search.jsonl"), lines.join("\n") + "\n").unwrap();
    git::commit_all(&root.join("index"), "Generated").unwrap();
    let dir = root.parent().unwrap();
    let write_list = |name: &str, paths: &[String]| {
        let p = dir.join(format!("paths-{name}-{crates}.txt"));
        fs::write(&p, paths.join("\n") + "\n").unwrap();
        p
    };
    Lists {
        index: write_list("index", &index_paths),
        small: write_list("small", &small),
        big: write_list("big", &big),
        big_paths: big,
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the server answers an HTTP request (a bound port alone accepts into the
/// kernel's queue before the server is ready).
fn wait_ready(port: u16) {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            if s.write_all(b"GET /index/config.json HTTP/1.1\r\nHost: x\r\n\r\n")
                .is_ok()
            {
                let mut b = [0u8; 12];
                if s.read_exact(&mut b).is_ok() && &b[9..12] == b"200" {
                    return;
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "server on {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn start_palletizer(bin: &str, root: &Path, dir: &Path, port: u16) -> Child {
    let cfg = dir.join(format!("server-{port}.toml"));
    fs::write(
        &cfg,
        format!(
            "registry = \"{}\"\n[[listener]]\nbind = \"127.0.0.1:{port}\"\n",
            root.display()
        ),
    )
    .unwrap();
    Command::new(bin)
        .arg(&cfg)
        .arg("-q")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn start_nginx(root: &Path, run: &Path, port: u16) -> Child {
    fs::create_dir_all(run).unwrap();
    let conf = format!(
        "worker_processes 1; daemon off; master_process on; pid {run}/nginx.pid; error_log {run}/error.log warn;\n\
         worker_rlimit_nofile 65536; events {{ worker_connections 8192; use epoll; }}\n\
         http {{ types {{ application/json json; }} default_type application/octet-stream; access_log off;\n\
         sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_timeout 65s; keepalive_requests 10000000;\n\
         open_file_cache max=20000 inactive=60s; open_file_cache_valid 60s;\n\
         client_body_temp_path {run}/body; proxy_temp_path {run}/proxy; fastcgi_temp_path {run}/fcgi;\n\
         uwsgi_temp_path {run}/uwsgi; scgi_temp_path {run}/scgi;\n\
         server {{ listen 127.0.0.1:{port} backlog=4096; root {root}; location / {{ }} }} }}\n",
        run = run.display(),
        root = root.display()
    );
    let cfg = run.join("nginx.conf");
    fs::write(&cfg, conf).unwrap();
    Command::new("nginx")
        .args([
            "-e",
            &run.join("error.log").display().to_string(),
            "-c",
            &cfg.display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn start_axum(root: &Path, port: u16, mode: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--axum",
            &root.display().to_string(),
            &port.to_string(),
            mode,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[derive(Default, Clone, Copy)]
struct Mem {
    rss: u64,
    hwm: u64,
    threads: u64,
}

/// A process and its children (nginx's workers).
fn tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(children) = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    pids
}

/// RSS, HWM (KiB) and threads summed over a process and its children.
fn mem(pid: u32) -> Mem {
    let mut m = Mem::default();
    for p in tree(pid) {
        let Ok(status) = fs::read_to_string(format!("/proc/{p}/status")) else {
            continue;
        };
        for line in status.lines() {
            let num = || {
                line.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("VmRSS:") {
                m.rss += num();
            } else if line.starts_with("VmHWM:") {
                m.hwm += num();
            } else if line.starts_with("Threads:") {
                m.threads += num();
            }
        }
    }
    m
}

/// CPU time (user + system) of a process and its children, in µs.
fn cpu_us(pid: u32) -> f64 {
    let pids = tree(pid);
    // SAFETY: sysconf is always safe to call.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    pids.iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|stat| {
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            let f: Vec<&str> = after.split_whitespace().collect();
            (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / hz * 1e6
        })
        .sum()
}

fn idle_connections(port: u16, n: usize, path: &str) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .unwrap();
            read_response(&mut s);
            s
        })
        .collect()
}

/// Reads one response with a Content-Length body; returns (status, body length).
fn read_response(s: &mut TcpStream) -> (u16, usize) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let status: u16 = head[9..12].parse().unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0);
                buf.extend_from_slice(&chunk[..n]);
            }
            return (status, len);
        }
    }
}

fn parallel_downloads(port: u16, paths: &[String], n: usize, rounds: usize) {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let path = paths[i % paths.len()].clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                for _ in 0..rounds {
                    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                        .unwrap();
                    let (status, len) = read_response(&mut s);
                    assert_eq!((status, len), (200, 1 << 20));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[derive(Default, Clone)]
struct WrkResult {
    requests: u64,
    rps: f64,
    mbps: f64,
    p50: u64,
    p99: u64,
    errors: u64,
}

fn wrk(port: u16, lua: &Path, list: &Path, conns: u32, secs: u64) -> WrkResult {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--timeout",
            "10s",
            "-s",
        ])
        .arg(lua)
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("--")
        .arg(list)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("WRKRESULT"))
        .unwrap_or_else(|| panic!("wrk: {text}"));
    let kv: BTreeMap<&str, f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| {
            f.split_once('=')
                .map(|(k, v)| (k, v.parse().unwrap_or(0.0)))
        })
        .collect();
    let secs = kv["duration_us"] / 1e6;
    WrkResult {
        requests: kv["requests"] as u64,
        rps: kv["requests"] / secs,
        mbps: kv["bytes"] / secs / 1e6,
        p50: kv["p50_us"] as u64,
        p99: kv["p99_us"] as u64,
        errors: (kv["connect"] + kv["read"] + kv["write"] + kv["status"] + kv["timeout"]) as u64,
    }
}

const LUA: &str = r#"
local reqs, n, idx = {}, 0, 0
function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then n = n + 1; reqs[n] = wrk.format("GET", line) end
  end
end
function request() idx = idx % n + 1; return reqs[idx] end
function done(s, lat, r)
  local e = s.errors
  io.write(string.format("WRKRESULT requests=%d bytes=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\n",
    s.requests, s.bytes, s.duration, e.connect, e.read, e.write, e.status, e.timeout, lat:percentile(50), lat:percentile(99)))
end
"#;

#[derive(Default)]
struct PublishStats {
    publishes: usize,
    per_sec: f64,
    get_p50_us: u64,
    get_p99_us: u64,
    get_max_us: u64,
    gets: usize,
    hwm_before_big: u64,
    hwm_after_big: u64,
}

fn publish(port: u16, name: &str, vers: &str, extra: &[(&str, &[u8])]) {
    let krate = simple_crate(name, vers, extra);
    let meta = serde_json::json!({"name": name, "vers": vers, "deps": [], "features": {}, "authors": [],
        "description": "bench", "keywords": [], "categories": [], "links": null, "rust_version": null});
    let body = publish_body(&serde_json::to_vec(&meta).unwrap(), &krate);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(
        format!(
            "PUT /api/v1/crates/new HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let (status, _) = read_response(&mut s);
    assert_eq!(status, 200, "publish {name} {vers}");
}

/// Publishes 50 crates one after another while a client keeps fetching index files, then
/// a 5 MiB crate, recording VmHWM around it.
fn publish_loop(port: u16, pid: u32, _root: &Path) -> PublishStats {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut lat = Vec::new();
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            s.write_all(b"GET /index/3/a/aax HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            read_response(&mut s);
            lat.push(t.elapsed().as_micros() as u64);
            std::thread::sleep(Duration::from_millis(1));
        }
        lat
    });
    let n = 50;
    let t = Instant::now();
    for i in 0..n {
        publish(port, &format!("pub-{i}"), "1.0.0", &[]);
    }
    let elapsed = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut lat = reader.join().unwrap();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    let hwm_before_big = mem(pid).hwm;
    let noise = noise(5 << 20);
    publish(port, "pub-big", "1.0.0", &[("blob.bin", &noise)]);
    PublishStats {
        publishes: n,
        per_sec: n as f64 / elapsed.as_secs_f64(),
        get_p50_us: pct(0.5),
        get_p99_us: pct(0.99),
        get_max_us: *lat.last().unwrap(),
        gets: lat.len(),
        hwm_before_big,
        hwm_after_big: mem(pid).hwm,
    }
}

struct Scale {
    crates: usize,
    startup_ms: f64,
    idle_rss: u64,
    search_p50_us: u64,
}

fn scale_run(bin: &str, work: &Path, crates: usize) -> Scale {
    let root = work.join(format!("scale-{crates}"));
    eprintln!("== scale: {crates} crates");
    generate(&root, crates, 3, false);
    let port = free_port();
    let t = Instant::now();
    let mut child = start_palletizer(bin, &root, work, port);
    wait_ready(port);
    let startup = t.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let idle = mem(child.id()).rss;
    let mut lat = Vec::new();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for i in 0..21 {
        let q = crate_name((i * 997) % crates);
        let t = Instant::now();
        s.write_all(
            format!("GET /api/v1/crates?q={q}&per_page=10 HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let (status, _) = read_response(&mut s);
        assert_eq!(status, 200);
        lat.push(t.elapsed().as_micros() as u64);
    }
    lat.sort_unstable();
    let _ = child.kill();
    let _ = child.wait();
    Scale {
        crates,
        startup_ms: startup.as_secs_f64() * 1e3,
        idle_rss: idle,
        search_p50_us: lat[lat.len() / 2],
    }
}

#[derive(Default)]
struct Row {
    name: String,
    idle_rss: u64,
    kib_per_conn: f64,
    hwm_idle_conns: u64,
    hwm_downloads: u64,
    hwm_after: u64,
    threads: u64,
    results: BTreeMap<String, (WrkResult, f64)>,
    publish: Option<PublishStats>,
}

fn mib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 / 1024.0)
}

fn render(rows: &[Row], scale: &[Scale], secs: u64, rounds: usize, crates: usize) -> String {
    let mut md = String::new();
    let base = &rows[0];
    let ratio = |r: &Row, key: &str, f: fn(&WrkResult) -> f64| {
        let v = f(&r.results[key].0);
        let b = f(&base.results[key].0);
        format!("{:.0} ({:.2}x)", v, if b > 0.0 { v / b } else { 0.0 })
    };
    let _ = writeln!(
        md,
        "Registry: {crates} crates x 5 versions; {secs} s per scenario and system, median of \
         {rounds} interleaved rounds; wrk -t1 on the same host; ratios against palletizer.\n"
    );
    let _ = writeln!(md, "| system | index c10 req/s | index c256 req/s | 20 KiB c10 MB/s | 1 MiB c10 MB/s | index c1000 req/s | index c10 p50/p99 µs | server CPU µs/req (index c10) | errors |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let (c10, cpu) = &r.results["index c10"];
        let errors: u64 = r.results.values().map(|(w, _)| w.errors).sum();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {}/{} | {:.1} | {} |",
            r.name,
            ratio(r, "index c10", |w| w.rps),
            ratio(r, "index c256", |w| w.rps),
            ratio(r, "20K c10", |w| w.mbps),
            ratio(r, "1M c10", |w| w.mbps),
            ratio(r, "index c1000", |w| w.rps),
            c10.p50,
            c10.p99,
            cpu / c10.requests.max(1) as f64,
            errors
        );
    }
    let _ = writeln!(
        md,
        "\n| system | latency p50/p99 µs: index c10 | index c256 | 20 KiB c10 | 1 MiB c10 | index c1000 |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for r in rows {
        let lat = |key: &str| {
            let w = &r.results[key].0;
            format!("{}/{}", w.p50, w.p99)
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            r.name,
            lat("index c10"),
            lat("index c256"),
            lat("20K c10"),
            lat("1M c10"),
            lat("index c1000")
        );
    }
    let _ = writeln!(md, "\n| system | idle VmRSS | KiB per idle keep-alive conn | VmHWM after 1,000 idle conns | VmHWM after 10×1 MiB downloads | VmHWM after the run | threads |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {} | {} | {} | {} |",
            r.name,
            mib(r.idle_rss),
            r.kib_per_conn,
            mib(r.hwm_idle_conns),
            mib(r.hwm_downloads),
            mib(r.hwm_after),
            r.threads
        );
    }
    if let Some(p) = &base.publish {
        let _ = writeln!(
            md,
            "\nPublish loop (palletizer): {} publishes at {:.1}/s; meanwhile {} index GETs, p50 {} µs, p99 {} µs, max {} µs. \
             5 MiB crate publish: VmHWM {} before, {} after (+{} KiB).",
            p.publishes,
            p.per_sec,
            p.gets,
            p.get_p50_us,
            p.get_p99_us,
            p.get_max_us,
            mib(p.hwm_before_big),
            mib(p.hwm_after_big),
            p.hwm_after_big.saturating_sub(p.hwm_before_big)
        );
    }
    if !scale.is_empty() {
        let _ = writeln!(
            md,
            "\n| crates in registry | startup to first response | idle VmRSS | search p50 |"
        );
        let _ = writeln!(md, "|---|---|---|---|");
        for s in scale {
            let _ = writeln!(
                md,
                "| {} | {:.1} ms | {} | {} µs |",
                s.crates,
                s.startup_ms,
                mib(s.idle_rss),
                s.search_p50_us
            );
        }
    }
    md
}

/// The framework variant: axum on tokio serving the same trees with the same headers
/// (ETag, Last-Modified, Content-Length, conditional GET), reading files per request.
mod axum_variant {
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::http::{header, HeaderValue, StatusCode};
    use axum::response::Response;

    pub fn run(root: &Path, port: u16, mode: &str) {
        let rt = if mode == "ct" {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let root = root.to_owned();
        rt.block_on(async move {
            let app = axum::Router::new().fallback(serve).with_state(root);
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    }

    async fn serve(State(root): State<PathBuf>, req: Request) -> Response {
        let path = req.uri().path();
        let ok =
            (path.starts_with("/index/") || path.starts_with("/crates/")) && !path.contains("..");
        let not_found = || {
            Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(Body::from("not found"))
                .unwrap()
        };
        if !ok {
            return not_found();
        }
        let file = root.join(&path[1..]);
        let Ok(meta) = tokio::fs::metadata(&file).await else {
            return not_found();
        };
        let etag = format!(
            "\"{:x}-{:x}-{:x}{:09}\"",
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec()
        );
        let modified = httpdate::fmt_http_date(meta.modified().unwrap());
        if req
            .headers()
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes() == etag.as_bytes())
        {
            return Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header(header::ETAG, etag)
                .body(Body::empty())
                .unwrap();
        }
        let Ok(bytes) = tokio::fs::read(&file).await else {
            return not_found();
        };
        let mut r = Response::new(Body::from(bytes));
        let h = r.headers_mut();
        h.insert(header::ETAG, HeaderValue::from_str(&etag).unwrap());
        h.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_str(&modified).unwrap(),
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    }
}
