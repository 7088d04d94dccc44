//! Frame snapshots: a model fed synthetic messages, the UI state set as a
//! user would set it, rendered on ratatui's TestBackend. The snapshots in
//! `snapshots/` are the screens; review changes with `cargo insta review`
//! (or `INSTA_UPDATE=always` and `git diff`).

use std::time::Duration;

use conntrack_common::{Event, Tuple, cause, counter, kind};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::{Terminal, backend::TestBackend, buffer::Buffer, style::Color};

use super::{
    UiState,
    feed::{DemoView, RecordingView, ReplayView},
    render,
    state::{Env, Panel},
};
use crate::{
    event::{Counters, Message, Sample},
    kernel::{netns::NetnsReading, stats::ConntrackStats, sysctl::Sysctls},
    model::{
        Model, RunInfo,
        buckets::{BucketWalk, ChainEntry, HotBucket},
        holders::{HolderEntry, Holders, HoldersBuilder},
    },
};

const HOST_NS: u32 = 4_026_531_840;
const TEST_NS: u32 = 4_026_532_999;
/// CLOCK_MONOTONIC of the first sample; wall clock 12:00:00 UTC then.
const T0_NS: u64 = 1_000_000_000_000;
const WALL0_MS: u64 = 1_700_049_600_000;

/// One namespace's state at a sample.
#[derive(Clone, Copy)]
struct Ns {
    inum: u32,
    entries: u64,
    alloc: u64,
    free: u64,
    table_full: u64,
    ruleset: u64,
    /// False once the namespace is gone: no kernel reading any more.
    alive: bool,
}

impl Ns {
    fn new(inum: u32, entries: u64) -> Self {
        Self {
            inum,
            entries,
            alloc: entries,
            free: 0,
            table_full: 0,
            ruleset: 0,
            alive: true,
        }
    }
}

struct Scenario {
    max: u64,
    buckets: u64,
    tcp_timeout: u64,
}

impl Scenario {
    fn sample(&self, secs: u64, namespaces: &[Ns]) -> Message {
        let mut counters = Counters::default();
        let mut netns = Vec::new();
        let mut kernel = Vec::new();
        for ns in namespaces {
            counters.0[counter::ALLOC as usize] += ns.alloc;
            counters.0[counter::FREE as usize] += ns.free;
            counters.0[(counter::DROP_FIRST + u32::from(cause::TABLE_FULL)) as usize] +=
                ns.table_full;
            counters.0[(counter::DROP_FIRST + u32::from(cause::RULESET)) as usize] += ns.ruleset;
            let mut c = crate::event::NetnsSample {
                id: u64::from(ns.inum),
                inum: ns.inum,
                alloc: ns.alloc,
                free: ns.free,
                alive: ns.alive,
                entries: (!ns.alive).then_some(ns.entries),
                ..crate::event::NetnsSample::default()
            };
            c.drops[cause::TABLE_FULL as usize] = ns.table_full;
            c.drops[cause::RULESET as usize] = ns.ruleset;
            netns.push(c);
            if !ns.alive {
                continue;
            }
            kernel.push(NetnsReading {
                inum: ns.inum,
                name: (ns.inum == TEST_NS).then(|| "loadtest".to_owned()),
                owner: None,
                count: Some(ns.entries),
                max: Some(self.max),
                stats: Some(ConntrackStats {
                    drop: ns.table_full,
                    ..ConntrackStats::default()
                }),
                source_used: None,
                error: None,
                enter: crate::kernel::netns::Enter::Unknown,
                tcp_timeout_established: None,
            });
        }
        Message::Sample(Box::new(Sample {
            mono_ns: T0_NS + secs * 1_000_000_000,
            wall_ms: WALL0_MS + secs * 1000,
            counters,
            netns,
            kernel,
            sysctls: Sysctls {
                nf_conntrack_max: Some(self.max),
                nf_conntrack_buckets: Some(self.buckets),
                nf_conntrack_tcp_timeout_established: Some(self.tcp_timeout),
                ..Sysctls::default()
            },
        }))
    }
}

fn drop_event(secs: f64, cause: u8, dst: [u8; 4], dport: u16, netns: u32) -> Event {
    let mut tuple = Tuple {
        family: 2,
        proto: if cause == conntrack_common::cause::RULESET {
            6
        } else {
            17
        },
        sport: 40_000 + dport % 7,
        dport,
        ..Tuple::default()
    };
    tuple.src[..4].copy_from_slice(&[127, 0, 0, 1]);
    tuple.dst[..4].copy_from_slice(&dst);
    let mut ifname = [0u8; 16];
    ifname[..2].copy_from_slice(b"lo");
    Event {
        ts_ns: T0_NS + (secs * 1e9) as u64,
        kind: kind::DROP,
        cause,
        tcp_flags: if tuple.proto == 6 { 0x02 } else { 0 },
        netns,
        ifname,
        tuple,
        ..Event::default()
    }
}

fn env(color: bool) -> Env {
    Env {
        interval: Duration::from_secs(1),
        uptime: Duration::from_secs(83),
        objsize: Some(256),
        conntrack_module: Some(false),
        color,
        bucket_walker: false,
    }
}

struct Screen {
    model: Model,
    ui: UiState,
}

impl Screen {
    fn new(color: bool) -> Self {
        Self {
            model: Model::new(RunInfo {
                backend: "tracepoint".into(),
                kernel: "6.18.44-test".into(),
            }),
            ui: UiState::new(env(color)),
        }
    }

    fn feed(&mut self, msg: Message) -> &mut Self {
        self.model.apply(msg);
        self
    }

    fn key(&mut self, code: KeyCode) -> &mut Self {
        self.ui.on_key(KeyEvent::new(code, KeyModifiers::NONE));
        self
    }

    fn keys(&mut self, text: &str) -> &mut Self {
        for c in text.chars() {
            self.key(KeyCode::Char(c));
        }
        self
    }

    fn draw(&mut self, width: u16, height: u16) -> Terminal<TestBackend> {
        self.ui.refresh(&self.model);
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
        terminal
            .draw(|frame| render(&self.model, &self.ui, frame))
            .expect("draw");
        terminal
    }
}

/// An idle machine: a few entries in the host namespace, defaults that
/// follow the guide.
fn empty() -> Screen {
    let s = Scenario {
        max: 262_144,
        buckets: 262_144,
        tcp_timeout: 21_600,
    };
    let mut screen = Screen::new(true);
    for t in 0..4 {
        screen.feed(s.sample(t, &[Ns::new(HOST_NS, 12)]));
    }
    screen
}

/// A load test filling a namespace at about 20 entries/s towards a limit
/// of 1000, with the kernel's default established timeout.
fn filling() -> Screen {
    let s = Scenario {
        max: 1000,
        buckets: 1024,
        tcp_timeout: 432_000,
    };
    let mut screen = Screen::new(true);
    for t in 0..=20 {
        let entries = 520 + 20 * t;
        screen.feed(s.sample(
            t,
            &[
                Ns::new(HOST_NS, 40),
                Ns {
                    free: 5 * t,
                    ..Ns::new(TEST_NS, entries)
                },
            ],
        ));
    }
    screen
}

/// The namespace hit the limit: table-full drops to one service, and a
/// firewall rule dropping SYNs to another.
fn dropping() -> Screen {
    let s = Scenario {
        max: 1000,
        buckets: 1024,
        tcp_timeout: 432_000,
    };
    let mut screen = Screen::new(true);
    for t in 0..=12u64 {
        let full = t.saturating_sub(6) * 40;
        let ruleset = t.saturating_sub(9);
        // The drops of the second before each sample, streamed before it
        // (the live source drains the ring before reading the counters).
        if t >= 7 {
            let before = t as f64 - 1.0;
            let mut events: Vec<Event> = (0..5)
                .map(|i| {
                    drop_event(
                        before + 0.1 * f64::from(i),
                        cause::TABLE_FULL,
                        [127, 0, 0, 1],
                        5300 + (i % 2) as u16,
                        TEST_NS,
                    )
                })
                .collect();
            if t >= 10 {
                events.push(drop_event(
                    before + 0.7,
                    cause::RULESET,
                    [10, 9, 8, 7],
                    22,
                    TEST_NS,
                ));
            }
            screen.feed(Message::Events(events));
        }
        screen.feed(s.sample(
            t,
            &[
                Ns::new(HOST_NS, 40),
                Ns {
                    table_full: full,
                    ruleset,
                    ..Ns::new(TEST_NS, (700 + 50 * t).min(1000))
                },
            ],
        ));
    }
    screen
}

fn walk() -> BucketWalk {
    let mut histogram = [0u64; 13];
    histogram[0] = 610;
    histogram[1] = 280;
    histogram[2] = 100;
    histogram[3] = 28;
    histogram[4] = 5;
    histogram[7] = 1;
    BucketWalk {
        ts_ms: WALL0_MS + 12_000,
        buckets: 1024,
        entries: 500,
        nodes: 1000,
        histogram,
        mean: 1000.0 / 1024.0,
        mean_nonempty: 1000.0 / 414.0,
        max: 7,
        p99: 3,
        hottest: vec![HotBucket {
            index: 517,
            len: 7,
            entries: vec![ChainEntry {
                direction: "original".into(),
                proto: "udp".into(),
                src: "127.0.0.1".into(),
                sport: 40001,
                dst: "127.0.0.1".into(),
                dport: 5300,
                state: String::new(),
                netns: TEST_NS,
                timeout_s: 29,
                ..ChainEntry::default()
            }],
        }],
        heat: (0..64).map(|i| [0, 1, 2, 1, 3, 0, 7, 2][i % 8]).collect(),
        duration_ns: 3_400_000,
        cpu_ns: 3_000_000,
        restarts: 0,
        warnings: Vec::new(),
        holders: Some(holders()),
        ..BucketWalk::default()
    }
}

/// The incident of issue 18: 40 idle connections to :9000 in the test
/// namespace, a few UDP flows beside them, a handful in the host's.
fn holders() -> Holders {
    let mut b = HoldersBuilder::default();
    let v4 = |a: [u8; 4]| {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&a);
        b
    };
    let entry = |netns, proto, state, src, dst, dport, timeout_s| HolderEntry {
        netns,
        family: 2,
        proto,
        state,
        src: v4(src),
        dst: v4(dst),
        dport,
        timeout_s,
    };
    for i in 0..40 {
        b.add(&entry(
            TEST_NS,
            6,
            3,
            [10, 1, 0, 7],
            [10, 1, 0, 2],
            9000,
            431_000 + i,
        ));
    }
    for p in 0..6u16 {
        b.add(&entry(
            TEST_NS,
            17,
            13,
            [127, 0, 0, 1],
            [127, 0, 0, 1],
            5300 + p,
            29,
        ));
    }
    for _ in 0..4 {
        b.add(&entry(
            HOST_NS,
            6,
            7,
            [10, 0, 0, 1],
            [10, 0, 0, 9],
            443,
            100,
        ));
    }
    let tcp = [
        "NONE",
        "SYN_SENT",
        "SYN_RECV",
        "ESTABLISHED",
        "FIN_WAIT",
        "CLOSE_WAIT",
    ];
    let mut tcp: Vec<String> = tcp.map(String::from).to_vec();
    tcp.extend(["LAST_ACK", "TIME_WAIT"].map(String::from));
    b.finish(64, &tcp)
}

fn text(terminal: &Terminal<TestBackend>) -> String {
    terminal.backend().to_string()
}

fn has_color(buffer: &Buffer) -> bool {
    buffer
        .content
        .iter()
        .any(|c| c.fg != Color::Reset || c.bg != Color::Reset || c.underline_color != Color::Reset)
}

#[test]
fn empty_table() {
    let t = empty().draw(120, 40);
    let screen = text(&t);
    assert!(screen.contains("Nothing to change"), "{screen}");
    insta::assert_snapshot!("empty_120x40", screen);
}

#[test]
fn before_the_first_interval() {
    let mut screen = Screen::new(true);
    screen.feed(
        Scenario {
            max: 262_144,
            buckets: 262_144,
            tcp_timeout: 21_600,
        }
        .sample(0, &[Ns::new(HOST_NS, 12)]),
    );
    let t = screen.draw(80, 24);
    assert!(text(&t).contains("waiting for the first interval"));
    insta::assert_snapshot!("waiting_80x24", text(&t));
}

#[test]
fn filling_table_warns_and_projects() {
    let mut screen = filling();
    let t = screen.draw(120, 40);
    let shown = text(&t);
    // 920 of 1000: past the 90% warning, 20 entries/s net, 4 s to full.
    assert!(shown.contains("920 of 1,000"), "{shown}");
    assert!(shown.contains(" 92%"), "{shown}");
    assert!(shown.contains("full in 4s at +20.0/s"), "{shown}");
    assert!(shown.contains("WARNING"), "{shown}");
    assert!(
        shown.contains("sysctl -w net.netfilter.nf_conntrack_max=2048"),
        "{shown}"
    );
    insta::assert_snapshot!("filling_120x40", shown);
    // The gauge is yellow at 90-95%.
    let buf = t.backend().buffer();
    assert!(
        buf.content
            .iter()
            .any(|c| c.symbol() == "█" && c.fg == Color::Yellow),
        "warning colour on the gauge"
    );
}

#[test]
fn drops_are_listed_with_top_destinations() {
    let mut screen = dropping();
    let t = screen.draw(120, 40);
    let shown = text(&t);
    assert!(shown.contains("127.0.0.1:5300"), "{shown}");
    assert!(shown.contains("FULL: new connections drop"), "{shown}");
    assert!(shown.contains("CRITICAL"), "{shown}");
    assert!(shown.contains("240 packets were"), "{shown}");
    insta::assert_snapshot!("drops_120x40", shown);
    let buf = t.backend().buffer();
    assert!(
        buf.content
            .iter()
            .any(|c| c.symbol() == "█" && c.fg == Color::Red),
        "critical colour on the gauge"
    );
}

/// Issue 18 item 7: at 160 and 200 columns the drops panel keeps the
/// source and TCP-flag columns (a SYN must be seen as one; at 160 they were
/// cut to make room for the top destinations beside the list), and the
/// header keeps `lost` (`probe misses` is shown only when there are some).
#[test]
fn wide_layouts_keep_source_flags_and_the_header() {
    for (w, h, name) in [(160, 50, "drops_160x50"), (200, 50, "drops_200x50")] {
        let t = dropping().draw(w, h);
        let shown = text(&t);
        assert!(shown.contains("SOURCE"), "{w}x{h}:\n{shown}");
        assert!(shown.contains("FLG"), "{w}x{h}:\n{shown}");
        assert!(shown.contains("lost"), "{w}x{h}:\n{shown}");
        insta::assert_snapshot!(name, shown);
    }
}

#[test]
fn smallest_layout_80x24() {
    let t = dropping().draw(80, 24);
    let shown = text(&t);
    for panel in Panel::ALL {
        assert!(
            shown.contains(panel.title()),
            "{} missing:\n{shown}",
            panel.title()
        );
    }
    assert!(
        shown.contains("q quit") && shown.contains("r record"),
        "{shown}"
    );
    insta::assert_snapshot!("drops_80x24", shown);
}

#[test]
fn smaller_than_80x24_says_so() {
    let t = dropping().draw(70, 20);
    assert!(text(&t).contains("needs 80x24; this terminal is 70x20"));
}

#[test]
fn help_overlay() {
    let mut screen = dropping();
    screen.key(KeyCode::Char('?'));
    let t = screen.draw(80, 24);
    let shown = text(&t);
    assert!(shown.contains("Help"), "{shown}");
    insta::assert_snapshot!("help_80x24", shown);
}

#[test]
fn no_color_means_no_colour_at_all() {
    let mut plain = dropping();
    plain.ui.env.color = false;
    let t = plain.draw(120, 40);
    assert!(
        !has_color(t.backend().buffer()),
        "a cell has a colour under NO_COLOR"
    );
    // Same text as with colour: nothing is lost but the colours.
    let coloured = dropping().draw(120, 40);
    assert!(has_color(coloured.backend().buffer()));
    assert_eq!(text(&t), text(&coloured));
    // Focus still shows, by the border.
    plain.key(KeyCode::Char('4'));
    let t = plain.draw(120, 40);
    assert!(text(&t).contains("┏"), "thick border on the focused panel");
    assert!(!has_color(t.backend().buffer()));
    insta::assert_snapshot!("no_color_focus_drops_120x40", text(&t));
}

#[test]
fn bucket_walk_is_drawn_when_present() {
    let mut screen = dropping();
    let before = text(&screen.draw(120, 40));
    assert!(before.contains("does not do yet"), "{before}");
    assert!(
        before.contains("Estimate: 2 × entries / buckets"),
        "{before}"
    );
    screen.feed(Message::Buckets(Box::new(walk())));
    let shown = text(&screen.draw(120, 40));
    assert!(shown.contains("max 7 · mean 0.98 · p99 3"), "{shown}");
    assert!(shown.contains("#517 len 7"), "{shown}");
    insta::assert_snapshot!("buckets_120x40", shown);
}

#[test]
fn holders_panel_shows_the_top_holder_and_regroups() {
    let mut screen = dropping();
    let before = text(&screen.draw(120, 40));
    assert!(before.contains("No table walks here"), "{before}");
    screen.feed(Message::Buckets(Box::new(walk())));
    let shown = text(&screen.draw(120, 40));
    assert!(shown.contains("7 Holders · 50 entries · by dst"), "{shown}");
    assert!(shown.contains("tcp 10.1.0.2:9000"), "{shown}");
    // Zoomed at the smallest size: the top holder, its share, namespace
    // name, state and time left are all on its line.
    screen.key(KeyCode::Char('7')).key(KeyCode::Char('z'));
    let zoomed = text(&screen.draw(80, 24));
    let line = zoomed
        .lines()
        .find(|l| l.contains("10.1.0.2:9000"))
        .unwrap_or_else(|| panic!("{zoomed}"));
    for want in ["40", "80%", "loadtest", "ESTABLISHED", "4d"] {
        assert!(line.contains(want), "{want} in {line}");
    }
    insta::assert_snapshot!("holders_zoom_80x24", zoomed);
    // s groups by source, then by state.
    screen.key(KeyCode::Char('s'));
    let by_src = text(&screen.draw(80, 24));
    assert!(by_src.contains("by src"), "{by_src}");
    assert!(by_src.contains("tcp 10.1.0.7"), "{by_src}");
    screen.key(KeyCode::Char('s'));
    let by_state = text(&screen.draw(80, 24));
    assert!(by_state.contains("tcp ESTABLISHED"), "{by_state}");
    assert!(by_state.contains("udp UNREPLIED"), "{by_state}");
    // The filter narrows it: the host namespace's holders only.
    screen.key(KeyCode::Char('s')).key(KeyCode::Char('s'));
    screen
        .key(KeyCode::Char('/'))
        .keys(&format!("netns {HOST_NS}"))
        .key(KeyCode::Enter);
    let filtered = text(&screen.draw(80, 24));
    assert!(filtered.contains("tcp 10.0.0.9:443"), "{filtered}");
    assert!(!filtered.contains("9000"), "{filtered}");
    // Scrolling stays within the rows.
    screen.key(KeyCode::Char('/'));
    screen.ui.editing = Some(String::new());
    screen.key(KeyCode::Enter);
    screen.draw(80, 24);
    for _ in 0..20 {
        screen.key(KeyCode::Down);
    }
    assert_eq!(screen.ui.scroll[Panel::Holders.index()], 7);
}

#[test]
fn filter_narrows_drops_and_namespaces() {
    let mut screen = dropping();
    screen
        .key(KeyCode::Char('/'))
        .keys("port 22")
        .key(KeyCode::Enter);
    let shown = text(&screen.draw(120, 40));
    assert!(shown.contains("10.9.8.7:22"), "{shown}");
    assert!(!shown.contains("127.0.0.1:5300 "), "{shown}");
    assert!(shown.contains("3 matching since start"), "{shown}");

    screen.key(KeyCode::Char('/'));
    screen.ui.editing = Some(String::new());
    screen.keys("loadtest").key(KeyCode::Enter);
    let shown = text(&screen.draw(120, 40));
    assert!(shown.contains("1 of 2"), "{shown}");
    assert!(!shown.contains(&HOST_NS.to_string()), "{shown}");

    // The gauge follows a namespace filter: the host namespace holds 40.
    screen.key(KeyCode::Char('/'));
    screen.ui.editing = Some(String::new());
    screen.keys(&format!("netns {HOST_NS}")).key(KeyCode::Enter);
    let shown = text(&screen.draw(120, 40));
    assert!(shown.contains("40 of 1,000 · netns 4026531840"), "{shown}");
    assert!(shown.contains("Table fill · [netns:4026531840]"), "{shown}");
    assert!(
        shown.contains("CRITICAL netns 4026532999"),
        "advice stays machine-wide: {shown}"
    );
}

#[test]
fn zoomed_advice_at_80x24() {
    let mut screen = dropping();
    screen.key(KeyCode::Char('6')).key(KeyCode::Char('z'));
    let shown = text(&screen.draw(80, 24));
    assert!(
        shown.contains("$ sysctl -w net.netfilter.nf_conntrack_max=2048"),
        "{shown}"
    );
    // Scrolling moves one finding at a time, down to the timeout advice.
    screen.key(KeyCode::Down);
    let scrolled = text(&screen.draw(80, 24));
    assert!(
        scrolled.contains("nf_conntrack_tcp_timeout_established=21600"),
        "{scrolled}"
    );
    insta::assert_snapshot!("advice_zoom_80x24", shown);
}

#[test]
fn paused_header_and_sorted_namespaces() {
    let mut screen = dropping();
    screen.key(KeyCode::Char('p'));
    screen.key(KeyCode::Char('5')).key(KeyCode::Char('s'));
    let shown = text(&screen.draw(120, 40));
    assert!(shown.contains(" PAUSED "), "{shown}");
    assert!(shown.contains("by drops"), "{shown}");
    // At the narrowest size the header's tail is cut; a frozen screen
    // still says so.
    let narrow = text(&screen.draw(80, 24));
    let header = narrow.lines().next().unwrap_or_default();
    assert!(header.contains(" PAUSED "), "{header}");
}

#[test]
fn departed_namespaces_are_grey_and_say_so() {
    let s = Scenario {
        max: 1000,
        buckets: 1024,
        tcp_timeout: 432_000,
    };
    let mut screen = Screen::new(true);
    for t in 0..=3u64 {
        let alive = t < 2;
        screen.feed(s.sample(
            t,
            &[
                Ns::new(HOST_NS, 40),
                Ns {
                    free: if alive { 0 } else { 300 },
                    table_full: 9,
                    alive,
                    ..Ns::new(TEST_NS, if alive { 300 } else { 0 })
                },
            ],
        ));
    }
    let shown = text(&screen.draw(120, 40));
    let line = shown
        .lines()
        .find(|l| l.contains(&TEST_NS.to_string()) && l.contains("(gone)"))
        .unwrap_or_else(|| panic!("no departed row: {shown}"));
    assert!(line.contains("(gone)"), "{line}");
    let host = shown
        .lines()
        .find(|l| l.contains(&HOST_NS.to_string()))
        .unwrap_or_default();
    assert!(!host.contains("(gone)"), "{host}");
}

fn recording(elapsed_s: u64) -> RecordingView {
    RecordingView {
        file: "ctscope-20231115-120000.ctrace".into(),
        events: 48_213,
        bytes: 5_502_976,
        lost: 0,
        elapsed: Duration::from_secs(elapsed_s),
        starting: false,
        stopping: false,
    }
}

#[test]
fn recording_indicator_stays_in_the_footer() {
    let mut screen = dropping();
    screen.ui.recording = Some(recording(83));
    let t = screen.draw(120, 40);
    let shown = text(&t);
    let footer = shown.lines().last().expect("footer");
    for part in [
        "● REC ctscope-20231115-120000.ctrace",
        "1:23",
        "48,213 events",
        "5.2 MiB",
        "r stop",
    ] {
        assert!(footer.contains(part), "{part}: {footer}");
    }
    insta::assert_snapshot!("recording_120x40", shown);

    // A message goes beside it rather than over it, and at 80 columns the
    // indicator still fits.
    screen.ui.say("recording every allocation, free and drop");
    screen.ui.recording = Some(RecordingView {
        lost: 12,
        stopping: true,
        ..recording(5)
    });
    let shown = text(&screen.draw(80, 24));
    let footer = shown.lines().last().expect("footer");
    assert!(
        footer.contains("■ SAVING ctscope-20231115-120000.ctrace · 0:05"),
        "{footer}"
    );
    assert!(footer.contains("lost 12"), "{footer}");
    insta::assert_snapshot!("recording_stopping_80x24", shown);
}

#[test]
fn replay_header_shows_the_position_speed_and_state() {
    let mut screen = dropping();
    screen.ui.replay = Some(ReplayView {
        file: "load.ctrace".into(),
        position: Duration::from_secs(12),
        length: Some(Duration::from_secs(90)),
        paused: true,
        finished: false,
        speed: Some(2.0),
        damaged: false,
    });
    let shown = text(&screen.draw(120, 40));
    let header = shown.lines().next().expect("header");
    assert!(
        header.contains(" ctscope  REPLAY load.ctrace · 0:12 / 1:30 ×2  PAUSED  · at 12:00:12"),
        "{header}"
    );
    assert!(!header.contains(" up "), "no uptime in a replay: {header}");
    let footer = shown.lines().last().expect("footer");
    assert!(
        footer.contains("n step") && footer.contains("seek 10s"),
        "{footer}"
    );
    insta::assert_snapshot!("replay_120x40", shown);

    // At the end, at 80 columns: what the data is comes first.
    screen.ui.replay = Some(ReplayView {
        position: Duration::from_secs(90),
        finished: true,
        speed: None,
        ..screen.ui.replay.clone().expect("replay")
    });
    let shown = text(&screen.draw(80, 24));
    let header = shown.lines().next().expect("header");
    assert!(header.contains("1:30 / 1:30 max  END "), "{header}");
    insta::assert_snapshot!("replay_end_80x24", shown);

    // Help lists the playback keys.
    screen.key(KeyCode::Char('?'));
    let shown = text(&screen.draw(80, 24));
    assert!(shown.contains("play to the next snapshot"), "{shown}");
}

#[test]
fn demo_header_names_the_load() {
    let mut screen = dropping();
    screen.ui.demo = Some(DemoView {
        kind: "udp",
        rate: Some(2000),
        netns: TEST_NS,
        squeezed: Some(300),
        sent: 24_000,
        refused: 310,
    });
    let shown = text(&screen.draw(120, 40));
    let header = shown.lines().next().expect("header");
    assert!(
        header.contains(
            "DEMO udp 2,000/s → netns 4026532999 · 24,000 sent · 310 refused · max 300 (squeezed)"
        ),
        "{header}"
    );
}

/// Issue 18 item 6: a destination dropped once showed `2` among the top
/// destinations once more destinations had been dropped than are kept
/// (each new one takes the place of one counted once). Every count shown
/// is now the true count, or marked as a bound that holds it.
#[test]
fn top_destinations_never_show_a_bound_as_a_count() {
    let s = Scenario {
        max: 1000,
        buckets: 1024,
        tcp_timeout: 21_600,
    };
    let mut screen = Screen::new(false);
    screen.feed(s.sample(0, &[Ns::new(TEST_NS, 10)]));
    // 5,000 destinations dropped once each: more than the 4,096 kept.
    let events: Vec<Event> = (0..5000u16)
        .map(|i| {
            let dst = [127, 1, (i >> 8) as u8, i as u8];
            drop_event(0.5, cause::TABLE_FULL, dst, 46_000 + i, TEST_NS)
        })
        .collect();
    screen.feed(Message::Events(events));
    screen.feed(s.sample(
        1,
        &[Ns {
            table_full: 5000,
            ..Ns::new(TEST_NS, 10)
        }],
    ));
    screen.ui.refresh(&screen.model);
    let top = &screen.ui.view.drops.top_dst;
    assert!(!top.is_empty());
    for (dst, t) in top {
        assert!(
            t.count == 1 || !t.is_exact(),
            "{dst} shown as exactly {} for one drop",
            t.count
        );
    }
    assert!(screen.ui.view.drops.top_scope.contains('≤'));
    let shown = text(&screen.draw(160, 50));
    assert!(shown.contains("≤2"), "{shown}");
}

/// Issue 18 item 6: early in a demo one screen showed `863 refused`,
/// `full 183` and `857 matching` for the same drops. The counts per cause
/// are the kernel's at the latest sample; the drops listed and counted
/// from events ran on to the present, and with a namespace filter the
/// counts per cause were still the whole machine's. Every figure of the
/// panel is now of the sample's moment and of the namespaces filtered.
#[test]
fn drop_figures_are_of_the_sample_and_of_the_filtered_namespace() {
    let s = Scenario {
        max: 1000,
        buckets: 1024,
        tcp_timeout: 21_600,
    };
    let mut screen = Screen::new(false);
    screen.feed(s.sample(0, &[Ns::new(HOST_NS, 10), Ns::new(TEST_NS, 10)]));
    let full = |secs: f64, netns: u32, port: u16| {
        drop_event(secs, cause::TABLE_FULL, [127, 1, 0, 1], port, netns)
    };
    // Before the sample: 3 in the test namespace, 4 in the host's.
    let mut events: Vec<Event> = (0..3).map(|i| full(0.5, TEST_NS, 5000 + i)).collect();
    events.extend((0..4).map(|i| full(0.6, HOST_NS, 6000 + i)));
    screen.feed(Message::Events(events));
    screen.feed(s.sample(
        1,
        &[
            Ns {
                table_full: 4,
                ..Ns::new(HOST_NS, 10)
            },
            Ns {
                table_full: 3,
                ..Ns::new(TEST_NS, 10)
            },
        ],
    ));
    // After it, streamed before the next one: 2 more in the test namespace.
    screen.feed(Message::Events(vec![
        full(1.2, TEST_NS, 5003),
        full(1.3, TEST_NS, 5004),
    ]));
    screen
        .key(KeyCode::Char('/'))
        .keys(&format!("netns {TEST_NS}"))
        .key(KeyCode::Enter);
    screen.ui.refresh(&screen.model);
    let d = &screen.ui.view.drops;
    let table_full = d
        .by_cause
        .iter()
        .find(|(c, _)| *c == crate::model::drops::Cause::TableFull)
        .map(|(_, n)| *n);
    assert_eq!(table_full, Some(3), "the namespace's, at the sample");
    assert_eq!(d.lines.len(), 3, "{:?}", d.lines);
    assert_eq!(d.top_scope, "3 matching since start");
    let listed: u64 = d.top_dst.iter().map(|(_, t)| t.count).sum();
    assert_eq!(listed, 3);
    let shown = text(&screen.draw(160, 50));
    assert!(shown.contains("full 3 "), "{shown}");
    assert!(shown.contains("(3 matching since start)"), "{shown}");

    // Without a filter: the machine's counts, the same moment.
    screen.key(KeyCode::Char('/'));
    screen.ui.editing = Some(String::new());
    screen.key(KeyCode::Enter);
    screen.ui.refresh(&screen.model);
    let d = &screen.ui.view.drops;
    assert_eq!(d.by_cause[0], (crate::model::drops::Cause::TableFull, 7));
    assert_eq!(d.lines.len(), 7);
}

/// Issue 18 item 9: the top destinations continued the drop list's rows
/// with nothing between them. They are in their own block: a rule above
/// them when stacked, beside them when side by side.
#[test]
fn top_destinations_have_their_own_block() {
    let stacked = text(&dropping().draw(120, 40));
    let lines: Vec<&str> = stacked.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("TOP DESTINATIONS"))
        .expect("top destinations");
    assert!(lines[at - 1].contains("││──────"), "{stacked}");
    let side = text(&dropping().draw(200, 50));
    assert!(side.contains("FLG │TOP DESTINATIONS"), "{side}");
    assert!(
        side.lines()
            .any(|l| l.contains("→ 10.9.8.7:22") && l.contains("S   │127.0.0.1:5300")),
        "{side}"
    );
}

/// Issue 18 item 10: a namespace is shown by its `ip netns` name, unless a
/// container runtime made that name up; then by who holds it.
#[test]
fn namespaces_are_shown_by_name_or_by_who_holds_them() {
    use super::derive::shown_name;
    let owner = Some("nginx (pid 42, container 3f1c2b9a8d7e)");
    let podman = "netns-0ddc2975-0fb6-5bab-4d75-a3e84dc992fb";
    let cni = "cni-0ddc2975-0fb6-5bab-4d75-a3e84dc992fb";
    assert_eq!(shown_name(Some(podman), owner).as_deref(), owner);
    assert_eq!(shown_name(Some(cni), owner).as_deref(), owner);
    assert_eq!(shown_name(Some(podman), None).as_deref(), Some(podman));
    assert_eq!(shown_name(Some("blue"), owner).as_deref(), Some("blue"));
    assert_eq!(shown_name(None, owner).as_deref(), owner);
    assert_eq!(shown_name(None, None), None);
}
