//! The HTTP/1.1 WebSocket handshake (RFC 6455 §4), in both roles, and what the two share: the
//! key, its accept value and the header tokens.
//!
//! # Layout
//! - `server`: [`ServerHandshake`], a request's head checked and its 101 answer.
//! - `client`: [`ClientHandshake`], the request a client sends (with a random key) and the
//!   check of the server's 101, over any stream the caller opened.

mod client;
mod server;

pub use client::{ClientHandshake, HandshakeError, RefusedAnswer, Upgraded, MAX_REFUSAL_BODY};
pub use server::{Attempt, ServerHandshake};

use base64::Engine as _;
use http::{HeaderMap, HeaderName};
use sha1::{Digest, Sha1};

/// Whether any of `name`'s values lists `token` (comma-separated, case-insensitive), as
/// `Connection: keep-alive, Upgrade` lists `upgrade`.
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|value| lists_token(value.as_bytes(), token))
}

/// Whether one header value lists `token` among its comma-separated tokens (case-insensitive,
/// spaces around each ignored). Compared as bytes: a value with bytes past ASCII elsewhere still
/// lists its other tokens.
pub fn lists_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether a `Sec-WebSocket-Key` is 16 bytes in base64 (RFC 6455 §4.1): 24 characters with
/// their padding.
fn is_valid_key(key: &[u8]) -> bool {
    let mut decoded = [0u8; 18];
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode_slice(key, &mut decoded)
            .is_ok_and(|n| n == 16)
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`: base64 of a SHA-1, 28 bytes,
/// built on the stack (the server copies it once, into the header).
fn accept_key(key: &[u8]) -> [u8; ACCEPT_KEY_LEN] {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    let mut accept = [0u8; ACCEPT_KEY_LEN];
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(sha.finalize(), &mut accept)
        .expect("20 bytes are 28 in base64");
    debug_assert_eq!(written, ACCEPT_KEY_LEN);
    accept
}

/// The length of a `Sec-WebSocket-Accept` value: 20 bytes of SHA-1 in padded base64.
const ACCEPT_KEY_LEN: usize = 28;

#[cfg(test)]
mod tests {
    use super::*;
    use http::{header, HeaderValue};

    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn keys_must_be_16_bytes_in_base64() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        for bad in [
            &b""[..],
            b"dGhlIHNhbXBsZSBub25jZQ",       // no padding
            b"dGhlIHNhbXBsZSBub25jZSE=",     // 17 bytes
            b"dGhlIHNhbXBsZSBub25j",         // 15 bytes
            b"dGhlIHNhbXBsZSBub25jZQ==AAAA", // too long
            b"dGhlIHNhbXBsZSBub25jZ!==",     // not base64
        ] {
            assert!(!is_valid_key(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn connection_header_may_list_several_tokens() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(has_token(&h, header::CONNECTION, "upgrade"));
        assert!(!has_token(&h, header::CONNECTION, "close"));
        h.append(header::CONNECTION, HeaderValue::from_static("Close"));
        assert!(has_token(&h, header::CONNECTION, "close"));
        // A token is whole: no prefix or substring matches.
        assert!(!lists_token(b"closed, upgrader", "close"));
        assert!(!lists_token(b"", "close"));
        // Bytes past ASCII in one token leave the others readable.
        assert!(lists_token(b"x-\xff, \tUpgrade\t", "upgrade"));
    }
}
