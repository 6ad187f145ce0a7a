//! Headless Chromium for the tests that need a browser (Debian's `chromium` and
//! `chromium-driver`): one-shot runs (`--dump-dom`, `--screenshot`) and a minimal WebDriver
//! client over chromedriver for pages that need clicks, typing and waiting.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::harness::on_path;

/// How long any browser step may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// `chromium` and `chromedriver` (the test declares it needs them).
pub fn browser() -> (PathBuf, PathBuf) {
    let find = |name| on_path(name).unwrap_or_else(|| panic!("{name} is not on PATH"));
    (find("chromium"), find("chromedriver"))
}

/// Runs chromium headless with `args` and waits for it (bounded); returns stdout.
pub fn chromium(bin: &Path, profile: &Path, args: &[&str]) -> String {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

/// The DOM of `url` after the page's scripts (if any could run) ran.
pub fn dom(bin: &Path, profile: &Path, url: &str) -> String {
    chromium(bin, profile, &["--dump-dom", url])
}

pub fn screenshot(bin: &Path, profile: &Path, url: &str, to: &Path) {
    let arg = format!("--screenshot={}", to.display());
    chromium(bin, profile, &[&arg, "--window-size=1100,900", url]);
    let png = std::fs::read(to).unwrap_or_else(|e| panic!("no screenshot of {url}: {e}"));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{url}: not a PNG");
    if let Some(dir) = std::env::var_os("PALLETIZER_SCREENSHOTS") {
        std::fs::copy(to, Path::new(&dir).join(to.file_name().unwrap())).unwrap();
    }
}

/// A minimal WebDriver client: one JSON request per connection.
pub struct Driver {
    addr: String,
    child: Child,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_json(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> std::io::Result<serde_json::Value> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(DEADLINE))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // By Content-Length: chromedriver may keep the connection open after answering.
    let (_, body) = super::try_read_bytes(&mut c)?;
    Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

impl Driver {
    pub fn start(driver: &Path, chromium: &Path, profile: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = profile.with_extension("log");
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        // Owned by the driver from here, so a failed start still ends chromedriver.
        let mut driver = Driver {
            addr,
            child,
            session: String::new(),
        };
        let addr = driver.addr.clone();
        let start = Instant::now();
        while http_json(&addr, "GET", "/status", None)
            .map(|v| v["value"]["ready"] != true)
            .unwrap_or(true)
        {
            assert!(
                start.elapsed() < DEADLINE,
                "chromedriver did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let v = http_json(&addr, "POST", "/session", Some(caps)).unwrap();
        driver.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        // A form post navigates: an element looked up while the next page is still loading
        // is waited for (a deadline only as the failure condition), not reported missing.
        let path = format!("/session/{}/timeouts", driver.session);
        let timeouts = serde_json::json!({ "implicit": 20_000, "pageLoad": 60_000 });
        driver.call("POST", &path, Some(timeouts)).unwrap();
        driver
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> std::io::Result<serde_json::Value> {
        http_json(&self.addr, method, path, body).map(|v| v["value"].clone())
    }

    pub fn go(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.call("POST", &path, Some(serde_json::json!({ "url": url })))
            .unwrap();
    }

    pub fn get(&self, what: &str) -> String {
        let path = format!("/session/{}/{what}", self.session);
        let v = self.call("GET", &path, None).unwrap();
        v.as_str()
            .unwrap_or_else(|| panic!("{what}: {v}"))
            .to_owned()
    }

    pub fn element(&self, css: &str) -> String {
        let path = format!("/session/{}/element", self.session);
        let body = serde_json::json!({ "using": "css selector", "value": css });
        let v = self.call("POST", &path, Some(body)).unwrap();
        v["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    /// Types `text` into the field `css` and checks that the field holds exactly that (a
    /// page still settling after a navigation could have dropped or doubled keys).
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        let base = format!("/session/{}/element/{element}", self.session);
        let v = self.call(
            "POST",
            &format!("{base}/clear"),
            Some(serde_json::json!({})),
        );
        assert!(v.unwrap().is_null(), "clearing {css}");
        let body = serde_json::json!({ "text": text });
        let v = self
            .call("POST", &format!("{base}/value"), Some(body))
            .unwrap();
        assert!(v.is_null(), "typing into {css}: {v}");
        let v = self
            .call("GET", &format!("{base}/property/value"), None)
            .unwrap();
        assert_eq!(v.as_str(), Some(text), "{css} holds what was typed");
    }

    /// Waits (bounded) until `done`: a click may return before the page it loads.
    pub fn wait_until(&self, what: &str, done: impl Fn(&Driver) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(start.elapsed() < DEADLINE, "never happened: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn click(&self, css: &str) {
        let path = format!(
            "/session/{}/element/{}/click",
            self.session,
            self.element(css)
        );
        self.call("POST", &path, Some(serde_json::json!({})))
            .unwrap();
    }
}
