//! Load and memory bench: palletizer-server against nginx (one worker, when installed) and
//! axum on tokio (current-thread and multi-thread), serving the same generated registry
//! with the same headers, driven in turn by the same load generator (wrk); palletizer and
//! nginx also over TLS (the same certificate), where new connections (full handshakes) per
//! second are measured too. palletizer runs with its default limits, except the per-peer
//! request rate, raised out of wrk's reach (every request from 127.0.0.1 is one peer's): it
//! is still checked on every request, and never met. A build from before that setting
//! existed refuses it and is started again without it.
//!
//! `cargo bench --bench load` — settings through the environment:
//! - `BENCH_SECS` (default 4): seconds per scenario and system;
//! - `BENCH_ROUNDS` (default 3): rounds over all scenarios; the table shows medians;
//! - `BENCH_CRATES` (default 2000): crates in the generated registry (5 versions each);
//! - `BENCH_OUT` (default `target/bench-load.md`): where the Markdown table is written;
//!   the charts go beside it (`bench-throughput.svg`, `bench-memory.svg`);
//! - `BENCH_SERVER`: a palletizer-server binary to measure instead of the bench build
//!   (for example the static build the README describes);
//! - `BENCH_BASELINE`: another palletizer-server binary whose memory (idle, per plain and
//!   per TLS connection) is measured beside it, for before/after in one run;
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
use std::sync::Arc;
use std::time::{Duration, Instant};

use palletizer::registry::testing::{commit_all, index_path, noise, publish_body, simple_crate};
use palletizer::registry::{canonical, CrateName, InitOptions, Registry, Version};

/// Scenarios over plain HTTP.
const PLAIN: [&str; 5] = [
    "index c10",
    "index c256",
    "20K c10",
    "1M c10",
    "index c1000",
];
/// Scenarios over TLS; "new conns c10" sends `Connection: close`, so every request pays a
/// TCP connect and a full handshake.
const TLS: [&str; 3] = ["index c10", "1M c10", "new conns c10"];
/// Every scenario, in the order they run and are shown.
const ALL: [&str; 6] = [
    "index c10",
    "index c256",
    "20K c10",
    "1M c10",
    "index c1000",
    "new conns c10",
];
/// Idle connections held for the memory measurement, opened in steps.
const IDLE_CONNS: usize = 1000;
/// How long a server sits with no connection before its idle memory is sampled.
const IDLE_AFTER: Duration = Duration::from_secs(2);
const IDLE_STEP: usize = 100;

/// A server under test.
struct System {
    name: String,
    /// Served over TLS (wrk and the memory clients speak https).
    tls: bool,
    /// Only memory is measured (a baseline build).
    memory_only: bool,
    start: Starter,
}

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
    // Before any server starts: a server reads the registry's tokens when it starts.
    let token = publish_token(&root);
    let lua = work.path().join("roundrobin.lua");
    fs::write(&lua, LUA).unwrap();
    let certs = Certs::new(work.path());
    let client = certs.client();

    let server_bin = std::env::var("BENCH_SERVER")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_palletizer-server").into());
    let mut systems: Vec<System> = Vec::new();
    let nginx = Command::new("nginx").arg("-v").output().is_ok();
    // Interleaved: each plain system beside its TLS twin.
    for tls in [false, true] {
        systems.push(palletizer_system(
            "palletizer",
            &server_bin,
            &root,
            work.path(),
            &certs,
            tls,
            false,
        ));
        if nginx {
            let (root, run, certs) = (
                root.clone(),
                work.path().join(if tls { "nginx-tls" } else { "nginx" }),
                certs.clone(),
            );
            systems.push(System {
                name: name("nginx-w1", tls),
                tls,
                memory_only: false,
                start: Box::new(move |port| start_nginx(&root, &run, port, tls.then_some(&certs))),
            });
        }
    }
    for mode in ["ct", "mt"] {
        let root_a = root.clone();
        let name = if mode == "ct" {
            "axum-current-thread"
        } else {
            "axum-multi-thread"
        };
        systems.push(System {
            name: name.into(),
            tls: false,
            memory_only: false,
            start: Box::new(move |port| start_axum(&root_a, port, mode)),
        });
    }
    if let Ok(bin) = std::env::var("BENCH_BASELINE") {
        for tls in [false, true] {
            systems.push(palletizer_system(
                "palletizer-baseline",
                &bin,
                &root,
                work.path(),
                &certs,
                tls,
                true,
            ));
        }
    }

    // Every system runs at once on its own port (an idle server costs nothing), and each
    // scenario drives them in turn, round after round: a burst of noise from other tenants
    // of the machine then hits all systems alike, and the medians over rounds smooth it.
    let mut running = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    for sys in &systems {
        eprintln!("== {}: memory", sys.name);
        let port = free_port();
        let child = (sys.start)(port);
        let tls = sys.tls.then_some(&client);
        wait_ready(port, tls);
        // Idle: two seconds after the last connection closed (palletizer gives back the
        // code pages it ran once it has had no connection for a second).
        std::thread::sleep(IDLE_AFTER);
        let pid = child.id();
        let mut row = Row {
            name: sys.name.clone(),
            tls: sys.tls,
            idle_rss: mem(pid).rss,
            ..Default::default()
        };
        // Connections are measured from a server that has just served, as it is when
        // clients come: what serving maps back in is not counted as theirs.
        wait_ready(port, tls);
        std::thread::sleep(Duration::from_millis(300));
        // Per-connection memory: idle keep-alive connections that each carried a request
        // (over TLS: after a full handshake), VmRSS sampled as they open.
        let mut conns = Vec::new();
        row.rss_by_conns.push((0, mem(pid).rss));
        while conns.len() < IDLE_CONNS {
            conns.extend(idle_connections(port, tls, IDLE_STEP, "/index/config.json"));
            std::thread::sleep(Duration::from_millis(100));
            row.rss_by_conns.push((conns.len(), mem(pid).rss));
        }
        std::thread::sleep(Duration::from_millis(300));
        let after = mem(pid).rss;
        row.kib_per_conn = (after as f64 - row.rss_by_conns[0].1 as f64) / IDLE_CONNS as f64;
        row.hwm_idle_conns = mem(pid).hwm;
        drop(conns);
        // Ten concurrent 1 MiB downloads.
        parallel_downloads(port, tls, &lists.big_paths, 10, 3);
        row.hwm_downloads = mem(pid).hwm;
        if sys.memory_only {
            let mut child = child;
            row.hwm_after = row.hwm_downloads;
            row.threads = mem(pid).threads;
            let _ = child.kill();
            let _ = child.wait();
            rows.push(row);
            continue;
        }
        wrk(port, sys.tls, &lua, &lists.index, 10, 1, false); // warm-up
        rows.push(row);
        running.push((rows.len() - 1, child, port));
    }
    for round in 0..rounds {
        for label in ALL {
            for (i, child, port) in &running {
                let row = &mut rows[*i];
                if !row.scenarios().contains(&label) {
                    continue;
                }
                let (list, conns, close) = match label {
                    "index c10" => (&lists.index, 10, false),
                    "index c256" => (&lists.index, 256, false),
                    "index c1000" => (&lists.index, 1000, false),
                    "20K c10" => (&lists.small, 10, false),
                    "1M c10" => (&lists.big, 10, false),
                    _ => (&lists.index, 10, true),
                };
                let pid = child.id();
                let cpu0 = cpu_us(pid);
                let r = wrk(*port, row.tls, &lua, list, conns, secs, close);
                let cpu = cpu_us(pid) - cpu0;
                eprintln!(
                    "   round {round} {label} {}: {:.0} req/s {:.1} MB/s p50 {} us p99 {} us, {:.1} us CPU/req",
                    row.name,
                    r.rps,
                    r.mbps,
                    r.p50,
                    r.p99,
                    cpu / r.requests.max(1) as f64
                );
                row.samples
                    .entry(label.to_string())
                    .or_default()
                    .push((r, cpu));
            }
        }
    }
    for (i, mut child, port) in running {
        let pid = child.id();
        let row = &mut rows[i];
        for (label, runs) in &row.samples {
            let mut runs = runs.clone();
            runs.sort_by(|a, b| a.0.rps.total_cmp(&b.0.rps));
            row.results
                .insert(label.clone(), runs[runs.len() / 2].clone());
        }
        if row.name == "palletizer" {
            row.publish = Some(publish_loop(port, pid, &token));
        }
        let m = mem(pid);
        row.hwm_after = m.hwm;
        row.threads = m.threads;
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
    let out = PathBuf::from(std::env::var("BENCH_OUT").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/bench-load.md")
            .display()
            .to_string()
    }));
    fs::write(&out, &md).unwrap();
    let dir = out.parent().unwrap_or(Path::new("."));
    fs::write(dir.join("bench-throughput.svg"), chart::throughput(&rows)).unwrap();
    fs::write(dir.join("bench-memory.svg"), chart::memory(&rows)).unwrap();
    eprintln!(
        "written to {} and the charts bench-throughput.svg, bench-memory.svg beside it",
        out.display()
    );
}

/// palletizer-server from `bin` with its default limits, over TLS or not.
fn palletizer_system(
    base: &str,
    bin: &str,
    root: &Path,
    dir: &Path,
    certs: &Certs,
    tls: bool,
    memory_only: bool,
) -> System {
    let (bin, root, dir, certs) = (
        bin.to_string(),
        root.to_owned(),
        dir.to_owned(),
        certs.clone(),
    );
    System {
        name: name(base, tls),
        tls,
        memory_only,
        start: Box::new(move |port| {
            start_palletizer(&bin, &root, &dir, port, tls.then_some(&certs))
        }),
    }
}

fn name(base: &str, tls: bool) -> String {
    if tls {
        format!("{base} TLS")
    } else {
        base.to_string()
    }
}

/// A self-signed certificate (ECDSA P-256) both TLS servers present, and a client that
/// trusts it.
#[derive(Clone)]
struct Certs {
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

impl Certs {
    fn new(dir: &Path) -> Certs {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        fs::write(&cert, ck.cert.pem()).unwrap();
        fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        Certs {
            cert,
            key,
            der: ck.cert.der().to_vec(),
        }
    }

    fn client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone().into()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// A client connection, plain or TLS.
trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

fn connect(port: u16, tls: Option<&Arc<rustls::ClientConfig>>) -> Box<dyn Conn> {
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    match tls {
        None => Box::new(sock),
        Some(cfg) => {
            let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
            Box::new(rustls::StreamOwned::new(conn, sock))
        }
    }
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
        let rel = index_path(&crate_name);
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
        canonical(v["name"].as_str().unwrap())
    });
    fs::write(root.join("search.jsonl"), lines.join("\n") + "\n").unwrap();
    commit_all(&root.join("index"), "Generated").unwrap();
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
fn wait_ready(port: u16, tls: Option<&Arc<rustls::ClientConfig>>) {
    let start = Instant::now();
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let mut s = connect(port, tls);
            if s.write_all(b"GET /index/config.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
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

/// palletizer-server with its default limits: one listener, TLS when given.
fn start_palletizer(bin: &str, root: &Path, dir: &Path, port: u16, tls: Option<&Certs>) -> Child {
    let cfg = dir.join(format!("server-{port}.toml"));
    let tls = tls.map_or(String::new(), |c| {
        format!(
            "tls = {{ private_key = \"{}\", certificate_chain = \"{}\" }}\n",
            c.key.display(),
            c.cert.display()
        )
    });
    let base = format!(
        "registry = \"{}\"\n[[listener]]\nbind = \"127.0.0.1:{port}\"\n{tls}",
        root.display()
    );
    let spawn = |text: &str| {
        fs::write(&cfg, text).unwrap();
        Command::new(bin)
            .arg(&cfg)
            .arg("-q")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = spawn(&format!(
        "{base}[limits]\nrequests-per-second = 100000000\nrequest-burst = 100000000\n"
    ));
    std::thread::sleep(Duration::from_millis(300));
    if child.try_wait().unwrap().is_some() {
        // A build without the setting refuses the config at once.
        child = spawn(&base);
    }
    child
}

fn start_nginx(root: &Path, run: &Path, port: u16, tls: Option<&Certs>) -> Child {
    fs::create_dir_all(run).unwrap();
    // Session tickets and a shared session cache are nginx's usual TLS setup; the bench's
    // clients (wrk, the memory clients) open fresh sessions either way.
    let (ssl, ssl_conf) = match tls {
        None => ("", String::new()),
        Some(c) => (
            " ssl",
            format!(
                "ssl_certificate {}; ssl_certificate_key {}; ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:1m;",
                c.cert.display(),
                c.key.display()
            ),
        ),
    };
    let conf = format!(
        "worker_processes 1; daemon off; master_process on; pid {run}/nginx.pid; error_log {run}/error.log warn;\n\
         worker_rlimit_nofile 65536; events {{ worker_connections 8192; use epoll; }}\n\
         http {{ types {{ application/json json; }} default_type application/octet-stream; access_log off;\n\
         sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_timeout 65s; keepalive_requests 10000000;\n\
         open_file_cache max=20000 inactive=60s; open_file_cache_valid 60s;\n\
         client_body_temp_path {run}/body; proxy_temp_path {run}/proxy; fastcgi_temp_path {run}/fcgi;\n\
         uwsgi_temp_path {run}/uwsgi; scgi_temp_path {run}/scgi;\n\
         server {{ listen 127.0.0.1:{port}{ssl} backlog=4096; {ssl_conf} root {root}; location / {{ }} }} }}\n",
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

/// `n` kept-alive connections that each carried one request (over TLS: after a full
/// handshake) and now sit idle.
fn idle_connections(
    port: u16,
    tls: Option<&Arc<rustls::ClientConfig>>,
    n: usize,
    path: &str,
) -> Vec<Box<dyn Conn>> {
    (0..n)
        .map(|_| {
            let mut s = connect(port, tls);
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
                .unwrap();
            read_response(&mut s);
            s
        })
        .collect()
}

/// Reads one response with a Content-Length body; returns (status, body length).
fn read_response(s: &mut impl Read) -> (u16, usize) {
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

fn parallel_downloads(
    port: u16,
    tls: Option<&Arc<rustls::ClientConfig>>,
    paths: &[String],
    n: usize,
    rounds: usize,
) {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let path = paths[i % paths.len()].clone();
            let mut s = connect(port, tls);
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    s.write_all(
                        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
                    )
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
    bytes: f64,
    rps: f64,
    mbps: f64,
    p50: u64,
    p99: u64,
    errors: u64,
}

/// One wrk run; `close` sends `Connection: close`, so every request opens a connection.
fn wrk(
    port: u16,
    tls: bool,
    lua: &Path,
    list: &Path,
    conns: u32,
    secs: u64,
    close: bool,
) -> WrkResult {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{conns}"),
        &format!("-d{secs}s"),
        "--timeout",
        "10s",
    ]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    let scheme = if tls { "https" } else { "http" };
    let out = cmd
        .arg("-s")
        .arg(lua)
        .arg(format!("{scheme}://127.0.0.1:{port}"))
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
        bytes: kv["bytes"],
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

/// A token allowed to publish new crates in the registry at `root` (from the CLI, as an
/// operator would make one).
fn publish_token(root: &Path) -> String {
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_palletizer"))
            .arg("-r")
            .arg(root)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "palletizer {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    cli(&["user", "add", "bench", "--admin"]);
    cli(&[
        "token",
        "create",
        "--user",
        "bench",
        "--scope",
        "publish-new",
    ])
    .trim()
    .to_string()
}

fn publish(port: u16, token: &str, name: &str, vers: &str, extra: &[(&str, &[u8])]) {
    let krate = simple_crate(name, vers, extra);
    let meta = serde_json::json!({"name": name, "vers": vers, "deps": [], "features": {}, "authors": [],
        "description": "bench", "license": "MIT", "keywords": [], "categories": [], "links": null,
        "rust_version": null});
    let body = publish_body(&serde_json::to_vec(&meta).unwrap(), &krate);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(
        format!(
            "PUT /api/v1/crates/new HTTP/1.1\r\nHost: localhost\r\nAuthorization: {token}\r\nContent-Length: {}\r\n\r\n",
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
fn publish_loop(port: u16, pid: u32, token: &str) -> PublishStats {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut lat = Vec::new();
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            s.write_all(b"GET /index/3/a/aax HTTP/1.1\r\nHost: localhost\r\n\r\n")
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
        publish(port, token, &format!("pub-{i}"), "1.0.0", &[]);
    }
    let elapsed = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut lat = reader.join().unwrap();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    let hwm_before_big = mem(pid).hwm;
    let noise = noise(5 << 20);
    publish(port, token, "pub-big", "1.0.0", &[("blob.bin", &noise)]);
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
    let mut child = start_palletizer(bin, &root, work, port, None);
    wait_ready(port, None);
    let startup = t.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let idle = mem(child.id()).rss;
    let mut lat = Vec::new();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for i in 0..21 {
        let q = crate_name((i * 997) % crates);
        let t = Instant::now();
        s.write_all(
            format!("GET /api/v1/crates?q={q}&per_page=10 HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .as_bytes(),
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
    tls: bool,
    idle_rss: u64,
    kib_per_conn: f64,
    /// VmRSS (KiB) as idle connections open: (connections, VmRSS).
    rss_by_conns: Vec<(usize, u64)>,
    hwm_idle_conns: u64,
    hwm_downloads: u64,
    hwm_after: u64,
    threads: u64,
    /// Every round's (wrk result, server CPU µs) per scenario.
    samples: BTreeMap<String, Vec<(WrkResult, f64)>>,
    /// The median round per scenario.
    results: BTreeMap<String, (WrkResult, f64)>,
    publish: Option<PublishStats>,
}

impl Row {
    fn scenarios(&self) -> &'static [&'static str] {
        if self.tls {
            &TLS
        } else {
            &PLAIN
        }
    }

    /// The scenario's headline figure: MB/s for downloads, requests (or connections) per
    /// second otherwise.
    fn figure(&self, key: &str) -> Option<f64> {
        let (w, _) = self.results.get(key)?;
        Some(if key.starts_with("20K") || key.starts_with("1M") {
            w.mbps
        } else {
            w.rps
        })
    }

    /// Server CPU per request, µs.
    fn cpu_per_request(&self, key: &str) -> Option<f64> {
        self.median_over_rounds(key, |w, cpu| cpu / w.requests.max(1) as f64)
    }

    /// Server CPU per MiB sent, µs.
    fn cpu_per_mib(&self, key: &str) -> Option<f64> {
        self.median_over_rounds(key, |w, cpu| cpu / (w.bytes / (1 << 20) as f64).max(1e-9))
    }

    /// The median over the rounds of a figure each round gives: its own median, not the
    /// figure of the round with the median throughput (a round's CPU cost and its
    /// throughput do not move together on a shared machine).
    fn median_over_rounds(&self, key: &str, of: impl Fn(&WrkResult, f64) -> f64) -> Option<f64> {
        let mut all: Vec<f64> = self
            .samples
            .get(key)?
            .iter()
            .map(|(w, cpu)| of(w, *cpu))
            .collect();
        all.sort_by(f64::total_cmp);
        all.get(all.len() / 2).copied()
    }
}

fn mib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 / 1024.0)
}

fn unit(key: &str) -> &'static str {
    if key.starts_with("20K") || key.starts_with("1M") {
        "MB/s"
    } else if key.starts_with("new") {
        "conns/s"
    } else {
        "req/s"
    }
}

fn render(rows: &[Row], scale: &[Scale], secs: u64, rounds: usize, crates: usize) -> String {
    let mut md = String::new();
    let measured: Vec<&Row> = rows.iter().filter(|r| !r.results.is_empty()).collect();
    // Ratios against nginx with one worker, over the same transport.
    let base = |tls: bool| {
        measured
            .iter()
            .find(|r| r.tls == tls && r.name.starts_with("nginx"))
    };
    let cell = |r: &Row, key: &str| -> String {
        let Some(v) = r.figure(key) else {
            return "–".into();
        };
        match base(r.tls).and_then(|b| b.figure(key)) {
            Some(b) if b > 0.0 => format!("{v:.0} ({:.2}x)", v / b),
            _ => format!("{v:.0}"),
        }
    };
    let opt = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1}"));
    let _ = writeln!(
        md,
        "Registry: {crates} crates x 5 versions; {secs} s per scenario and system, median of \
         {rounds} interleaved rounds; wrk -t1 on the same host; palletizer with its default \
         limits; ratios against nginx-w1 over the same transport (TLS rows: against nginx-w1 \
         TLS). \"new conns\": every request on a new connection (`Connection: close`), over \
         TLS a full handshake each.\n"
    );
    let mut header = String::from("| system |");
    let mut rule = String::from("|---|");
    for key in ALL {
        let _ = write!(header, " {key} {} |", unit(key));
        rule.push_str("---|");
    }
    header.push_str(" CPU µs/req index c10 | CPU µs/MiB 1M c10 | errors |");
    rule.push_str("---|---|---|");
    let _ = writeln!(md, "{header}\n{rule}");
    for r in &measured {
        let errors: u64 = r.results.values().map(|(w, _)| w.errors).sum();
        let mut line = format!("| {} |", r.name);
        for key in ALL {
            let _ = write!(line, " {} |", cell(r, key));
        }
        let _ = writeln!(
            md,
            "{line} {} | {} | {errors} |",
            opt(r.cpu_per_request("index c10")),
            opt(r.cpu_per_mib("1M c10")),
        );
    }
    let _ = writeln!(md, "\n| system | latency p50/p99 µs: {} |", ALL.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(ALL.len()));
    for r in &measured {
        let mut line = format!("| {} |", r.name);
        for key in ALL {
            let _ = match r.results.get(key) {
                Some((w, _)) => write!(line, " {}/{} |", w.p50, w.p99),
                None => write!(line, " – |"),
            };
        }
        let _ = writeln!(md, "{line}");
    }
    let _ = writeln!(md, "\n| system | idle VmRSS (2 s after the last connection) | KiB per idle keep-alive conn (1,000, TLS: after a full handshake) | VmHWM after 1,000 idle conns | VmHWM after 10×1 MiB downloads | VmHWM after the run | threads |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for r in rows {
        let after = if r.results.is_empty() {
            "–".into()
        } else {
            mib(r.hwm_after)
        };
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {} | {} | {} | {} |",
            r.name,
            mib(r.idle_rss),
            r.kib_per_conn,
            mib(r.hwm_idle_conns),
            mib(r.hwm_downloads),
            after,
            r.threads
        );
    }
    if let Some(p) = rows.iter().find_map(|r| r.publish.as_ref()) {
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

/// Hand-written SVG charts of a run: no plotting dependency, and the files diff as text.
mod chart {
    use std::fmt::Write as _;

    use super::{unit, Row, ALL};

    const COLORS: [&str; 8] = [
        "#1b6ca8", "#6aa9d8", "#c0392b", "#e8968c", "#7f8c8d", "#b8c2c3", "#27ae60", "#8e44ad",
    ];
    const FONT: &str = "font-family=\"sans-serif\" font-size=\"12\"";

    fn color(i: usize) -> &'static str {
        COLORS[i % COLORS.len()]
    }

    fn esc(s: &str) -> String {
        s.replace('&', "&amp;").replace('<', "&lt;")
    }

    /// One panel per scenario, a horizontal bar per system that ran it, with its value.
    pub fn throughput(rows: &[Row]) -> String {
        let measured: Vec<(usize, &Row)> = rows
            .iter()
            .filter(|r| !r.results.is_empty())
            .enumerate()
            .collect();
        let (label_w, bar_w, bar_h, gap) = (170.0, 300.0, 16.0, 4.0);
        let panel_w = label_w + bar_w + 90.0;
        let cols = 2;
        let mut panels = Vec::new();
        for key in ALL {
            let bars: Vec<(usize, &Row, f64)> = measured
                .iter()
                .filter_map(|&(i, r)| r.figure(key).map(|v| (i, r, v)))
                .collect();
            if !bars.is_empty() {
                panels.push((key, bars));
            }
        }
        let panel_h = |n: usize| 30.0 + n as f64 * (bar_h + gap) + 10.0;
        let row_h: f64 = panels
            .iter()
            .map(|(_, b)| panel_h(b.len()))
            .fold(0.0, f64::max);
        let rows_n = panels.len().div_ceil(cols);
        let (w, h) = (panel_w * cols as f64 + 20.0, row_h * rows_n as f64 + 40.0);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" {FONT}>"
        );
        let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">Throughput per system and scenario (median of the rounds)</text>"
        );
        for (n, (key, bars)) in panels.iter().enumerate() {
            let x0 = 10.0 + (n % cols) as f64 * panel_w;
            let y0 = 40.0 + (n / cols) as f64 * row_h;
            let max = bars.iter().map(|b| b.2).fold(0.0, f64::max).max(1e-9);
            let _ = writeln!(
                s,
                "<text x=\"{x0:.0}\" y=\"{:.0}\" font-weight=\"bold\">{} ({})</text>",
                y0 + 16.0,
                esc(key),
                unit(key)
            );
            for (j, (i, r, v)) in bars.iter().enumerate() {
                let y = y0 + 26.0 + j as f64 * (bar_h + gap);
                let len = bar_w * v / max;
                let _ = writeln!(
                    s,
                    "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{}</text>",
                    x0 + label_w - 6.0,
                    y + bar_h - 4.0,
                    esc(&r.name)
                );
                let _ = writeln!(
                    s,
                    "<rect x=\"{:.0}\" y=\"{y:.0}\" width=\"{len:.1}\" height=\"{bar_h:.0}\" fill=\"{}\"/>",
                    x0 + label_w,
                    color(*i)
                );
                let _ = writeln!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.0}\">{v:.0}</text>",
                    x0 + label_w + len + 4.0,
                    y + bar_h - 4.0
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }

    /// VmRSS against open idle connections, one line per system.
    pub fn memory(rows: &[Row]) -> String {
        let (w, h) = (720.0, 420.0);
        let (left, right, top, bottom) = (70.0, 220.0, 40.0, 50.0);
        let (pw, ph) = (w - left - right, h - top - bottom);
        let max_conns = rows
            .iter()
            .flat_map(|r| r.rss_by_conns.iter().map(|p| p.0))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let max_mib = rows
            .iter()
            .flat_map(|r| r.rss_by_conns.iter().map(|p| p.1 as f64 / 1024.0))
            .fold(1.0, f64::max);
        // A round top for the axis: 5, 10, 20, 25, 50 MiB ...
        let step = [1.0, 2.0, 5.0, 10.0, 20.0, 25.0, 50.0, 100.0]
            .into_iter()
            .find(|s| max_mib / s <= 6.0)
            .unwrap_or(200.0);
        let top_mib = (max_mib / step).ceil() * step;
        let x = |c: f64| left + pw * c / max_conns;
        let y = |m: f64| top + ph - ph * m / top_mib;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" {FONT}>"
        );
        let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">VmRSS against open idle keep-alive connections</text>"
        );
        let mut m = 0.0;
        while m <= top_mib + 1e-9 {
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.0}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{m:.0} MiB</text>",
                left + pw,
                left - 6.0,
                y(m) + 4.0,
                yy = y(m)
            );
            m += step;
        }
        for c in (0..=max_conns as usize).step_by(200) {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.0}\" text-anchor=\"middle\">{c}</text>",
                x(c as f64),
                top + ph + 18.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"middle\">open connections (each after one request; TLS: after a full handshake)</text>",
            left + pw / 2.0,
            h - 10.0
        );
        let _ = writeln!(
            s,
            "<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>"
        );
        for (i, r) in rows.iter().enumerate() {
            let points: Vec<String> = r
                .rss_by_conns
                .iter()
                .map(|&(c, kib)| format!("{:.1},{:.1}", x(c as f64), y(kib as f64 / 1024.0)))
                .collect();
            let dash = if r.tls {
                " stroke-dasharray=\"6 3\""
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash}/>",
                points.join(" "),
                color(i)
            );
            let ly = top + 10.0 + i as f64 * 20.0;
            let lx = left + pw + 15.0;
            let _ = writeln!(
                s,
                "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{:.0}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"2\"{dash}/><text x=\"{:.0}\" y=\"{:.0}\">{} ({:.1} KiB/conn)</text>",
                lx + 22.0,
                color(i),
                lx + 28.0,
                ly + 4.0,
                esc(&r.name),
                r.kib_per_conn
            );
        }
        s.push_str("</svg>\n");
        s
    }
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
