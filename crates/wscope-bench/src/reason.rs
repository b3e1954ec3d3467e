//! Errors worded for a one-line report: short lowercase phrases (`connection refused`, `the server
//! closed the connection`) instead of Rust's `Display` with an errno suffix.

use std::io;

use tokio_tungstenite::tungstenite::protocol::CloseFrame;
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

/// A close frame's code and reason, as a report words it: `1011 ping timeout`, `1000`, or `no
/// close code` for a close frame without one.
pub(crate) fn close_words(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(f) if f.reason.is_empty() => u16::from(f.code).to_string(),
        Some(f) => format!("{} {}", u16::from(f.code), f.reason.as_str()),
        None => "no close code".to_owned(),
    }
}

/// Why a connection ended when the server sent `frame`: `the server closed the connection (1011
/// ping timeout)`.
pub(crate) fn closed_by_server(frame: Option<&CloseFrame>) -> String {
    format!("the server closed the connection ({})", close_words(frame))
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

    #[test]
    fn close_frames_are_worded_code_then_reason() {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        let frame = |code: u16, reason: &str| CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        assert_eq!(
            close_words(Some(&frame(1011, "ping timeout"))),
            "1011 ping timeout"
        );
        assert_eq!(close_words(Some(&frame(1000, ""))), "1000");
        assert_eq!(close_words(None), "no close code");
        assert_eq!(
            closed_by_server(Some(&frame(1008, "message rate exceeded"))),
            "the server closed the connection (1008 message rate exceeded)"
        );
    }
}
