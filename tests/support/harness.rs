//! The harness of the test files whose tests need a tool or a privilege the machine may lack
//! (`harness = false` in Cargo.toml; libtest-mimic). One rule: a test whose need is missing
//! is reported as ignored, with the reason on its line and in the summary's count, except
//! under `CI=true`, where it fails; a test that must be opted in (it reaches the Internet) is
//! ignored unless it is, under CI too. Filters, `--exact`, `--skip`, `--list`,
//! `--test-threads`, `--nocapture` (and their `RUST_TEST_*` variables) work as with the
//! built-in harness, and a test's output is shown only when it fails.
//!
//! A file lists its tests once, with what each needs:
//! `support::harness::tests!(plain_test, browser_test [Chromium]);`

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;

use libtest_mimic::{Arguments, Completion, Failed, Trial};

/// What a test needs beyond cargo (and git, which most tests take for granted).
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// `git` on `PATH`, for tests about what the git command line does in the index.
    Git,
    /// `chromium` and `chromedriver` on `PATH`.
    Chromium,
    /// `nginx` on `PATH`.
    Nginx,
    /// `promtool` on `PATH`.
    Promtool,
    /// Mounting a tmpfs, which needs root.
    Tmpfs,
    /// `PALLETIZER_CRATES_IO_TESTS=1`: the opt-in to download from crates.io.
    CratesIo,
}

impl Need {
    /// Why this machine lacks it, or `None` when it is there.
    fn missing(self) -> Option<String> {
        match self {
            Need::Chromium => tools_missing(
                &["chromium", "chromedriver"],
                "from Debian's `chromium` and `chromium-driver`",
            ),
            Need::Git => tools_missing(&["git"], "from Debian's `git`"),
            Need::Nginx => tools_missing(&["nginx"], "from Debian's `nginx-light`, in /usr/sbin"),
            Need::Promtool => tools_missing(&["promtool"], "from Debian's `prometheus`"),
            Need::CratesIo => (std::env::var("PALLETIZER_CRATES_IO_TESTS").as_deref() != Ok("1"))
                .then(|| {
                    "opt-in: set PALLETIZER_CRATES_IO_TESTS=1 to download from crates.io".into()
                }),
            // Probed once: every test of a file asks the same question.
            Need::Tmpfs => {
                static REFUSED: OnceLock<Option<String>> = OnceLock::new();
                REFUSED.get_or_init(tmpfs_refused).clone()
            }
        }
    }
}

impl Need {
    /// Whether the test runs only when asked to, so that its absence is no failure in CI.
    fn opt_in(self) -> bool {
        matches!(self, Need::CratesIo)
    }
}

/// Where `name` is found on `PATH`, if anywhere.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn tools_missing(names: &[&str], from: &str) -> Option<String> {
    let absent: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| on_path(n).is_none())
        .collect();
    (!absent.is_empty()).then(|| format!("needs {} on PATH, {from}", absent.join(" and ")))
}

/// Whether a small tmpfs mounts here: root alone is not enough in a container without
/// `CAP_SYS_ADMIN`, so the probe is a real mount.
fn tmpfs_refused() -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    match Tmpfs::try_mount(dir.path(), "64k") {
        Ok(_mounted) => None,
        Err(e) => Some(format!("needs root to mount a tmpfs: {e}")),
    }
}

/// A tmpfs of some size mounted at a directory, unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts it; a test that calls this declares [`Need::Tmpfs`], so a refusal is a failure.
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        Tmpfs::try_mount(dir, size).unwrap_or_else(|e| panic!("mounting a tmpfs: {e}"))
    }

    fn try_mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            // Its first line says why (`must be superuser`); the reason stays one line.
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr.lines().next().unwrap_or_default().trim();
            return Err(format!("{first} ({})", out.status));
        }
        Ok(Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A test as listed in a file: its name, its body and what it needs.
pub type Test = (&'static str, fn(), &'static [Need]);

/// Set in the environment of the child that runs one test's body.
const CHILD: &str = "PALLETIZER_TEST_BODY";

/// Runs `tests` with the command line's arguments; the exit code says whether all passed.
///
/// Each body runs in a child process of this binary with its output collected, shown only
/// if it fails, as the built-in harness does (libtest-mimic cannot capture output in
/// process); `--nocapture` (or `RUST_TEST_NOCAPTURE`) runs the bodies in this process.
pub fn run(tests: &'static [Test]) -> ExitCode {
    if let Some(name) = std::env::var_os(CHILD) {
        // Nothing the body starts should think it is a test body too.
        std::env::remove_var(CHILD);
        let (_, body, _) = tests
            .iter()
            .find(|t| name == t.0)
            .unwrap_or_else(|| panic!("no test {name:?} in this file"));
        body();
        return ExitCode::SUCCESS;
    }
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|n| n.parse().ok());
    }
    let capture = !args.nocapture && std::env::var_os("RUST_TEST_NOCAPTURE").is_none();
    let trials = tests.iter().map(|t| trial(t, capture)).collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// One test: ignored with the reason when a need is missing, failed instead under `CI=true`.
fn trial(&(name, body, needs): &'static Test, capture: bool) -> Trial {
    Trial::ignorable_test(name, move || {
        if let Some((need, why)) = needs.iter().find_map(|n| n.missing().map(|w| (n, w))) {
            if std::env::var("CI").as_deref() == Ok("true") && !need.opt_in() {
                return Err(format!("{why}; under CI=true that is a failure").into());
            }
            return Ok(Completion::ignored_with(why));
        }
        if capture {
            in_child(name)?;
        } else {
            body();
        }
        Ok(Completion::Completed)
    })
}

/// Runs the body of `name` in a child process; its stdout and stderr, interleaved as
/// written, are the failure's message.
fn in_child(name: &str) -> Result<(), Failed> {
    let (mut reader, writer) = std::io::pipe().map_err(|e| format!("a pipe: {e}"))?;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, name)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().map_err(|e| format!("a pipe: {e}"))?)
        .stderr(writer)
        .spawn()
        .map_err(|e| format!("starting the test's process: {e}"))?;
    // The command's copies of the pipe's write end are gone once spawned: the read ends
    // when the child (and whatever it left running with the pipe) exits.
    let mut output = Vec::new();
    let _ = reader.read_to_end(&mut output);
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the test: {e}"))?;
    if status.success() {
        return Ok(());
    }
    Err(format!("{}({status})", String::from_utf8_lossy(&output)).into())
}

/// `fn main` running the listed test functions, each `name` or `name [Need, ...]`.
// Unused by the files on the built-in harness, which compile this module too.
#[allow(unused_macros)]
macro_rules! tests {
    ($($test:ident $([$($need:ident),+])?),* $(,)?) => {
        fn main() -> std::process::ExitCode {
            use crate::support::harness::{run, Need, Test};
            static TESTS: &[Test] = &[$((stringify!($test), $test, &[$($(Need::$need),+)?])),*];
            run(TESTS)
        }
    };
}
#[allow(unused_imports)]
pub(crate) use tests;
