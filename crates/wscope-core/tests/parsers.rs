//! Property tests of what wscope parses from outside itself: durations, sizes and counts (flags,
//! env, TOML, admin requests), admin request bodies, connection ids and the stats JSON. Each
//! parser must refuse bad text with an error, never panic, and read back what it writes.
#![allow(clippy::unwrap_used, missing_docs)]

use proptest::prelude::*;
use wscope_core::units::{parse_count, parse_duration, parse_size};
use wscope_core::wire::AdminRequest;
use wscope_core::{ConnectionId, Snapshot};

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn units_never_panic(text in ".{0,40}") {
        let _ = parse_duration(&text);
        let _ = parse_size(&text);
        let _ = parse_count(&text);
    }

    #[test]
    fn numbers_of_any_form_never_panic(x in any::<f64>(), n in any::<u64>(), e in -400i32..400) {
        for text in [x.to_string(), format!("{x:e}"), n.to_string(), format!("1e{e}"), format!("{n}ms"), format!("{n}KiB")] {
            let _ = parse_duration(&text);
            let _ = parse_size(&text);
            let _ = parse_count(&text);
        }
    }

    #[test]
    fn sizes_read_back(n in 1u64..1_000_000, unit in prop::sample::select(vec![
        ("", 1u64), ("B", 1), ("k", 1024), ("KiB", 1024), ("MiB", 1 << 20), ("KB", 1000), ("mb", 1_000_000),
    ])) {
        let text = format!("{n}{}", unit.0);
        prop_assert_eq!(parse_size(&text).unwrap() as u64, n * unit.1);
    }

    #[test]
    fn whole_seconds_and_millis_read_back(n in 0u64..1_000_000) {
        prop_assert_eq!(parse_duration(&n.to_string()).unwrap().as_secs(), n);
        prop_assert_eq!(parse_duration(&format!("{n}ms")).unwrap().as_millis() as u64, n);
    }

    #[test]
    fn admin_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = AdminRequest::from_json(&body);
    }

    #[test]
    fn admin_json_objects_never_panic(
        action in prop::sample::select(vec!["get_stats", "close_all", "close", "cleanup", "x", ""]),
        code in any::<i64>(),
        reason in ".{0,200}",
        id in ".{0,40}",
    ) {
        let body = serde_json::json!({"action": action, "code": code, "reason": reason, "id": id});
        match AdminRequest::from_json(body.to_string().as_bytes()) {
            Ok(req) => {
                prop_assert_eq!(req.action(), action);
                // What parses serializes and parses again to the same request.
                let again = AdminRequest::from_json(serde_json::to_string(&req).unwrap().as_bytes());
                prop_assert_eq!(again.unwrap(), req);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn connection_ids_never_panic_and_read_back(text in ".{0,60}", prefix in "[a-z0-9.-]{1,20}", seq in any::<u64>()) {
        let _ = text.parse::<ConnectionId>();
        let id: ConnectionId = format!("{prefix}-{seq}").parse().unwrap();
        prop_assert_eq!(id.seq(), seq);
        prop_assert_eq!(id.to_string(), format!("{prefix}-{seq}"));
    }

    #[test]
    fn stats_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = serde_json::from_slice::<Snapshot>(&body);
    }
}
