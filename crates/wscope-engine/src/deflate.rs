//! permessage-deflate (RFC 7692), in both roles: the offer a client makes in
//! `Sec-WebSocket-Extensions` and the answer a server gives (as wscope makes and checks them),
//! and the compression of what this side sends. (Inflating what the peer sends is the frame
//! guard's: it streams, under the message size limit.)
//!
//! wscope always answers with `server_no_context_takeover` and `client_no_context_takeover`:
//! every message is compressed on its own in both directions, so an idle connection keeps no
//! zlib state at all — the compressor and the inflater are per thread, reset for each message,
//! and the guard drops the rest of its inflating state between messages.
//!
//! Without context takeover a message compresses to the same bytes whichever connection sends
//! it, so the members of a broadcast, which share its payload's bytes, share its compressed
//! body too: [`compress_message`] compresses a shared payload once and keeps the body while
//! anyone still holds the payload.

use std::cell::RefCell;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};
use http::HeaderValue;

/// permessage-deflate as agreed with one peer, in either role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deflate {
    /// The window this side may compress with, as the peer limited it (`server_max_window_bits`
    /// in a client's offer, `client_max_window_bits` in a server's answer), which the compressor
    /// honours; `None` when the peer did not limit it (15 bits).
    peer_max_window_bits: Option<u8>,
}

/// The extension's name in `Sec-WebSocket-Extensions`.
const NAME: &str = "permessage-deflate";

/// A window size in bits, as the parameters write it (8 to 15).
fn bits(value: &str) -> Option<u8> {
    value.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

impl Deflate {
    /// Server role: the first permessage-deflate offer among `Sec-WebSocket-Extensions` header
    /// values that wscope can accept (RFC 7692 §7.1: an offer with an unknown parameter, a
    /// repeated one or a bad value is declined, and the next one tried).
    pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Option<Self> {
        values
            .into_iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| split_outside_quotes(v, ','))
            .find_map(|offer| Self::accept(&offer))
    }

    /// The agreement for one offer (`permessage-deflate; param; param=value`), if acceptable.
    fn accept(offer: &str) -> Option<Self> {
        let mut agreed = Self {
            peer_max_window_bits: None,
        };
        for (name, value) in params(offer)? {
            match (name.as_str(), value.as_deref()) {
                ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
                ("server_max_window_bits", Some(v)) => {
                    agreed.peer_max_window_bits = Some(bits(v)?);
                }
                // A hint that the client can take a window limit; wscope sets none (its inflater
                // reads any window up to 15 bits).
                ("client_max_window_bits", None) => {}
                ("client_max_window_bits", Some(v)) => {
                    bits(v)?;
                }
                _ => return None,
            }
        }
        Some(agreed)
    }

    /// Server role: the `Sec-WebSocket-Extensions` answer for this agreement.
    pub fn response(&self) -> HeaderValue {
        let mut answer = format!("{NAME}; server_no_context_takeover; client_no_context_takeover");
        if let Some(bits) = self.peer_max_window_bits {
            answer.push_str(&format!("; server_max_window_bits={bits}"));
        }
        HeaderValue::from_str(&answer).unwrap_or(HeaderValue::from_static(NAME))
    }

    /// Client role: the offer for `Sec-WebSocket-Extensions`. The server is asked to compress
    /// every message on its own (the guard inflates each message with a fresh inflater) and may
    /// limit the client's window.
    pub fn offer() -> HeaderValue {
        HeaderValue::from_static(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             client_max_window_bits",
        )
    }

    /// Client role: what the server's `Sec-WebSocket-Extensions` answer (to [`Deflate::offer`])
    /// agrees, if anything; an error names what makes the answer one a client must fail
    /// (RFC 7692 §5: an extension not offered, a parameter unknown, repeated or out of range,
    /// or context takeover kept by the server).
    pub fn from_response<'a>(
        values: impl IntoIterator<Item = &'a HeaderValue>,
    ) -> Result<Option<Self>, &'static str> {
        let mut elements = Vec::new();
        for value in values {
            let value = value.to_str().map_err(|_| "extensions are not text")?;
            elements.extend(
                split_outside_quotes(value, ',')
                    .into_iter()
                    .filter(|e| !e.trim().is_empty()),
            );
        }
        let element = match elements.as_slice() {
            [] => return Ok(None),
            [one] => one,
            _ => return Err("more than one extension agreed"),
        };
        let params = params(element).ok_or("an extension that was not offered")?;
        let mut agreed = Self {
            peer_max_window_bits: None,
        };
        let mut no_takeover = false;
        for (name, value) in params {
            match (name.as_str(), value.as_deref()) {
                ("server_no_context_takeover", None) => no_takeover = true,
                ("client_no_context_takeover", None) => {}
                ("server_max_window_bits", Some(v)) => {
                    bits(v).ok_or("server_max_window_bits out of range")?;
                }
                ("client_max_window_bits", Some(v)) => {
                    let limit = bits(v).ok_or("client_max_window_bits out of range")?;
                    agreed.peer_max_window_bits = Some(limit);
                }
                _ => return Err("an unknown permessage-deflate parameter"),
            }
        }
        if !no_takeover {
            return Err("server_no_context_takeover not agreed");
        }
        Ok(Some(agreed))
    }

    /// The window this side compresses with, in bits; `None` when the peer asked for 8 bits,
    /// which zlib cannot produce (it makes 9): then wscope sends every message uncompressed,
    /// which RFC 7692 allows.
    pub fn compress_window_bits(&self) -> Option<u8> {
        match self.peer_max_window_bits {
            None => Some(15),
            Some(8) => None,
            Some(bits) => Some(bits),
        }
    }
}

/// The parameters of one permessage-deflate element (`permessage-deflate; a; b=1`), names in
/// lower case, values unquoted; `None` for another extension, or a parameter malformed or
/// repeated.
fn params(element: &str) -> Option<Vec<(String, Option<String>)>> {
    let mut parts = split_outside_quotes(element, ';').into_iter();
    if !parts.next()?.trim().eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut params: Vec<(String, Option<String>)> = Vec::new();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(unquote(v.trim())?)),
            None => (param.trim().to_ascii_lowercase(), None),
        };
        if params.iter().any(|(seen, _)| *seen == name) {
            return None;
        }
        params.push((name, value));
    }
    Some(params)
}

/// `text` split at `sep` where it is not inside a quoted string.
fn split_outside_quotes(text: &str, sep: char) -> Vec<String> {
    let (mut parts, mut part, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in text.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(std::mem::take(&mut part));
                continue;
            }
            _ => {}
        }
        part.push(c);
    }
    parts.push(part);
    parts
}

/// A parameter value: a token, or a quoted string (RFC 7692 §7.1: its unquoted text must be a
/// token too). `None` when it is malformed.
fn unquote(value: &str) -> Option<String> {
    let inner = match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?.replace('\\', ""),
        None => value.to_owned(),
    };
    (!inner.is_empty() && inner.bytes().all(|b| b.is_ascii_graphic() && b != b'"')).then_some(inner)
}

thread_local! {
    /// One compressor per window size used on this thread. With no context takeover each message
    /// is compressed on its own, so a compressor serves any connection, one message at a time,
    /// and no connection keeps one (zlib's deflate state is about 256 KiB).
    static COMPRESSORS: RefCell<Vec<(u8, Compress)>> = const { RefCell::new(Vec::new()) };
}

/// `payload` as a permessage-deflate message body (RFC 7692 §7.2.1: deflated, flushed, without
/// the final `00 00 ff ff`); `None` if zlib fails.
///
/// Every message is compressed, small or incompressible ones too (a few bytes longer then): RFC
/// 7692 allows sending some uncompressed, but clients that agreed to compression do not all take
/// it (Autobahn's kosoku runner fails on them).
pub(crate) fn compress(payload: &[u8], window_bits: u8) -> Option<Vec<u8>> {
    COMPRESSORS.with(|cell| {
        let mut compressors = cell.borrow_mut();
        let index = match compressors
            .iter()
            .position(|(bits, _)| *bits == window_bits)
        {
            Some(i) => i,
            None => {
                let c = Compress::new_with_window_bits(Compression::fast(), false, window_bits);
                compressors.push((window_bits, c));
                compressors.len() - 1
            }
        };
        let z = &mut compressors[index].1;
        z.reset();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let done = usize::try_from(z.total_in()).ok()?;
            z.compress_vec(&payload[done..], &mut out, FlushCompress::Sync)
                .ok()?;
            // The flush is complete once the input is consumed and zlib left output room unused.
            if usize::try_from(z.total_in()).ok()? == payload.len() && out.len() < out.capacity() {
                break;
            }
        }
        let body = out.strip_suffix(&[0, 0, 0xff, 0xff])?.len();
        out.truncate(body);
        Some(out)
    })
}

/// The compressed bodies of payloads that several connections send (a broadcast's members hold
/// clones of one payload): each is compressed once per window size. An entry keeps a clone of
/// its payload, so that the payload's address cannot be reused by other bytes while the entry
/// lives, and goes as soon as no one else holds the payload; at most [`SHARED_PAYLOADS`] are
/// kept, the oldest going first.
static SHARED: Mutex<Vec<SharedPayload>> = Mutex::new(Vec::new());
/// Entries kept at most: broadcasts in flight at once.
const SHARED_PAYLOADS: usize = 16;

struct SharedPayload {
    payload: Bytes,
    /// The body for each window size asked for (one, nearly always).
    bodies: Vec<(u8, Bytes)>,
}

impl SharedPayload {
    fn is_for(&self, payload: &Bytes) -> bool {
        self.payload.as_ptr() == payload.as_ptr() && self.payload.len() == payload.len()
    }

    fn body(&self, window_bits: u8) -> Option<Bytes> {
        self.bodies
            .iter()
            .find(|(bits, _)| *bits == window_bits)
            .map(|(_, body)| body.clone())
    }
}

/// A data message's payload as its permessage-deflate body ([`compress`]), compressed once
/// however many connections send the same payload; `None` if zlib fails.
pub(crate) fn compress_message(payload: Bytes, window_bits: u8) -> Option<Bytes> {
    if payload.is_unique() {
        // No one else holds these bytes: no one else will send them.
        return compress(&payload, window_bits).map(Bytes::from);
    }
    let lock = || SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    let found = lock()
        .iter()
        .find(|e| e.is_for(&payload))
        .and_then(|e| e.body(window_bits));
    let body = match found {
        Some(body) => body,
        None => {
            let body = Bytes::from(compress(&payload, window_bits)?);
            let mut shared = lock();
            match shared.iter_mut().find(|e| e.is_for(&payload)) {
                Some(entry) => entry.bodies.push((window_bits, body.clone())),
                None => {
                    if shared.len() >= SHARED_PAYLOADS {
                        shared.remove(0);
                    }
                    shared.push(SharedPayload {
                        payload: payload.clone(),
                        bodies: vec![(window_bits, body.clone())],
                    });
                }
            }
            body
        }
    };
    // The payload this connection held is let go: an entry only the cache still holds will
    // never be asked for again.
    drop(payload);
    lock().retain(|e| !e.payload.is_unique());
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(text: &str) -> Option<Deflate> {
        Deflate::negotiate([&HeaderValue::from_str(text).unwrap()])
    }

    #[test]
    fn plain_offers_are_accepted_without_context_takeover() {
        let agreed = offer("permessage-deflate").unwrap();
        assert_eq!(
            agreed.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(agreed.compress_window_bits(), Some(15));
        let agreed =
            offer("permessage-deflate; client_no_context_takeover; client_max_window_bits")
                .unwrap();
        assert_eq!(agreed.compress_window_bits(), Some(15));
    }

    #[test]
    fn the_server_window_is_honoured_and_repeated() {
        let agreed = offer("permessage-deflate; server_max_window_bits=10").unwrap();
        assert_eq!(agreed.compress_window_bits(), Some(10));
        assert!(agreed
            .response()
            .to_str()
            .unwrap()
            .ends_with("; server_max_window_bits=10"));
        let quoted = offer("permessage-deflate; server_max_window_bits=\"9\"").unwrap();
        assert_eq!(quoted.compress_window_bits(), Some(9));
        // zlib cannot make an 8-bit window: accepted, and nothing is sent compressed.
        let eight = offer("permessage-deflate; server_max_window_bits=8").unwrap();
        assert_eq!(eight.compress_window_bits(), None);
    }

    #[test]
    fn bad_offers_are_declined_and_the_next_one_is_tried() {
        for bad in [
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
        }
        let agreed = offer(
            "x-custom; a=\"1,2\", permessage-deflate; server_max_window_bits=20, \
             permessage-deflate; server_max_window_bits=12",
        )
        .unwrap();
        assert_eq!(agreed.compress_window_bits(), Some(12));
        let two_headers = Deflate::negotiate([
            &HeaderValue::from_static("x-other"),
            &HeaderValue::from_static("permessage-deflate"),
        ]);
        assert!(two_headers.is_some());
    }

    fn answer(text: &str) -> Result<Option<Deflate>, &'static str> {
        Deflate::from_response([&HeaderValue::from_str(text).unwrap()])
    }

    #[test]
    fn a_client_takes_the_answer_to_its_offer_and_fails_on_anything_else() {
        // wscope's own server answers wscope's own offer.
        let server_side = Deflate::negotiate([&Deflate::offer()]).unwrap();
        let agreed = Deflate::from_response([&server_side.response()]).unwrap();
        assert_eq!(agreed.unwrap().compress_window_bits(), Some(15));
        let limited =
            answer("permessage-deflate; server_no_context_takeover; client_max_window_bits=10");
        assert_eq!(limited.unwrap().unwrap().compress_window_bits(), Some(10));
        assert_eq!(Deflate::from_response([]), Ok(None));
        for bad in [
            "permessage-deflate",
            "permessage-deflate; server_no_context_takeover; mystery",
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover, permessage-deflate; server_no_context_takeover",
            "x-webkit-deflate-frame",
        ] {
            assert!(answer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn compressed_bodies_inflate_back() {
        let text = "a message that repeats, a message that repeats, a message that repeats";
        for (bits, text) in [(9, text), (12, text), (15, text), (15, "tiny"), (15, "")] {
            let body = compress(text.as_bytes(), bits).unwrap();
            assert!(body.len() < text.len() || text.len() < 16, "{text}");
            let mut z = flate2::Decompress::new(false);
            let mut input = body.clone();
            input.extend_from_slice(&[0, 0, 0xff, 0xff]);
            let mut out = Vec::with_capacity(1024);
            z.decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync)
                .unwrap();
            assert_eq!(out, text.as_bytes());
        }
        // RFC 7692 §7.2.3.6: an empty message compresses to one 0x00 byte.
        assert_eq!(compress(b"", 15), Some(vec![0]));
    }

    #[test]
    fn a_shared_payload_is_compressed_once_and_forgotten_with_its_last_holder() {
        let payload = Bytes::from(b"a broadcast, a broadcast, a broadcast".repeat(100));
        let members: Vec<Bytes> = (0..3).map(|_| payload.clone()).collect();
        let bodies: Vec<Bytes> = members
            .into_iter()
            .map(|p| compress_message(p, 15).unwrap())
            .collect();
        assert!(bodies.iter().all(|b| b.as_ptr() == bodies[0].as_ptr()));
        assert_eq!(bodies[0], compress(&payload, 15).unwrap());
        let other_window = compress_message(payload.clone(), 10).unwrap();
        assert_ne!(other_window.as_ptr(), bodies[0].as_ptr());
        let ptr = payload.as_ptr();
        let kept = |ptr| {
            SHARED
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.payload.as_ptr() == ptr)
        };
        assert!(kept(ptr));
        // The last holder's send forgets it; a payload no one shares is never kept.
        compress_message(payload, 15).unwrap();
        assert!(!kept(ptr));
        let alone = Bytes::from(vec![7u8; 1000]);
        let alone_ptr = alone.as_ptr();
        compress_message(alone, 15).unwrap();
        assert!(!kept(alone_ptr));
    }
}
