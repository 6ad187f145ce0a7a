//! HTTP/1.1 on bytes: request heads, responses, and the route table that turns a request
//! into a response (or, for writes, into a job for the registry worker).
//!
//! Nothing here knows sockets: the event loop in [`crate::net`] feeds bytes in and writes
//! the rendered responses out.

pub mod api;
pub mod auth;
pub mod files;
pub mod request;
pub mod response;

pub use request::{Head, Method};
pub use response::{Body, BodyCursor, Response};

pub use api::{Job, Routed};
use files::Trees;

/// What the router needs to know about the registry it serves.
#[derive(Debug)]
pub struct Site {
    /// The path of the registry's public URL (`""` or `/prefix`), stripped from requests.
    pub base_path: String,
    pub trees: Trees,
    /// Largest publish body: the crate size limit plus the metadata and its framing.
    pub max_upload: u64,
}

impl Site {
    pub fn new(url: &str, trees: Trees, max_crate_size: u64) -> Site {
        let without_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
        let base_path = without_scheme
            .find('/')
            .map_or("", |i| &without_scheme[i..])
            .trim_end_matches('/')
            .to_owned();
        Site {
            base_path,
            trees,
            max_upload: max_crate_size + api::MAX_METADATA + 8,
        }
    }
}

/// Decides what a request needs: an answer now, or a job for the registry worker.
pub fn route(site: &Site, head: &Head) -> Routed {
    let Some(path) = head.path().strip_prefix(site.base_path.as_str()) else {
        return Routed::Done(Response::error(404, "not found"));
    };
    if let Some(api) = path.strip_prefix("/api/v1/") {
        return api::route(api, head, site.max_upload);
    }
    if let Some(git) = path
        .strip_prefix("/index/")
        .and_then(|rest| api::route_git(rest, head))
    {
        return git;
    }
    Routed::Done(route_files(path, head, site))
}

fn route_files(path: &str, head: &Head, site: &Site) -> Response {
    let (tree, rest) = match path.strip_prefix("/index/") {
        Some(rest) => ("index", rest),
        None => match path.strip_prefix("/crates/") {
            Some(rest) => ("crates", rest),
            None => return Response::error(404, "not found"),
        },
    };
    if !matches!(head.method, Method::Get | Method::Head) {
        return Response::not_allowed("GET, HEAD");
    }
    let rel = match files::safe_relative(rest) {
        Ok(rel) => rel,
        Err(status) => return Response::error(status, "invalid path"),
    };
    match tree {
        "index" => files::index_file(&site.trees.index, &rel, head),
        _ => files::crate_file(&site.trees.crates, &rel, head),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_path_from_url() {
        let t = || Trees::new("/i".into(), "/c".into(), 0);
        assert_eq!(Site::new("http://h:1", t(), 0).base_path, "");
        assert_eq!(Site::new("https://h/reg/", t(), 0).base_path, "/reg");
        assert_eq!(Site::new("file:///tmp/reg", t(), 0).base_path, "/tmp/reg");
    }
}
