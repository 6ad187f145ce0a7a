//! Responses: a pre-rendered head plus a body that is empty, owned bytes, or a crate file.
//! A crate file goes out with `sendfile` on plain TCP, whatever its size, and through mmap
//! windows over TLS, where rustls must see the bytes to encrypt them.
//!
//! Every response carries `Content-Length` (RFC 9112 6.3: the client needs it to find the
//! next response on a kept-alive connection), except 1xx, 204 and 304, which have no body.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::io::Write;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::{Mmap, MmapOptions};

/// Bytes of a crate file mapped at a time (over TLS): the process's resident set grows by
/// at most this much per download in flight, whatever the file size.
pub const WINDOW: u64 = 256 * 1024;

/// A response body.
#[derive(Debug, Default)]
pub enum Body {
    #[default]
    Empty,
    Bytes(Vec<u8>),
    File(FileBody),
}

/// A crate file: sent with `sendfile` from its open descriptor where the transport takes
/// bytes unchanged, otherwise through a sliding mmap window (never read into the heap).
#[derive(Debug)]
pub struct FileBody {
    file: Arc<File>,
    len: u64,
    pos: u64,
    window: Option<(u64, Mmap)>,
}

impl FileBody {
    /// `file` must never change after it was renamed into place (crate files don't), so the
    /// mapping cannot observe a write or a truncation.
    pub fn new(file: Arc<File>, len: u64) -> FileBody {
        FileBody {
            file,
            len,
            pos: 0,
            window: None,
        }
    }
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File(f) => f.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Walks a body in contiguous chunks for writing.
#[derive(Debug, Default)]
pub struct BodyCursor {
    body: Body,
    pos: usize,
}

impl BodyCursor {
    pub fn new(body: Body) -> BodyCursor {
        BodyCursor { body, pos: 0 }
    }

    /// Bytes left to send.
    pub fn remaining(&self) -> u64 {
        match &self.body {
            Body::Empty => 0,
            Body::Bytes(b) => (b.len() - self.pos) as u64,
            Body::File(f) => f.len - f.pos,
        }
    }

    /// The next contiguous bytes to send (empty at the end).
    pub fn chunk(&mut self) -> io::Result<&[u8]> {
        match &mut self.body {
            Body::Empty => Ok(&[]),
            Body::Bytes(b) => Ok(&b[self.pos..]),
            Body::File(f) => {
                if f.pos >= f.len {
                    return Ok(&[]);
                }
                let stale = match &f.window {
                    Some((start, map)) => f.pos >= start + map.len() as u64,
                    None => true,
                };
                if stale {
                    f.window = None; // unmap before mapping the next window
                    let start = f.pos - f.pos % WINDOW;
                    let len = WINDOW.min(f.len - start) as usize;
                    // The length was read when the file was opened, possibly seconds ago (a
                    // kept file is trusted until a write to the registry is noticed). A file
                    // cut short in place since (by hand: the registry never does) would make
                    // the mapping fault past its end, and SIGBUS ends the whole server: the
                    // response ends instead.
                    if f.file.metadata()?.len() < start + len as u64 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    // SAFETY: crate files are written once under a temp name and renamed into
                    // place; nothing writes to or truncates them afterwards (delete unlinks,
                    // which keeps the mapped inode alive), and one cut short by hand was
                    // refused just above.
                    // Populated up front: one call instead of a page fault per few pages.
                    let map = unsafe {
                        MmapOptions::new()
                            .offset(start)
                            .len(len)
                            .populate()
                            .map(&f.file)?
                    };
                    f.window = Some((start, map));
                }
                let (start, map) = f.window.as_ref().expect("window just mapped");
                Ok(&map[(f.pos - start) as usize..])
            }
        }
    }

    /// For a file body: the file, the offset to send from, and the bytes left, for
    /// `sendfile` (the caller knows whether its transport allows it). Once a window was
    /// mapped the body stays on that path.
    pub fn sendfile_source(&self) -> Option<(&File, u64, u64)> {
        match &self.body {
            Body::File(f) if f.window.is_none() => Some((&f.file, f.pos, f.len - f.pos)),
            _ => None,
        }
    }

    /// Marks `n` bytes as sent.
    pub fn advance(&mut self, n: usize) {
        match &mut self.body {
            Body::Empty => {}
            Body::Bytes(_) => self.pos += n,
            Body::File(f) => f.pos += n as u64,
        }
    }
}

/// A response before it is rendered.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    pub body: Body,
    /// Close the connection after this response.
    pub close: bool,
    /// Why the request was refused, for the server's log (never a token).
    pub refusal: Option<String>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
            close: false,
            refusal: None,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: Body) -> Response {
        self.body = body;
        self
    }

    /// A JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut bytes = serde_json::to_vec(value).expect("json values serialize");
        bytes.push(b'\n');
        Response::new(status)
            .header("Content-Type", "application/json; charset=utf-8")
            .body(Body::Bytes(bytes))
    }

    /// An error in the shape cargo prints: `{"errors":[{"detail":"..."}]}`.
    pub fn error(status: u16, detail: &str) -> Response {
        Response::json(
            status,
            &serde_json::json!({ "errors": [{ "detail": detail }] }),
        )
    }

    /// 405 with the `Allow` header RFC 9110 15.5.6 requires, e.g. `"GET, HEAD"`.
    pub fn not_allowed(methods: &'static str) -> Response {
        Response::error(405, &format!("method not allowed here; use {methods}"))
            .header("Allow", methods)
    }

    /// Renders the status line and headers. `Content-Length` is the body's, so the head of a
    /// HEAD answer (whose body the connection then drops) matches what a GET would get.
    pub fn render_head(&self, keep_alive: bool) -> Vec<u8> {
        // Fixed lines, then the headers at their length plus ": " and CRLF: one allocation
        // (an index file's head is about 260 bytes).
        let size = 192
            + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>();
        let mut h = Vec::with_capacity(size);
        h.extend_from_slice(b"HTTP/1.1 ");
        let _ = write!(h, "{} ", self.status);
        h.extend_from_slice(reason(self.status).as_bytes());
        h.extend_from_slice(b"\r\nServer: palletizer\r\nDate: ");
        with_date(|d| h.extend_from_slice(d.as_bytes()));
        h.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            h.extend_from_slice(name.as_bytes());
            h.extend_from_slice(b": ");
            h.extend_from_slice(value.as_bytes());
            h.extend_from_slice(b"\r\n");
        }
        if !matches!(self.status, 100..=199 | 204 | 304) {
            let _ = write!(h, "Content-Length: {}\r\n", self.body.len());
        }
        if !keep_alive || self.close {
            h.extend_from_slice(b"Connection: close\r\n");
        }
        h.extend_from_slice(b"\r\n");
        h
    }
}

/// The current time as an HTTP date, formatted at most once a second.
fn with_date(f: impl FnOnce(&str)) {
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs || c.1.is_empty() {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        f(&c.1);
    });
}

/// The reason phrase for the statuses this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_has_length_and_close() {
        let r = Response::error(404, "no such crate");
        let h = String::from_utf8(r.render_head(true)).unwrap();
        assert!(h.starts_with("HTTP/1.1 404 Not Found\r\n"), "{h}");
        assert!(
            h.contains(&format!("Content-Length: {}\r\n", r.body.len())),
            "{h}"
        );
        assert!(!h.contains("Connection: close"));
        let h = String::from_utf8(Response::new(304).render_head(false)).unwrap();
        assert!(
            !h.contains("Content-Length") && h.contains("Connection: close\r\n\r\n"),
            "{h}"
        );
    }

    #[test]
    fn file_body_walks_windows() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..(WINDOW as usize * 2 + 1234))
            .map(|i| (i % 251) as u8)
            .collect();
        f.write_all(&data).unwrap();
        let mut c = BodyCursor::new(Body::File(FileBody::new(Arc::new(f), data.len() as u64)));
        let mut out = Vec::new();
        while c.remaining() > 0 {
            let chunk = c.chunk().unwrap();
            assert!(chunk.len() as u64 <= WINDOW);
            let take = chunk.len().min(100_000);
            out.extend_from_slice(&chunk[..take]);
            c.advance(take);
        }
        assert_eq!(out, data);
        assert!(c.chunk().unwrap().is_empty());
    }
}
