use conntrack_common::{cause, counter};

use super::*;
use crate::kernel::netns::NetnsReading;

fn reading(inum: u32, count: u64, drop: u64, early_drop: u64) -> NetnsReading {
    NetnsReading {
        inum,
        name: None,
        owner: None,
        count: Some(count),
        max: Some(1000),
        stats: Some(ConntrackStats {
            drop,
            early_drop,
            ..ConntrackStats::default()
        }),
        source_used: None,
        error: None,
        enter: crate::kernel::netns::Enter::Unknown,
        tcp_timeout_established: None,
    }
}

fn sample(secs: u64, alloc: u64, table_full: u64, kernel: Vec<NetnsReading>) -> Message {
    let mut counters = Counters::default();
    counters.0[counter::ALLOC as usize] = alloc;
    counters.0[(counter::DROP_FIRST + u32::from(cause::TABLE_FULL)) as usize] = table_full;
    let mut ns = NetnsSample {
        id: 7,
        inum: 7,
        alloc,
        alive: true,
        ..NetnsSample::default()
    };
    ns.drops[cause::TABLE_FULL as usize] = table_full;
    // Every namespace read is alive, with its inode as identity.
    let mut netns = vec![ns];
    netns.extend(kernel.iter().filter(|r| r.inum != 7).map(|r| NetnsSample {
        id: u64::from(r.inum),
        inum: r.inum,
        alive: true,
        ..NetnsSample::default()
    }));
    Message::Sample(Box::new(Sample {
        mono_ns: secs * 1_000_000_000,
        wall_ms: 1_700_000_000_000 + secs * 1000,
        counters,
        netns,
        kernel,
        sysctls: Sysctls {
            nf_conntrack_max: Some(1000),
            nf_conntrack_buckets: Some(1024),
            ..Sysctls::default()
        },
    }))
}

#[test]
fn first_sample_is_the_baseline() {
    let mut m = Model::new(RunInfo::default());
    m.apply(sample(10, 5, 0, vec![reading(7, 5, 2, 0)]));
    assert_eq!(m.intervals(), 0);
    assert!(m.latest.is_none());
    m.apply(sample(11, 105, 3, vec![reading(7, 105, 5, 1)]));
    let i = m.latest.as_ref().expect("interval");
    assert_eq!(i.totals.alloc, 100, "counted since the baseline");
    assert_eq!(i.totals.drop_table_full, 3);
    assert_eq!(
        i.kernel.drop, 3,
        "kernel drop delta since the first reading"
    );
    assert_eq!(i.totals.early_drop, 1, "early drops come from the kernel");
    assert_eq!(i.rates.alloc, 100.0);
    assert_eq!(i.interval_ms, 1000);
    assert_eq!(i.table.entries, Some(105));
    assert_eq!(i.table.max, Some(1000));
}

#[test]
fn rates_cover_only_the_last_interval() {
    let mut m = Model::new(RunInfo::default());
    m.apply(sample(0, 0, 0, vec![]));
    m.apply(sample(1, 100, 0, vec![]));
    m.apply(sample(3, 300, 10, vec![]));
    let i = m.latest.as_ref().expect("interval");
    assert_eq!(i.totals.alloc, 300);
    assert_eq!(i.rates.alloc, 100.0, "200 over 2 s");
    assert_eq!(i.rates.drop_table_full, 5.0);
    assert_eq!(m.intervals(), 2);
}

#[test]
fn kernel_sums_survive_a_namespace_going_away() {
    let mut m = Model::new(RunInfo::default());
    m.apply(sample(
        0,
        0,
        0,
        vec![reading(7, 0, 0, 0), reading(8, 0, 10, 0)],
    ));
    m.apply(sample(
        1,
        0,
        0,
        vec![reading(7, 0, 4, 0), reading(8, 0, 15, 0)],
    ));
    assert_eq!(m.latest.as_ref().expect("i").kernel.drop, 9);
    m.apply(sample(2, 0, 0, vec![reading(7, 0, 6, 0)]));
    assert_eq!(
        m.latest.as_ref().expect("i").kernel.drop,
        11,
        "namespace 8's 5 are kept"
    );
}

#[test]
fn namespaces_with_activity_get_rows() {
    let mut m = Model::new(RunInfo::default());
    m.apply(sample(
        0,
        0,
        0,
        vec![reading(7, 0, 0, 0), reading(9, 0, 0, 0)],
    ));
    m.apply(sample(
        1,
        50,
        2,
        vec![
            reading(7, 48, 2, 0),
            reading(9, 0, 0, 0),
            reading(11, 3, 0, 0),
        ],
    ));
    let rows = &m.latest.as_ref().expect("i").netns;
    let inums: Vec<u32> = rows.iter().map(|r| r.inum).collect();
    assert_eq!(inums, vec![7, 11], "idle namespace 9 is left out");
    assert_eq!(rows[0].alloc, 50);
    assert_eq!(rows[0].drops, 2);
    assert_eq!(rows[0].drops_by_cause.table_full, 2);
    assert_eq!(rows[0].entries, Some(48));
    assert_eq!(rows[0].kernel.map(|k| k.drop), Some(2));
    assert_eq!(rows[1].entries, Some(3));
}

#[test]
fn history_is_bounded() {
    let mut m = Model::new(RunInfo::default());
    for s in 0..(HISTORY as u64 + 10) {
        m.apply(sample(s, s, 0, vec![]));
    }
    assert_eq!(m.history.len(), HISTORY);
    // Per-namespace rows only in the newest intervals.
    let with_rows = m.history.iter().filter(|i| !i.netns.is_empty()).count();
    assert_eq!(with_rows, NETNS_HISTORY);
    assert!(!m.history.back().expect("newest").netns.is_empty());
}

/// An hour of churn, 10 namespaces a second coming and going with 1,000
/// alive at any time: the model's memory stays bounded, and the rows plus
/// `departed` add up to the totals at every sample.
#[test]
fn an_hour_of_namespace_churn_stays_bounded_and_adds_up() {
    let mut m = Model::new(RunInfo::default());
    let live = 1000u64;
    let mut next_id = 0u64;
    let mut alive: std::collections::VecDeque<u64> = (0..live).collect();
    next_id += live;
    let mut freed_total = 0u64;
    let mut retiring: Vec<u64> = Vec::new();
    for secs in 0..3600u64 {
        let mut netns: Vec<NetnsSample> = alive
            .iter()
            .map(|&id| NetnsSample {
                id,
                // Inode numbers are reused: only 64 of them.
                inum: 4_026_532_000 + (id % 64) as u32,
                alloc: secs,
                free: secs,
                entries: Some(0),
                alive: true,
                ..NetnsSample::default()
            })
            .collect();
        // Last appearance of the namespaces that left a moment ago.
        for &id in &retiring {
            netns.push(NetnsSample {
                id,
                inum: 4_026_532_000 + (id % 64) as u32,
                alloc: secs,
                free: secs,
                entries: None,
                alive: false,
                retired: true,
                ..NetnsSample::default()
            });
        }
        let counted: u64 = netns.iter().map(|n| n.alloc).sum::<u64>() + freed_total;
        freed_total += retiring.len() as u64 * secs;
        let mut counters = Counters::default();
        counters.0[counter::ALLOC as usize] = counted;
        m.apply(Message::Sample(Box::new(Sample {
            mono_ns: secs * 1_000_000_000,
            wall_ms: 1_700_000_000_000 + secs * 1000,
            counters,
            netns,
            kernel: vec![],
            sysctls: Sysctls::default(),
        })));
        if let Some(i) = m.latest.as_ref() {
            let rows: u64 = i.netns.iter().map(|r| r.alloc).sum();
            assert_eq!(rows + i.departed.alloc, i.totals.alloc, "at {secs} s");
        }
        retiring = (0..10).filter_map(|_| alive.pop_front()).collect();
        for _ in 0..10 {
            alive.push_back(next_id);
            next_id += 1;
        }
    }
    let rows: usize = m.history.iter().map(|i| i.netns.len()).sum();
    assert!(
        rows <= NETNS_HISTORY * (live as usize + 10),
        "{rows} rows kept"
    );
    let i = m.latest.as_ref().expect("latest");
    assert_eq!(i.departed.namespaces, 35_990);
}

#[test]
fn the_latest_walk_goes_into_each_interval() {
    let mut m = Model::default();
    m.apply(sample(0, 0, 0, vec![]));
    m.apply(sample(1, 0, 0, vec![]));
    assert_eq!(m.latest.as_ref().and_then(|i| i.buckets.as_ref()), None);
    let walk = buckets::BucketWalk {
        buckets: 1024,
        nodes: 600,
        entries: 300,
        max: 4,
        ..buckets::BucketWalk::empty(1024)
    };
    m.apply(Message::Buckets(Box::new(walk)));
    m.apply(sample(2, 0, 0, vec![]));
    let b = m
        .latest
        .as_ref()
        .and_then(|i| i.buckets.clone())
        .expect("summary");
    assert_eq!((b.buckets, b.nodes, b.entries, b.max), (1024, 600, 300, 4));
    assert_eq!(m.buckets.as_ref().map(|w| w.nodes), Some(600));
}
