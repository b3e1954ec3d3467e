//! Errors worded for a one-line report: short lowercase phrases (`connection refused`, `the server
//! closed the connection`) instead of Rust's `Display` with an errno suffix.

use std::io;

use tokio_tungstenite::tungstenite::Error as WsError;

/// `connection refused` rather than `Connection refused (os error 111)`.
pub(crate) fn io_reason(e: &io::Error) -> String {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".to_owned(),
        K::ConnectionReset => "connection reset by the server".to_owned(),
        K::ConnectionAborted => "connection aborted".to_owned(),
        K::TimedOut => "timed out".to_owned(),
        K::AddrNotAvailable => "no free local port (address not available)".to_owned(),
        K::AddrInUse => "local address in use".to_owned(),
        K::UnexpectedEof => "the server closed the connection".to_owned(),
        _ => {
            let text = e.to_string();
            // Keep the words, drop the errno suffix.
            let text = text.split(" (os error").next().unwrap_or(&text);
            lowercase_first(text)
        }
    }
}

/// A WebSocket error as a short lowercase phrase.
pub(crate) fn ws_reason(e: &WsError) -> String {
    match e {
        WsError::Io(e) => io_reason(e),
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            "the server closed the connection".to_owned()
        }
        other => lowercase_first(&other.to_string()),
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if !s.starts_with("HTTP") && !s.starts_with("URL") => {
            c.to_lowercase().chain(chars).collect()
        }
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_phrases() {
        let e = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(io_reason(&e), "connection refused");
        assert_eq!(
            io_reason(&io::Error::from_raw_os_error(111)),
            "connection refused"
        );
        assert_eq!(
            ws_reason(&WsError::ConnectionClosed),
            "the server closed the connection"
        );
    }
}
