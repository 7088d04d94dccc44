//! The drop view under the flood it exists for: a spoofed SYN flood against
//! a full table, one million drop events each from a different source,
//! through `Model::apply` in the batches the live source sends. Model only:
//! no kernel, no root. Goal: at least 2 M events/s (issue 14).
//!
//! `cargo bench -p conntrack-user --bench model_drops` prints the rate;
//! `-- --json` prints one JSON object for `cargo xtask bench`.

use std::{hint::black_box, time::Instant};

use conntrack_common::{Event, Tuple, cause, kind};
use ctscope::{
    event::Message,
    model::{Model, RunInfo},
};

const EVENTS: u32 = 1_000_000;
/// Events per `Message::Events`: the live source's batch from a busy ring.
const BATCH: usize = 4096;
const RUNS: usize = 5;

/// A table-full drop of a SYN from 10.x.y.z (distinct per `i`) to one
/// service, the shape of a spoofed flood.
fn flood_event(i: u32) -> Event {
    let mut tuple = Tuple {
        family: 2,
        proto: 6,
        sport: (i % 50_000) as u16 + 1024,
        dport: 443,
        ..Tuple::default()
    };
    let [_, b, c, d] = i.to_be_bytes();
    tuple.src[..4].copy_from_slice(&[10 + (i >> 24) as u8, b, c, d]);
    tuple.dst[..4].copy_from_slice(&[192, 0, 2, 1]);
    let mut ifname = [0u8; 16];
    ifname[..4].copy_from_slice(b"eth0");
    Event {
        ts_ns: u64::from(i) * 1000,
        kind: kind::DROP,
        cause: cause::TABLE_FULL,
        tcp_flags: 0x02,
        netns: 4026531840,
        ifindex: 2,
        len: 60,
        ifname,
        tuple,
        ..Event::default()
    }
}

/// Events per second of one run over a fresh model.
fn run() -> f64 {
    let batches: Vec<Vec<Event>> = (0..EVENTS)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|c| c.iter().map(|i| flood_event(*i)).collect())
        .collect();
    let mut model = Model::new(RunInfo::default());
    let start = Instant::now();
    for batch in batches {
        model.apply(Message::Events(batch));
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(model.drops.matched, u64::from(EVENTS), "every drop counted");
    black_box(model.drops.top_src.top(10));
    f64::from(EVENTS) / secs
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let mut rates: Vec<f64> = (0..RUNS).map(|_| run()).collect();
    rates.sort_by(f64::total_cmp);
    let (min, median, max) = (rates[0], rates[RUNS / 2], rates[RUNS - 1]);
    if json {
        println!(
            r#"{{"events":{EVENTS},"runs":{RUNS},"median":{median:.0},"min":{min:.0},"max":{max:.0}}}"#
        );
    } else {
        println!(
            "model_drops: {EVENTS} distinct-source drops through Model::apply: \
             median {:.2} M events/s (min {:.2}, max {:.2}; {RUNS} runs; goal >= 2 M/s)",
            median / 1e6,
            min / 1e6,
            max / 1e6
        );
    }
}
