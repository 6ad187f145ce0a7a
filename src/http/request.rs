//! Request heads: parsed with httparse into a fixed header array, with the few facts the
//! server needs copied out of the borrowed buffer.
//!
//! Every parse error carries a status code; after any of them the connection is closed,
//! because the server can no longer tell where the next request would start.

/// Most headers accepted in one request (cargo sends about ten).
pub const MAX_HEADERS: usize = 48;

/// The methods the server knows. Anything else is answered 501.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
    /// A registered method the server never allows (OPTIONS, PATCH, TRACE, CONNECT).
    Other,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Other => "OTHER",
        }
    }
}

/// What the server keeps of a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: Method,
    /// The request target as sent (path and query).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Whether the client lets the connection stay open after this exchange.
    pub keep_alive: bool,
    pub content_length: u64,
    pub expect_continue: bool,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub authorization: Option<String>,
    /// The `Host` header, lowercased.
    pub host: Option<String>,
    /// The `Origin` header, as sent (browsers send it on cross-site and form requests).
    pub origin: Option<String>,
    /// The `Cookie` header (several are joined with `; `): browsers' session on the pages.
    pub cookie: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// Bytes of the buffer the head took, body excluded.
    pub len: usize,
}

impl Head {
    /// The path part of the target, without the query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// The query part of the target, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The authority the request is for: an absolute-form target's (RFC 9112 3.2.2: then
    /// the Host header is ignored), else the Host header's.
    pub fn authority(&self) -> Option<&str> {
        match absolute_form(&self.target) {
            Some((authority, _)) => Some(authority),
            None => self.host.as_deref(),
        }
    }

    /// The path below the authority: an absolute-form target's path, else the target's.
    pub fn origin_path(&self) -> &str {
        let path = self.path();
        absolute_form(path).map_or(path, |(_, p)| p)
    }
}

/// `http://authority/path` -> (authority, `/path`); `None` for an origin-form target.
fn absolute_form(target: &str) -> Option<(&str, &str)> {
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let path = &rest[end..];
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    Some((&rest[..end], if path.is_empty() { "/" } else { path }))
}

/// A request the server refuses before routing: answered with `status`, then closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    pub status: u16,
    pub detail: &'static str,
}

const fn err(status: u16, detail: &'static str) -> ParseError {
    ParseError { status, detail }
}

/// Parses a request head from the start of `buf`. `Ok(None)`: more bytes are needed.
/// `max_head` caps the head: a longer one is a 431 (or a 414 if the request line alone
/// does not fit).
pub fn parse(buf: &[u8], max_head: usize) -> Result<Option<Head>, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(err(431, "too many request headers")),
        Err(httparse::Error::Version) => {
            return Err(err(505, "only HTTP/1.0 and HTTP/1.1 are supported"))
        }
        Err(_) => return Err(err(400, "malformed request head")),
    };
    let len = match status {
        httparse::Status::Complete(len) if len <= max_head => len,
        httparse::Status::Complete(_) => return Err(too_long(buf, max_head)),
        httparse::Status::Partial if buf.len() > max_head => return Err(too_long(buf, max_head)),
        httparse::Status::Partial => return Ok(None),
    };
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "PUT" => Method::Put,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        "OPTIONS" | "PATCH" | "TRACE" | "CONNECT" => Method::Other,
        _ => return Err(err(501, "request method not implemented")),
    };
    let minor = req.version.unwrap_or(1);
    let mut head = Head {
        method,
        target: req.path.unwrap_or("/").to_owned(),
        minor,
        keep_alive: minor == 1,
        content_length: 0,
        expect_continue: false,
        if_none_match: None,
        if_modified_since: None,
        authorization: None,
        host: None,
        origin: None,
        cookie: None,
        content_type: None,
        content_encoding: None,
        len,
    };
    let mut seen_length = false;
    let mut hosts = 0;
    for h in req.headers.iter() {
        let value =
            std::str::from_utf8(h.value).map_err(|_| err(400, "header value is not UTF-8"))?;
        // RFC 9110 5.5: only SP and HTAB surround a field value (not Unicode spaces).
        let value = value.trim_matches([' ', '\t']);
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            // RFC 9110 8.6: Content-Length = 1*DIGIT; `+5`, `-1`, `5 5`, `0x5` frame nothing.
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(400, "invalid Content-Length"));
            }
            let n: u64 = value
                .parse()
                .map_err(|_| err(400, "invalid Content-Length"))?;
            // RFC 9112 6.3: differing Content-Length values make the framing unknowable.
            if seen_length && n != head.content_length {
                return Err(err(400, "conflicting Content-Length headers"));
            }
            seen_length = true;
            head.content_length = n;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // RFC 9112 6.1: a server that does not understand a transfer coding answers 501.
            return Err(err(
                501,
                "chunked request bodies are not supported; send Content-Length",
            ));
        } else if name.eq_ignore_ascii_case("host") {
            // RFC 9112 3.2: more than one Host, or an invalid one, is a 400.
            hosts += 1;
            if hosts > 1 {
                return Err(err(400, "more than one Host header"));
            }
            if !value.bytes().all(is_host_byte) {
                return Err(err(400, "invalid Host header"));
            }
            head.host = Some(value.to_ascii_lowercase());
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case("100-continue") {
                return Err(err(417, "only `Expect: 100-continue` is supported"));
            }
            head.expect_continue = minor == 1;
        } else if name.eq_ignore_ascii_case("if-none-match") {
            head.if_none_match = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("if-modified-since") {
            head.if_modified_since = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("authorization") {
            // Two sets of credentials: which one counts would depend on who reads them.
            if head.authorization.is_some() {
                return Err(err(400, "more than one Authorization header"));
            }
            head.authorization = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("cookie") {
            head.cookie = Some(match head.cookie.take() {
                Some(before) => format!("{before}; {value}"),
                None => value.to_owned(),
            });
        } else if name.eq_ignore_ascii_case("origin") {
            head.origin = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("content-type") {
            head.content_type = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("content-encoding") {
            head.content_encoding = Some(value.to_ascii_lowercase());
        }
        // Upgrade: h2c and HTTP2-Settings are ignored: the answer is plain HTTP/1.1.
    }
    // RFC 9112 3.2: an HTTP/1.1 request without Host is a 400 (HTTP/1.0 predates Host).
    if minor == 1 && hosts == 0 {
        return Err(err(400, "an HTTP/1.1 request needs a Host header"));
    }
    Ok(Some(head))
}

/// Bytes of `uri-host [ ":" port ]` (RFC 3986 3.2.2): reg-name or IP literal characters.
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b)
}

fn too_long(buf: &[u8], max_head: usize) -> ParseError {
    let line_end = buf[..buf.len().min(max_head)]
        .windows(2)
        .any(|w| w == b"\r\n");
    if line_end {
        err(431, "request header fields too large")
    } else {
        err(414, "request target too long")
    }
}

/// Decodes `%XX` escapes. `None` for a malformed escape.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Decodes a query string's value for `key` (`+` as space, `%XX` escapes).
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| {
            let v = v.replace('+', " ");
            percent_decode(&v).map(|b| String::from_utf8_lossy(&b).into_owned())
        })?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_index_request() {
        let raw =
            b"GET /index/3/f/foo HTTP/1.1\r\nHost: 127.0.0.1:8871\r\nUser-Agent: cargo/1.95.0\r\n\
Accept-Encoding: deflate, gzip\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
HTTP2-Settings: AAMAAABkAAQAAQAAAAIAAAAA\r\ncargo-protocol: version=1\r\naccept: text/plain\r\n\
if-none-match: \"abc\"\r\n\r\nNEXT";
        let h = parse(raw, 8192).unwrap().unwrap();
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path(), "/index/3/f/foo");
        assert!(h.keep_alive, "Connection: Upgrade does not close");
        assert_eq!(h.if_none_match.as_deref(), Some("\"abc\""));
        assert_eq!(&raw[h.len..], b"NEXT");
    }

    #[test]
    fn partial_and_limits() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n", 8192), Ok(None));
        let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000));
        assert_eq!(parse(long_line.as_bytes(), 8192).unwrap_err().status, 414);
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n", "a".repeat(9000));
        assert_eq!(parse(big.as_bytes(), 8192).unwrap_err().status, 431);
        let many: String = (0..60).map(|i| format!("X-{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        assert_eq!(parse(many.as_bytes(), 8192).unwrap_err().status, 431);
    }

    #[test]
    fn errors_and_versions() {
        assert_eq!(
            parse(b"BREW / HTTP/1.1\r\n\r\n", 8192).unwrap_err().status,
            501
        );
        assert_eq!(
            parse(b"GET / HTTP/2.0\r\n\r\n", 8192).unwrap_err().status,
            505
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 8192)
                .unwrap_err()
                .status,
            400
        );
        let te = b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(te, 8192).unwrap_err().status, 501);
        let h = parse(b"GET / HTTP/1.0\r\n\r\n", 8192).unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 8192)
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let h = parse(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            8192,
        )
        .unwrap()
        .unwrap();
        assert!(!h.keep_alive);
        let h = parse(
            b"PUT /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            8192,
        )
        .unwrap()
        .unwrap();
        assert!(h.expect_continue);
        assert_eq!(h.content_length, 5);
    }

    #[test]
    fn content_length_is_digits_only() {
        for bad in [
            "+5",
            "-1",
            "5 5",
            "0x5",
            "5,5",
            "",
            "1e3",
            "18446744073709551616",
        ] {
            let raw = format!("PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                parse(raw.as_bytes(), 8192).unwrap_err().status,
                400,
                "{bad:?}"
            );
        }
        let nbsp = "PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\u{a0}\r\n\r\n";
        assert_eq!(parse(nbsp.as_bytes(), 8192).unwrap_err().status, 400);
        let two = b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n";
        assert_eq!(parse(two, 8192).unwrap_err().status, 400);
        let raw = b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length:  007 \r\n\r\n";
        assert_eq!(parse(raw, 8192).unwrap().unwrap().content_length, 7);
    }

    #[test]
    fn http11_needs_exactly_one_valid_host() {
        let status = |raw: &[u8]| parse(raw, 8192).map(|h| h.map(|h| h.minor));
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n").unwrap_err().status, 400);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            status(b"GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(status(b"GET / HTTP/1.0\r\n\r\n"), Ok(Some(0)));
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"), Ok(Some(1)));
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"),
            Ok(Some(1))
        );
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        const VALID: &[u8] = b"PUT /api/v1/crates/new?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
Content-Length: 12\r\nExpect: 100-continue\r\nConnection: keep-alive\r\n\
If-None-Match: \"abc\"\r\nAuthorization: token\r\n\r\nbody follows";

        /// The parser's contract on any input: no panic; a complete head lies within the
        /// input and within `max_head`; a longer head is refused rather than waited for.
        fn check(input: &[u8], max_head: usize) -> Result<(), TestCaseError> {
            match parse(input, max_head) {
                Ok(Some(h)) => {
                    prop_assert!(h.len <= input.len());
                    prop_assert!(h.len <= max_head);
                }
                Ok(None) => prop_assert!(input.len() <= max_head),
                Err(e) => prop_assert!((400..=505).contains(&e.status)),
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn arbitrary_bytes_never_panic(
                input in proptest::collection::vec(any::<u8>(), 0..600),
                max_head in 0usize..700,
            ) {
                check(&input, max_head)?;
            }

            #[test]
            fn mutated_heads_never_panic(
                edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..8),
                cut in any::<usize>(),
                max_head in 16usize..400,
            ) {
                let mut input = VALID.to_vec();
                for (at, byte, op) in edits {
                    let i = at % (input.len() + 1);
                    match op {
                        0 if i < input.len() => input[i] = byte,
                        1 => input.insert(i, byte),
                        _ if i < input.len() => { input.remove(i); }
                        _ => {}
                    }
                }
                input.truncate(cut % (input.len() + 1));
                check(&input, max_head)?;
            }
        }

        #[test]
        fn the_valid_head_parses_within_its_bytes() {
            let h = parse(VALID, 8192).unwrap().unwrap();
            assert_eq!(&VALID[h.len..], b"body follows");
            assert_eq!(h.content_length, 12);
            let head_len = h.len;
            assert!(parse(VALID, head_len - 1).is_err(), "max_head is honoured");
            assert!(parse(VALID, head_len).unwrap().is_some());
        }
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("%2e%2E/a").unwrap(), b"../a");
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(
            query_param("q=foo%20bar%2Fbaz&per_page=5", "q").as_deref(),
            Some("foo bar/baz")
        );
        assert_eq!(query_param("q=a+b", "q").as_deref(), Some("a b"));
        assert_eq!(query_param("q=a", "per_page"), None);
    }
}
