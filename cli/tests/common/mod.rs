//! Helpers shared by the CLI's integration tests.

use std::io::{Read, Write};
use std::net::TcpStream;

/// Whether a `ferrum serve` on `port` answers `GET /health` with 200. An
/// HTTP answer, not just a connection: a connect to a free local port can
/// succeed by connecting the socket to itself (TCP simultaneous open), and
/// then it reads back its own request.
pub fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 200")
}
