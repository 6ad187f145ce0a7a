//! How registry errors reach a client: a status and a cargo-readable detail. Internal
//! errors are logged with their detail and answered without it; storage trouble (a full
//! disk) is a 507 that says so, never a 400 that blames the crate.

use super::response::Response;
use crate::registry;

/// Maps a registry error to a status and a message for the client. Internal errors are
/// logged with their detail and answered without it; storage trouble (a full disk) is a 507
/// that says so, never a 400 that blames the crate.
pub fn registry_error(e: registry::Error) -> Response {
    use registry::Error as E;
    if let Some(detail) = e.storage_trouble() {
        error!("error: registry: {e}");
        return storage_error(detail);
    }
    match e {
        E::NotFound(m) => Response::error(404, &m),
        E::Invalid(m) => Response::error(400, &m),
        E::Conflict(m) => Response::error(409, &m),
        E::TooLarge(m) => Response::error(413, &m),
        e @ (E::Io { .. } | E::Git(_) | E::Settings(_)) => {
            error!("error: registry: {e}");
            Response::error(
                500,
                "internal error while writing the registry; the server log has details",
            )
        }
    }
}

/// RFC 4918 11.5: 507 Insufficient Storage, for what the storage refused (see
/// [`registry::storage_trouble`]).
pub fn storage_error(detail: &str) -> Response {
    Response::error(507, detail)
}
