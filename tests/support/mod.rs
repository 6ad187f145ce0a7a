//! Shared test helpers: running `palletizer` and the real `cargo` in temp dirs, each test
//! with its own `CARGO_HOME`, and copying the test crates from `tests/crates/`.
#![allow(dead_code)]

pub mod browser;
pub mod harness;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The test crates (and versions) that `rich` depends on, directly or as dev-dependencies.
pub const RICH_DEPS: [(&str, &str); 5] = [
    ("leaf", "0.1.0"),
    ("leaf", "0.1.1"),
    ("ab", "1.0.0"),
    ("tgt", "0.3.0"),
    ("devonly", "0.1.0"),
];

/// `cargo publish` of a test crate's folder to registry `local`, without building it.
pub const PUBLISH: [&str; 5] = [
    "publish",
    "--registry",
    "local",
    "--allow-dirty",
    "--no-verify",
];

/// One test's sandbox: a temp dir holding the registry, a `CARGO_HOME` and work dirs.
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
    /// The admin token the zero-config start that created the registry printed.
    token: std::sync::Mutex<Option<String>>,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let tmp = tempfile::Builder::new()
            .prefix("palletizer-test")
            .tempdir()
            .unwrap();
        let s = Sandbox {
            tmp,
            token: Default::default(),
        };
        fs::create_dir_all(s.cargo_home()).unwrap();
        s
    }

    /// The admin token of a registry created by [`Sandbox::serve`] (all scopes).
    pub fn token(&self) -> String {
        self.token
            .lock()
            .unwrap()
            .clone()
            .expect("the registry was not created by a zero-config serve")
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn reg(&self) -> PathBuf {
        self.path().join("reg")
    }

    /// Turns `access = "public"` into `"private"` in `palletizer.toml` by hand, not through
    /// the CLI (no lock taken): a new file renamed over the old one, as editors and `sed -i`
    /// write.
    pub fn make_private_by_hand(&self) {
        let settings = self.reg().join("palletizer.toml");
        let text = fs::read_to_string(&settings).unwrap();
        assert!(text.contains("access = \"public\""), "{text}");
        let tmp = self.reg().join("palletizer.toml.new");
        fs::write(
            &tmp,
            text.replace("access = \"public\"", "access = \"private\""),
        )
        .unwrap();
        fs::rename(&tmp, &settings).unwrap();
    }

    /// Sets `require-description-and-license = false` in `palletizer.toml` (written `true`
    /// by every new registry).
    pub fn stop_requiring_description_and_license(&self) {
        let settings = self.reg().join("palletizer.toml");
        let text = fs::read_to_string(&settings).unwrap();
        let on = "require-description-and-license = true";
        assert!(text.contains(on), "{text}");
        let off = text.replace(on, "require-description-and-license = false");
        fs::write(&settings, off).unwrap();
    }

    /// Waits until `index/config.json` says `auth-required` (the server follows a mode
    /// changed by hand); fails after 30 s.
    pub fn wait_for_private_config(&self) {
        let config = self.reg().join("index/config.json");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !fs::read_to_string(&config).is_ok_and(|c| c.contains("\"auth-required\": true")) {
            assert!(
                std::time::Instant::now() < until,
                "config.json did not follow the access change"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn cargo_home(&self) -> PathBuf {
        self.path().join("cargo-home")
    }

    /// Writes `$CARGO_HOME/config.toml`.
    pub fn cargo_config(&self, text: &str) {
        fs::write(self.cargo_home().join("config.toml"), text).unwrap();
    }

    /// Runs `palletizer -r REG ARGS`.
    pub fn palletizer(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_palletizer"))
            .arg("-r")
            .arg(self.reg())
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs `palletizer` and asserts success; returns stdout.
    pub fn palletizer_ok(&self, args: &[&str]) -> String {
        let out = self.palletizer(args);
        assert!(
            out.status.success(),
            "palletizer {args:?} failed:\n{}",
            show(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs the real cargo in `dir` with this sandbox's `CARGO_HOME`.
    pub fn cargo(&self, dir: &Path, args: &[&str]) -> Output {
        self.cargo_cmd(dir, args).output().unwrap()
    }

    pub fn cargo_cmd(&self, dir: &Path, args: &[&str]) -> Command {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(dir)
            .args(args)
            .env("CARGO_HOME", self.cargo_home())
            .env("CARGO_TARGET_DIR", self.path().join("target"))
            .env("CARGO_NET_RETRY", "0")
            .env("CARGO_TERM_COLOR", "never")
            .env("CARGO_HTTP_MULTIPLEXING", "true")
            .env_remove("CARGO_REGISTRIES_LOCAL_TOKEN")
            .env_remove("RUSTFLAGS");
        cmd
    }

    /// `cargo ARGS` in `dir` against registry `local` with `token`, which must succeed.
    pub fn cargo_as(&self, dir: &Path, args: &[&str], token: &str) -> String {
        let out = self
            .cargo_cmd(dir, args)
            .env("CARGO_REGISTRIES_LOCAL_TOKEN", token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo {args:?} failed:\n{}",
            show(&out)
        );
        show(&out)
    }

    pub fn cargo_ok(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.cargo(dir, args);
        assert!(
            out.status.success(),
            "cargo {args:?} in {} failed:\n{}",
            dir.display(),
            show(&out)
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Copies `tests/crates/NAME` into the sandbox (optionally with another version) and
    /// returns its directory.
    pub fn test_crate(&self, name: &str, version: Option<&str>) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/crates")
            .join(name);
        let label = version
            .map(|v| format!("{name}-{v}"))
            .unwrap_or_else(|| name.to_owned());
        let dst = self.path().join("src").join(label);
        copy_dir(&src, &dst);
        if let Some(v) = version {
            let manifest = dst.join("Cargo.toml");
            let text = fs::read_to_string(&manifest).unwrap();
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            let i = lines
                .iter()
                .position(|l| l.starts_with("version = "))
                .unwrap();
            lines[i] = format!("version = \"{v}\"");
            fs::write(&manifest, lines.join("\n") + "\n").unwrap();
        }
        dst
    }

    /// The index line of version `vers` in the index file `rel` (e.g. `le/af/leaf`).
    pub fn index_line(&self, rel: &str, vers: &str) -> serde_json::Value {
        let text = fs::read_to_string(self.reg().join("index").join(rel)).unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["vers"] == vers)
            .unwrap_or_else(|| panic!("no {vers} in {rel}:\n{text}"))
    }

    /// A consumer project depending on `leaf ^0.1` and `ab ^1` from registry `local`, whose
    /// binary prints both crates' strings.
    pub fn consumer(&self) -> PathBuf {
        let app = self.path().join("consumer");
        fs::create_dir_all(app.join("src")).unwrap();
        fs::write(
            app.join("Cargo.toml"),
            "[package]\nname = \"consumer\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
[dependencies]\nleaf = { version = \"0.1\", registry = \"local\" }\nab = { version = \"1\", registry = \"local\" }\n",
        )
        .unwrap();
        fs::write(
            app.join("src/main.rs"),
            "fn main() { println!(\"{} {}\", leaf::leaf(), ab::ab()); }\n",
        )
        .unwrap();
        app
    }

    /// `cargo package` a test crate for registry `local`; returns the `.crate` path.
    pub fn package(&self, name: &str, version: Option<&str>) -> PathBuf {
        let dir = self.test_crate(name, version);
        let target = dir.join("target");
        let out = self
            .cargo_cmd(
                &dir,
                &[
                    "package",
                    "--no-verify",
                    "--allow-dirty",
                    "--registry",
                    "local",
                ],
            )
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo package {name} failed:\n{}",
            show(&out)
        );
        let text = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let vers = text
            .lines()
            .find_map(|l| l.strip_prefix("version = \""))
            .unwrap()
            .trim_end_matches('"');
        target.join("package").join(format!("{name}-{vers}.crate"))
    }
}

/// Runs `git ARGS` in `dir`, away from the machine's own git configuration: (success, stderr).
pub fn git_in(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn show(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// Every file under `dir` with its bytes, for byte-for-byte comparisons (`.git` included),
/// but the audit log and the download counts at a registry's root: a refused write is
/// meant to leave its line there, and only there.
/// Waits (at most 10 s) for the server's writer to sync the commits it wrote, which it does
/// once no write has come for a moment: the journal (`.pending`) is gone then, and the
/// index's git objects have moved into a pack. A test that compares snapshots of the
/// registry across refused writes takes its first one after this.
pub fn wait_for_checkpoint(reg: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while reg.join(".pending").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never synced its commits"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Every file under `dir` with its bytes. Taken once a running server has synced its last
/// commits (at most 2 s later; a journal a crash left stays as it is), so that the moving of
/// git objects into a pack at its checkpoint does not show as a change.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while [dir.join(".pending"), dir.join("reg/.pending")]
        .iter()
        .any(|p| p.exists())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let logged = ["audit.jsonl", "audit.jsonl.1", "downloads"];
            if dir == base && logged.iter().any(|n| e.file_name() == *n) {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            } else {
                out.push((
                    p.strip_prefix(base).unwrap().to_owned(),
                    fs::read(&p).unwrap(),
                ));
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Bait outside a registry, in `dir`: a file that would parse as an index line, for tests
/// that traversal never reaches or rewrites it.
pub fn index_line_bait(dir: &Path) {
    fs::write(
        dir.join("etc"),
        r#"{"name":"etc","vers":"1.0.0","deps":[],"cksum":"00","features":{}}"#,
    )
    .unwrap();
}

/// Publish metadata as cargo sends it, with a description.
pub fn meta(name: &str, vers: &str, deps: serde_json::Value) -> Vec<u8> {
    meta_with(name, vers, deps, serde_json::json!({}))
}

fn meta_with(
    name: &str,
    vers: &str,
    deps: serde_json::Value,
    features: serde_json::Value,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "name": name, "vers": vers, "deps": deps, "features": features, "authors": [],
        "description": "d", "documentation": null, "homepage": null, "readme": null,
        "readme_file": null, "keywords": [], "categories": [], "license": "MIT",
        "license_file": null, "repository": null, "badges": {}, "links": null, "rust_version": null
    }))
    .unwrap()
}

/// Sends a raw publish with `token` and returns (status, body).
pub fn raw_publish(addr: &str, token: &str, body: &[u8]) -> (u16, String) {
    try_raw_publish(addr, token, body).unwrap()
}

/// [`raw_publish`] that reports a failed or cut connection instead of panicking.
pub fn try_raw_publish(addr: &str, token: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(addr)?;
    c.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let head = format!(
        "PUT /api/v1/crates/new HTTP/1.1\r\nHost: localhost\r\nAuthorization: {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes())?;
    // A server that refuses before taking the whole body may close early: what it
    // answered still counts.
    let _ = c.write_all(body);
    try_read_one(&mut c)
}

/// `PUT /api/v1/crates/{name}/{vers}/docs` with `body` (a docs archive): (status, body).
pub fn put_docs(addr: &str, token: &str, name: &str, vers: &str, body: &[u8]) -> (u16, String) {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "PUT /api/v1/crates/{name}/{vers}/docs HTTP/1.1\r\nHost: localhost\r\nAuthorization: \
         {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    // A server that refuses before taking the whole body may close early.
    let _ = c.write_all(body);
    read_one(&mut c)
}

/// Reads one response: (status, body).
pub fn read_one(c: &mut impl std::io::Read) -> (u16, String) {
    try_read_one(c).unwrap()
}

/// [`read_one`] that reports a connection closed before the whole response as an error.
pub fn try_read_one(c: &mut impl std::io::Read) -> std::io::Result<(u16, String)> {
    let (code, body) = try_read_bytes(c)?;
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

/// The first response in `buf` once it is whole: (status, head length, body length).
pub fn whole_response(buf: &[u8]) -> Option<(u16, usize, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = r.parse(buf) else {
        return None;
    };
    let clen: usize = r
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map_or(0, |h| {
            std::str::from_utf8(h.value).unwrap().parse().unwrap()
        });
    (buf.len() >= len + clen).then_some((r.code.unwrap(), len, clen))
}

/// One response with its body as bytes.
pub fn try_read_bytes(c: &mut impl std::io::Read) -> std::io::Result<(u16, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some((code, len, clen)) = whole_response(&buf) {
            return Ok((code, buf[len..len + clen].to_vec()));
        }
        // A read with a timeout is not restarted after a signal (a stopped and continued
        // process gets EINTR): try again.
        let n = match c.read(&mut chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            n => n?,
        };
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after: {}", String::from_utf8_lossy(&buf)),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `GET path` on a new connection: (status, body bytes).
pub fn get_bytes(addr: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(addr)?;
    c.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    try_read_bytes(&mut c)
}

/// A running `palletizer serve`, killed on drop. Its stderr (the request log) is collected.
pub struct ServerProc {
    pub child: std::process::Child,
    /// `host:port` of each listener, in order.
    pub addrs: Vec<String>,
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServerProc {
    pub fn addr(&self) -> &str {
        &self.addrs[0]
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addrs[0])
    }

    /// The request log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Log lines from index `from` on, once one of them contains `pat` (the server logs a
    /// request after its response went out, so the line may trail the client's view).
    /// Gives up after a few seconds and returns what there is.
    pub fn log_from_with(&self, from: usize, pat: &str) -> Vec<String> {
        self.log_when(from, |lines| lines.iter().any(|l| l.contains(pat)))
    }

    /// Log lines from index `from` on, once `done` holds for them (or after a few seconds).
    pub fn log_when(&self, from: usize, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let lines: Vec<String> = self.log().get(from..).unwrap_or_default().to_vec();
            if done(&lines) || std::time::Instant::now() > until {
                return lines;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0);
    }

    /// Waits for the process to exit (up to `secs`), returning its status.
    pub fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < until {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sandbox {
    /// Starts `palletizer serve ARGS` with the registry in `reg/` (created if missing) and
    /// waits until every listener is up.
    pub fn serve(&self, args: &[&str]) -> ServerProc {
        self.serve_with(args, |_| {})
    }

    /// `backup` of the registry, then `restore` of it into a new folder, which it returns.
    pub fn backup_and_restore(&self) -> PathBuf {
        let file = self.path().join("backup.tar.gz");
        self.palletizer_ok(&["backup", file.to_str().unwrap()]);
        let restored = self.path().join("restored");
        self.palletizer_ok(&[
            "restore",
            file.to_str().unwrap(),
            restored.to_str().unwrap(),
        ]);
        restored
    }

    /// `serve` on a new registry, with `$CARGO_HOME/config.toml` naming it registry `local`
    /// (sparse).
    pub fn serve_for_cargo(&self) -> ServerProc {
        let srv = self.serve(&[]);
        self.cargo_config(&format!(
            "[registries.local]\nindex = \"sparse+{}/index/\"\n[net]\nretry = 0\n",
            srv.url()
        ));
        srv
    }

    /// `serve`, with a chance to adjust the command (limits, environment) first.
    pub fn serve_with(&self, args: &[&str], adjust: impl FnOnce(&mut Command)) -> ServerProc {
        use std::io::BufRead;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_palletizer"));
        cmd.arg("-r").arg(self.reg()).arg("serve").args(args);
        if !args.iter().any(|a| a.ends_with(".toml")) && !args.contains(&"--bind") {
            cmd.args(["--bind", "127.0.0.1:0"]);
        }
        adjust(&mut cmd);
        let creates = !self.reg().join("palletizer.toml").exists();
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (token_tx, token_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(t) = line
                    .trim()
                    .strip_prefix("echo ")
                    .and_then(|l| l.strip_suffix(" | cargo login --registry palletizer"))
                {
                    let _ = token_tx.send(t.to_owned());
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(Some(addr.split_once("://").unwrap().1.to_owned()));
                }
                if line.starts_with("error") {
                    let _ = tx.send(None);
                }
                sink.lock().unwrap().push(line);
            }
            let _ = tx.send(None);
        });
        let mut addrs = Vec::new();
        let expected = match args.iter().find(|a| a.ends_with(".toml")) {
            Some(cfg) => fs::read_to_string(cfg)
                .unwrap()
                .matches("[[listener]]")
                .count(),
            None => 1,
        };
        while addrs.len() < expected {
            match rx.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok(Some(a)) => addrs.push(a),
                _ => panic!("server did not start: {:?}", logs.lock().unwrap()),
            }
        }
        if creates {
            let token = token_rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("a new registry's admin token on stdout");
            *self.token.lock().unwrap() = Some(token);
        }
        ServerProc { child, addrs, logs }
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost: (cert PEM, key PEM).
pub fn self_signed() -> (String, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

// ---------------------------------------------------------------------------------------
// Hostile-client helpers (tests/hostile.rs): many sockets, raw exchanges, config files.
// ---------------------------------------------------------------------------------------

/// Raises this process's soft limit on open files to `want` (as far as the hard limit
/// allows), for tests that hold over a thousand sockets.
pub fn raise_nofile(want: u64) {
    // SAFETY: getrlimit/setrlimit on this process with an initialized struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        if r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
        }
    }
}

impl Sandbox {
    /// Writes `server.toml` serving this sandbox's registry on 127.0.0.1:0 with `limits`
    /// (lines of the `[limits]` table); returns its path.
    pub fn server_config(&self, limits: &str) -> PathBuf {
        let cfg = self.path().join("server.toml");
        fs::write(
            &cfg,
            format!(
                "registry = \"{}\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n[limits]\n{limits}\n",
                self.reg().display()
            ),
        )
        .unwrap();
        cfg
    }
}

/// One response read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits what a server sent into responses. `no_body[i]` marks the i-th as the answer to
/// a HEAD (its `Content-Length` announces a body that must not follow). Panics on bytes
/// that are not a whole response.
pub fn split_responses(mut bytes: &[u8], no_body: &[usize]) -> Vec<RawResponse> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        let len = match r.parse(bytes) {
            Ok(httparse::Status::Complete(len)) => len,
            other => panic!(
                "not a response ({other:?}): {:?}",
                String::from_utf8_lossy(bytes)
            ),
        };
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let status = r.code.unwrap();
        let clen: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let body_len = if no_body.contains(&out.len()) || status == 100 {
            0
        } else {
            clen
        };
        assert!(bytes.len() >= len + body_len, "truncated response");
        out.push(RawResponse {
            status,
            headers,
            body: bytes[len..len + body_len].to_vec(),
        });
        bytes = &bytes[len + body_len..];
    }
    out
}

/// The status code of the first response in `bytes`.
pub fn status_of(bytes: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(bytes);
    let code = text.split(' ').nth(1);
    code.and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not a response: {text}"))
}

/// Sends `raw` on a new connection and reads until the server closes it (or 30 s pass).
pub fn send_until_close(addr: &str, raw: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    c.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    out
}

// ---- Hostile input: raw publishes and a process's peak memory --------------------------------

/// The peak resident set (`VmHWM`) of process `pid`, in KiB.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

/// Publish metadata for `name` `vers` with `features`, as cargo sends it.
pub fn publish_json(name: &str, vers: &str, features: serde_json::Value) -> Vec<u8> {
    meta_with(name, vers, serde_json::json!([]), features)
}
