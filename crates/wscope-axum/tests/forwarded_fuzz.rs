//! Property tests of the forwarding-header walk and the trusted-proxy lists: whatever a client or
//! a proxy writes, the answer is the peer or an address that stands in the one header read — never
//! a panic, never an address found only in another header, and always the peer when the peer is
//! not a trusted proxy.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::IpAddr;
use std::str::FromStr;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use wscope_axum::{ClientIpHeader, TrustedProxies};

fn header_name(h: ClientIpHeader) -> HeaderName {
    HeaderName::from_static(h.as_str())
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u16; 8]>().prop_map(IpAddr::from),
        Just(IpAddr::from([127, 0, 0, 1])),
    ]
}

/// A hop as a header might write it: an address, a bracketed or ported one, or junk.
fn hop() -> impl Strategy<Value = String> {
    prop_oneof![
        any_ip().prop_map(|ip| ip.to_string()),
        any::<[u8; 4]>().prop_map(|a| format!("{}:{}", IpAddr::from(a), 8080)),
        any::<[u16; 8]>().prop_map(|a| format!("\"[{}]:443\"", IpAddr::from(a))),
        Just("unknown".to_owned()),
        Just("_hidden".to_owned()),
        ".{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_walk_answers_the_peer_or_a_hop_of_the_one_header(
        peer in any_ip(),
        hops in prop::collection::vec(hop(), 0..6),
        other in hop(),
        which in prop::sample::select(vec![
            ClientIpHeader::XForwardedFor, ClientIpHeader::Forwarded, ClientIpHeader::XRealIp,
        ]),
        trust_all in any::<bool>(),
    ) {
        let proxies = if trust_all {
            TrustedProxies::from_str("0.0.0.0/0, ::/0").unwrap()
        } else {
            TrustedProxies::default()
        }
        .header(which);
        let mut headers = HeaderMap::new();
        let joined = if which == ClientIpHeader::Forwarded {
            hops.iter().map(|h| format!("for={h}")).collect::<Vec<_>>().join(", ")
        } else {
            hops.join(", ")
        };
        if let Ok(v) = HeaderValue::from_str(&joined) {
            headers.insert(header_name(which), v);
        }
        // Another header's word is never taken.
        for name in ["x-forwarded-for", "forwarded", "x-real-ip"] {
            if name != header_name(which).as_str() {
                if let Ok(v) = HeaderValue::from_str(&format!("for={other}")) {
                    headers.insert(name, v);
                }
            }
        }
        let client = proxies.client_ip(peer, &headers);
        let canonical = |ip: IpAddr| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let from_header = hops.iter().any(|h| joined.contains(h) && h.contains(&client.to_string()));
        prop_assert!(
            canonical(client) == canonical(peer) || from_header,
            "{client} is neither the peer {peer} nor in {joined:?}"
        );
        if !proxies.contains(peer) {
            prop_assert_eq!(canonical(client), canonical(peer));
        }
    }

    #[test]
    fn proxy_lists_never_panic(text in ".{0,80}") {
        let _ = TrustedProxies::from_str(&text);
    }
}
