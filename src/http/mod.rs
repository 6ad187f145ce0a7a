//! HTTP/1.1 on bytes: request heads, responses, and the route table that turns a request
//! into a response (or, for writes, into a job for the registry worker).
//!
//! Nothing here knows sockets: the event loop in [`crate::net`] feeds bytes in and writes
//! the rendered responses out.

pub mod files;
pub mod request;
pub mod response;

pub use request::{Head, Method};
pub use response::{Body, BodyCursor, Response};

use files::Trees;

/// What the router needs to know about the registry it serves.
#[derive(Debug, Clone)]
pub struct Site {
    /// The path of the registry's public URL (`""` or `/prefix`), stripped from requests.
    pub base_path: String,
    pub trees: Trees,
}

impl Site {
    pub fn new(url: &str, trees: Trees) -> Site {
        let without_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
        let base_path = without_scheme
            .find('/')
            .map_or("", |i| &without_scheme[i..])
            .trim_end_matches('/')
            .to_owned();
        Site { base_path, trees }
    }
}

/// Answers a request that needs no registry write.
pub fn route(site: &Site, head: &Head) -> Response {
    let Some(path) = head.path().strip_prefix(site.base_path.as_str()) else {
        return Response::error(404, "not found");
    };
    let (tree, rest) = match path.strip_prefix("/index/") {
        Some(rest) => ("index", rest),
        None => match path.strip_prefix("/crates/") {
            Some(rest) => ("crates", rest),
            None => return Response::error(404, "not found"),
        },
    };
    if !matches!(head.method, Method::Get | Method::Head) {
        return Response::error(405, "only GET and HEAD are allowed here")
            .header("Allow", "GET, HEAD");
    }
    let rel = match files::safe_relative(rest) {
        Ok(rel) => rel,
        Err(status) => return Response::error(status, "invalid path"),
    };
    match tree {
        "index" => files::index_file(&site.trees.index_dir, &rel, head),
        _ => files::crate_file(&site.trees.crates_dir, &rel, head),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_path_from_url() {
        let t = Trees {
            index_dir: "/i".into(),
            crates_dir: "/c".into(),
        };
        assert_eq!(Site::new("http://h:1", t.clone()).base_path, "");
        assert_eq!(Site::new("https://h/reg/", t.clone()).base_path, "/reg");
        assert_eq!(Site::new("file:///tmp/reg", t).base_path, "/tmp/reg");
    }
}
