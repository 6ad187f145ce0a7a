//! What a crate page shows that the index line lacks: the description, license and links
//! from the publish metadata, and the README rendered to sanitized HTML. Both are written
//! once, when the version is published or added, as two small files beside its crate file
//! (`{name}-{vers}.json` and `{name}-{vers}.readme.html`), so serving a page never parses
//! Markdown or unpacks a tarball. Neither is served as a file: the download route only
//! serves names ending in `.crate`.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::registry::store::{write_synced_in_place, write_unsynced};
use crate::registry::{IndexEntry, PublishMetadata, Registry, Result};

/// Markdown bytes rendered at most; a longer README is cut (at a character boundary).
pub const MAX_README_SOURCE: usize = 512 * 1024;
/// The most of a stored README a page reads back (sanitized HTML of the source above).
pub const MAX_README_HTML: u64 = 2 << 20;
/// Most table cells a README may make before its tables are rendered as text.
pub const MAX_TABLE_CELLS: usize = 100_000;
/// The most of a stored info file a page reads back.
pub const MAX_INFO: u64 = 256 * 1024;

/// The page's share of the publish metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CrateInfo {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub license: Option<String>,
    #[serde(default)]
    pub license_file: Option<String>,
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub homepage: Option<String>,
    #[serde(default)]
    pub documentation: Option<String>,
    #[serde(default)]
    pub authors: Vec<String>,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub categories: Vec<String>,
}

impl CrateInfo {
    pub fn from_meta(m: &PublishMetadata) -> CrateInfo {
        CrateInfo {
            description: m.description.clone(),
            license: m.license.clone(),
            license_file: m.license_file.clone(),
            repository: m.repository.clone(),
            homepage: m.homepage.clone(),
            documentation: m.documentation.clone(),
            authors: m.authors.clone(),
            keywords: m.keywords.clone(),
            categories: m.categories.clone(),
        }
    }
}

fn beside(crate_path: &Path, suffix: &str) -> PathBuf {
    let name = crate_path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let stem = name.strip_suffix(".crate").unwrap_or(name);
    crate_path.with_file_name(format!("{stem}{suffix}"))
}

/// The info file of the version whose crate file is `crate_path`.
pub fn info_path(crate_path: &Path) -> PathBuf {
    beside(crate_path, ".json")
}

/// The rendered README of the version whose crate file is `crate_path`.
pub fn readme_path(crate_path: &Path) -> PathBuf {
    beside(crate_path, ".readme.html")
}

/// Every file that belongs to a crate file and goes with it.
pub fn sidecars(crate_path: &Path) -> [PathBuf; 2] {
    [info_path(crate_path), readme_path(crate_path)]
}

/// Renders README Markdown to HTML, safe by construction: raw HTML in the Markdown is
/// dropped (no `<script>`, no handlers, no styles, no frames), every text and attribute is
/// escaped by the writer, and links and images keep only `http(s)`, `mailto:` and `#`
/// targets (no `javascript:`; relative ones would point into this registry, not the
/// crate's repository). Sanitizing the Markdown's events rather than re-parsing the HTML
/// keeps an HTML parser's tables (over 1 MiB of relocated data) out of the server.
///
/// `None` when the HTML would pass [`MAX_README_HTML`]. Tables are left out of a README that
/// could make more than [`MAX_TABLE_CELLS`] cells: the parser fills short rows up to the
/// header's width and builds the whole tree first, so a 512 KiB text of wide headers and
/// one-cell rows would otherwise take gigabytes on the worker.
pub fn render_readme(markdown: &str) -> Option<String> {
    use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};
    let mut end = markdown.len().min(MAX_README_SOURCE);
    while !markdown.is_char_boundary(end) {
        end -= 1;
    }
    let source = &markdown[..end];
    // At most (lines) x (widest row) cells, whatever the tables look like.
    let lines = source.lines().count();
    let widest = source
        .lines()
        .map(|l| l.bytes().filter(|&b| b == b'|').count() + 1)
        .max()
        .unwrap_or(0);
    let mut opts =
        Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS | Options::ENABLE_FOOTNOTES;
    if lines.saturating_mul(widest) <= MAX_TABLE_CELLS {
        opts |= Options::ENABLE_TABLES;
    }
    let safe = |url: CowStr<'_>| -> CowStr<'static> {
        let ok = ["https://", "http://", "mailto:", "#"].iter().any(|p| {
            url.get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p))
        });
        if ok {
            CowStr::from(url.into_string())
        } else {
            CowStr::Borrowed("")
        }
    };
    let events = Parser::new_ext(source, opts).filter_map(|ev| match ev {
        Event::Html(_) | Event::InlineHtml(_) => None,
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Some(Event::Start(Tag::Link {
            link_type,
            dest_url: safe(dest_url),
            title,
            id,
        })),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Some(Event::Start(Tag::Image {
            link_type,
            dest_url: safe(dest_url),
            title,
            id,
        })),
        ev => Some(ev),
    });
    let mut html = String::with_capacity(end + end / 4);
    pulldown_cmark::html::push_html(&mut html, events);
    (html.len() as u64 <= MAX_README_HTML).then_some(html)
}

/// Reads the README named `readme_file` by the manifest from a checked crate file whose
/// files are under `top/` (`palletizer add`, where no metadata carries the contents).
/// At most [`MAX_README_SOURCE`] bytes are read.
pub fn readme_from_crate(
    crate_file: &Path,
    top: &str,
    readme_file: &str,
) -> io::Result<Option<String>> {
    let rel = readme_file.trim_start_matches("./");
    if rel.is_empty() || rel.split('/').any(|s| s == "..") {
        return Ok(None);
    }
    let wanted = format!("{top}/{rel}");
    let gz = flate2::read::GzDecoder::new(File::open(crate_file)?);
    let mut archive = tar::Archive::new(gz);
    for entry in archive.entries()? {
        let entry = entry?;
        if entry.path_bytes().as_ref() != wanted.as_bytes() {
            continue;
        }
        let mut bytes = Vec::new();
        entry
            .take(MAX_README_SOURCE as u64)
            .read_to_end(&mut bytes)?;
        return Ok(Some(String::from_utf8_lossy(&bytes).into_owned()));
    }
    Ok(None)
}

/// Stores the page files of the version whose crate file is `crate_path`. Without a
/// README, a stale rendered one (a version deleted and published again) is removed.
/// Writes the page files of a crate file (`info`: its [`CrateInfo`] as JSON). Each file is
/// synced when `synced`; the folder is not: the caller syncs it once with the crate file.
/// Unsynced, the journal line of the publish holds them until the checkpoint.
pub fn store(
    crate_path: &Path,
    info: &[u8],
    readme_html: Option<&str>,
    synced: bool,
) -> Result<()> {
    let write = |path: &Path, bytes: &[u8]| match synced {
        true => write_synced_in_place(path, bytes),
        false => write_unsynced(path, bytes),
    };
    write(&info_path(crate_path), info)?;
    match readme_html {
        Some(html) => write(&readme_path(crate_path), html.as_bytes()),
        None => {
            let _ = std::fs::remove_file(readme_path(crate_path));
            Ok(())
        }
    }
}

/// Reads at most `max` bytes of `path`; `None` when it does not exist.
pub fn read_bounded(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    match File::open(path) {
        Ok(f) => {
            let mut bytes = Vec::new();
            f.take(max).read_to_end(&mut bytes)?;
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The stored info of a version (default when missing or unreadable: a page still shows).
pub fn load_info(crate_path: &Path) -> CrateInfo {
    read_bounded(&info_path(crate_path), MAX_INFO)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The stored README of a version, unless missing or larger than a page reads back (cut
/// HTML could leave a tag open).
pub fn load_readme(crate_path: &Path) -> Option<String> {
    let bytes = read_bounded(&readme_path(crate_path), MAX_README_HTML + 1)
        .ok()
        .flatten()?;
    if bytes.len() as u64 > MAX_README_HTML {
        return None;
    }
    String::from_utf8(bytes).ok()
}

impl Registry {
    /// What a version's page shows that its index line lacks, as stored beside its crate
    /// file (default when missing or unreadable: a page still shows).
    pub fn crate_info(&self, e: &IndexEntry) -> CrateInfo {
        self.entry_crate_path(e)
            .map(|p| load_info(&p))
            .unwrap_or_default()
    }

    /// A version's README as stored, sanitized HTML, unless missing or larger than a page
    /// reads back (cut HTML could leave a tag open).
    pub fn readme_html(&self, e: &IndexEntry) -> Option<String> {
        self.entry_crate_path(e).ok().and_then(|p| load_readme(&p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_scripts_and_handlers_are_stripped() {
        let md = "# Hi\n\n<script>document.title='pwned'</script>\n\n\
<img src=x onerror=\"document.title='pwned'\">\n\n[click](javascript:alert(1))\n\n\
<a href=\"/crates/x\">rel</a> <iframe src=\"https://e.com\"></iframe>\n\n\
<p style=\"color:red\" onclick=\"x()\">styled</p>\n\n```rust\nfn main() {}\n```\n";
        let html = render_readme(md).unwrap();
        for bad in [
            "<script",
            "onerror",
            "javascript:",
            "<iframe",
            "onclick",
            "style=",
            "pwned",
            "href=\"/crates",
        ] {
            assert!(!html.contains(bad), "`{bad}` survived in {html}");
        }
        assert!(html.contains("<h1>Hi</h1>"), "{html}");
        assert!(html.contains("fn main() {}"), "{html}");
        assert!(html.contains("rel"), "{html}");
        // Markup in text and in link targets is escaped, not interpreted.
        let html =
            render_readme("a &lt;b> `<i>` [x](https://e.com/\"onmouseover=\"y) <u>k</u>").unwrap();
        assert!(
            !html.contains("<b>") && !html.contains("<i>") && !html.contains("<u>"),
            "{html}"
        );
        assert!(!html.contains("\"onmouseover"), "{html}");
        assert!(
            html.contains("<a href=\"https://e.com/%22onmouseover=%22y\">x</a>"),
            "{html}"
        );
    }

    #[test]
    fn long_readmes_are_cut_at_a_character_boundary() {
        // One ASCII byte first: the cut then falls inside a two-byte character.
        let md = format!("x{}", "é".repeat(MAX_README_SOURCE));
        let html = render_readme(&md).unwrap();
        assert!(html.len() < MAX_README_SOURCE + 64);
        assert!(html.ends_with("é</p>\n"), "{}", &html[html.len() - 20..]);
    }

    /// Wide headers over many one-cell rows: the parser would fill every row to the
    /// header's width (gigabytes for a 512 KiB text); such tables stay text.
    #[test]
    fn table_bombs_render_as_text() {
        let header = format!("|{}\n|{}\n", "a|".repeat(511), "-|".repeat(511));
        let table = format!("{header}{}\n", "x\n".repeat(500));
        let md = table.repeat(MAX_README_SOURCE / table.len());
        let html = render_readme(&md).expect("rendered, as text");
        assert!(!html.contains("<td>"), "no table cells");
        assert!(html.len() < 4 * MAX_README_SOURCE);
        let small = render_readme("|a|b|\n|-|-|\n|1|2|\n").unwrap();
        assert!(small.contains("<td>1</td>"), "{small}");
    }

    /// `palletizer add` has no metadata carrying the README: it is read from the crate
    /// file, rendered, and stored; deleting the version takes the page files with it.
    #[test]
    fn add_stores_the_readme_and_delete_removes_it() {
        use crate::registry::publish::tarball::testing::{crate_bytes, file};
        let (tmp, reg) = crate::registry::auth::scratch_registry();
        let manifest = "[package]\nname = \"foo\"\nversion = \"1.0.0\"\n\
description = \"<b>d</b>\"\nlicense = \"MIT\"\nreadme = \"docs/README.md\"\n";
        let bytes = crate_bytes(&[
            file("foo-1.0.0/Cargo.toml", manifest.as_bytes()),
            file(
                "foo-1.0.0/docs/README.md",
                b"# Foo\n\n<script>x()</script>\n",
            ),
            file("foo-1.0.0/src/lib.rs", b""),
        ]);
        let path = tmp.path().join("foo-1.0.0.crate");
        std::fs::write(&path, bytes).unwrap();
        reg.add_file(&path).unwrap();
        let name = crate::registry::CrateName::parse("foo").unwrap();
        let stored = reg.crate_path(
            &name,
            &crate::registry::names::Version::parse("1.0.0").unwrap(),
        );
        let html = std::fs::read_to_string(readme_path(&stored)).unwrap();
        assert!(
            html.contains("<h1>Foo</h1>") && !html.contains("script"),
            "{html}"
        );
        let info = load_info(&stored);
        assert_eq!(info.description.as_deref(), Some("<b>d</b>"));
        assert_eq!(info.license.as_deref(), Some("MIT"));
        assert!(crate::registry::check::check(&reg).unwrap().is_empty());
        reg.delete(&name, Some("1.0.0")).unwrap();
        for p in sidecars(&stored) {
            assert!(!p.exists(), "{}", p.display());
        }
    }

    #[test]
    fn sidecar_names() {
        let p = Path::new("/r/crates/foo/foo-1.0.0.crate");
        assert_eq!(info_path(p), Path::new("/r/crates/foo/foo-1.0.0.json"));
        assert_eq!(
            readme_path(p),
            Path::new("/r/crates/foo/foo-1.0.0.readme.html")
        );
    }
}
