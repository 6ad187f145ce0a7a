//! Why a connection ended: the reasons the loop gives when it closes one, counted in
//! `/metrics` as `palletizer_connections_closed_total{reason}` and written to the debug
//! log. A connection keeps the first reason it is given.

use std::io;

/// Why a connection ended, for `palletizer_connections_closed_total{reason}` and the
/// debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed or reset the connection.
    ClientClosed,
    /// A read or write failed otherwise (a TLS error among them).
    IoError,
    /// The request head did not parse: answered, then closed.
    ParseError,
    /// Answered, then closed: the client asked, HTTP/1.0, a body left unread, an answer
    /// that ends the framing.
    Answered,
    /// Its deadline passed while it waited for this.
    Timeout(Waited),
    /// Closed while idle to make room in a full table.
    Reclaimed,
    /// The server is stopping.
    Shutdown,
}

/// What a connection was waiting for when its deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// A request head (or a new connection's first one, its TLS handshake included).
    Head,
    /// The rest of a request body.
    Body,
    /// A worker's answer.
    Worker,
    /// The client to take the answer.
    Write,
    /// The next request on a kept-alive connection.
    Idle,
    /// The client to close after the last answer.
    Linger,
}

impl CloseReason {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [CloseReason; 12] = [
        CloseReason::ClientClosed,
        CloseReason::IoError,
        CloseReason::ParseError,
        CloseReason::Answered,
        CloseReason::Timeout(Waited::Head),
        CloseReason::Timeout(Waited::Body),
        CloseReason::Timeout(Waited::Worker),
        CloseReason::Timeout(Waited::Write),
        CloseReason::Timeout(Waited::Idle),
        CloseReason::Timeout(Waited::Linger),
        CloseReason::Reclaimed,
        CloseReason::Shutdown,
    ];

    /// The `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::IoError => "io_error",
            CloseReason::ParseError => "parse_error",
            CloseReason::Answered => "answered",
            CloseReason::Timeout(Waited::Head) => "timeout_head",
            CloseReason::Timeout(Waited::Body) => "timeout_body",
            CloseReason::Timeout(Waited::Worker) => "timeout_worker",
            CloseReason::Timeout(Waited::Write) => "timeout_write",
            CloseReason::Timeout(Waited::Idle) => "timeout_idle",
            CloseReason::Timeout(Waited::Linger) => "timeout_linger",
            CloseReason::Reclaimed => "reclaimed",
            CloseReason::Shutdown => "shutdown",
        }
    }

    /// Its place in [`Self::ALL`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }

    /// A failed read or write: the peer's doing, or a fault.
    pub fn of(e: &io::Error) -> CloseReason {
        use io::ErrorKind::*;
        match e.kind() {
            ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
                CloseReason::ClientClosed
            }
            _ => CloseReason::IoError,
        }
    }
}
