//! Allocations of `GET /api/connections?limit=10000&fields=…`'s JSON at 10,000 connections:
//! [`Registry::connections_json`] against the page built and projected to a `serde_json::Map`
//! per row, then serialized (how the handler answered before). Counted with an instrumented
//! global allocator, so this binary holds this one test (the harness's other threads would count
//! too). What it guards: the answer's allocations do not grow with its rows.
#![allow(clippy::unwrap_used, missing_docs)]

use std::alloc::System;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use wscope_core::query::ConnectionQuery;
use wscope_core::{ConnectionMeta, Registry};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const N: usize = 10_000;

#[test]
fn a_page_of_ten_thousand_rows_cut_to_fields_allocates_a_few_buffers_not_a_map_per_row() {
    let registry = Registry::new();
    let held: Vec<_> = (0..N)
        .map(|i| {
            let meta = ConnectionMeta::new("/ws/chat")
                .remote_addr(std::net::IpAddr::from([10, 0, (i >> 8) as u8, i as u8]))
                .user_agent(format!("Mozilla/5.0 (X11; Linux x86_64) client-{i}"))
                .user(format!("user-{i}"))
                .unwrap()
                .tag(format!("room:{}", i % 50))
                .unwrap();
            registry.accept(meta).unwrap()
        })
        .collect();
    let query = ConnectionQuery::from_pairs([
        ("limit", "10000"),
        (
            "fields",
            "age,idleTime,state,remoteAddress,userAgent,user,tags",
        ),
    ])
    .unwrap();
    let fields = query.fields.clone().unwrap();

    let region = Region::new(GLOBAL);
    let before =
        serde_json::to_vec(&registry.connections(&query).map(|i| fields.project(&i))).unwrap();
    let by_serde = region.change();
    let region = Region::new(GLOBAL);
    let now = registry.connections_json(&query);
    let by_hand = region.change();

    // Same rows: the clock may have moved between the two, so compare what does not move.
    let rows = |json: &[u8]| {
        let page: serde_json::Value = serde_json::from_slice(json).unwrap();
        let rows = page["connections"].as_array().unwrap().clone();
        rows.into_iter()
            .map(|r| (r["id"].clone(), r["userAgent"].clone(), r["tags"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(&now), rows(&before));
    assert_eq!(rows(&now).len(), N);
    println!(
        "{N} rows: serde {} allocations, {} reallocations ({} bytes allocated); connections_json \
         {} allocations, {} reallocations ({} bytes)",
        by_serde.allocations,
        by_serde.reallocations,
        by_serde.bytes_allocated,
        by_hand.allocations,
        by_hand.reallocations,
        by_hand.bytes_allocated
    );
    // Measured: 3 allocations (the page's entries, the ordered index's merge buffer, the JSON
    // buffer, sized on the first row) and 18 reallocations (the merge buffer growing by
    // doubling, as for any page); serde: 400,004 allocations, 40 a row.
    assert!(
        by_hand.allocations <= 6,
        "{} allocations for {N} rows",
        by_hand.allocations
    );
    assert!(
        by_hand.reallocations <= 24,
        "{} reallocations for {N} rows",
        by_hand.reallocations
    );
    drop(held);
}
