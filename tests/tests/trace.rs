//! `ctscope record`, `replay`, `export` and `info` against the real kernel:
//! a recording made under load holds exactly what `ctscope stats` counted
//! and what the kernel counted, survives SIGKILL, and damaged files give
//! the documented errors.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, UdpSocket},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use ctscope_integration::*;

const WAIT: Duration = Duration::from_secs(10);

/// A trace file under the temp dir, removed (with its rotated parts) on drop.
struct TraceFile(PathBuf);

impl TraceFile {
    fn new(tag: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("ctscope-it-{tag}-{}.ctrace", std::process::id()));
        let me = Self(path);
        me.clean();
        me
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }

    fn part(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}.{n}", self.path()))
    }

    fn clean(&self) {
        let _ = std::fs::remove_file(&self.0);
        for n in 1..1000 {
            if std::fs::remove_file(self.part(n)).is_err() {
                break;
            }
        }
    }
}

impl Drop for TraceFile {
    fn drop(&mut self) {
        self.clean();
    }
}

fn ctscope(args: &[&str]) -> Output {
    Command::new(ctscope_bin())
        .args(args)
        .output()
        .expect("run ctscope")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `ctscope export` as parsed JSON lines.
fn export(file: &str, kinds: &str) -> (Output, Vec<serde_json::Value>) {
    let out = ctscope(&["export", file, "--format", "jsonl", "--kind", kinds]);
    let rows = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (out, rows)
}

fn info(file: &str) -> (Output, serde_json::Value) {
    let out = ctscope(&["info", file, "--json"]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        )
    });
    (out, v)
}

/// Counts of exported rows by (type, cause) for one namespace.
fn counts_in(rows: &[serde_json::Value], inum: u32) -> HashMap<String, u64> {
    let mut c = HashMap::new();
    for r in rows
        .iter()
        .filter(|r| r["netns"].as_u64() == Some(u64::from(inum)))
    {
        let key = match r["cause"].as_str() {
            Some(cause) => format!("drop/{cause}"),
            None => r["type"].as_str().unwrap_or("?").to_owned(),
        };
        *c.entry(key).or_default() += 1;
    }
    c
}

/// Stats records until the namespace's counts stop changing for two
/// records in a row; returns the last.
fn settled_row(ct: &Ctscope, inum: u32) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    let mut same = 0;
    loop {
        let rec = ct.next_json(WAIT).expect("stats record");
        let row = netns_row(&rec, inum).cloned();
        let key = row
            .as_ref()
            .map(|r| (num(r, "/alloc"), num(r, "/free"), num(r, "/drops")));
        if key.is_some_and(|k| k.0 > 0) && key == last {
            same += 1;
            if same == 2 {
                return row.expect("row");
            }
        } else {
            same = 0;
        }
        last = key;
        assert!(Instant::now() < deadline, "counts never settled: {rec}");
    }
}

#[test]
fn a_recording_under_load_holds_what_stats_and_the_kernel_counted() {
    require_root();
    let mut sysctl = SysctlGuard::new().expect("sysctl lock");
    let ns = Netns::new().expect("namespace");
    let file = TraceFile::new("load");
    // 20,500 new flows into a limit of 20,000 per namespace: the last ones
    // are refused (table full) unless early drop makes room.
    sysctl
        .set("nf_conntrack_max", 20_000)
        .expect("lower nf_conntrack_max");
    let before = ns.kernel_stats().expect("kernel stats");
    let stats = Ctscope::start(&["stats", "--json", "--interval", "0.5"]).expect("stats");
    let mut rec =
        Ctscope::start(&["record", "-o", file.path(), "--interval", "0.5"]).expect("record");

    let mut sent = udp_flows(&ns, 20_500, 10_000, false).expect("udp");
    let mut flows: u64 = 20_500;
    // Early drop usually makes room by evicting an unreplied entry; the
    // kernel refuses a flow only when the few buckets it scans hold none of
    // this namespace's entries (a VM run once saw 500 evictions and no
    // refusal). Send more until the kernel has refused some.
    for k in 0..20u16 {
        if ns.kernel_stats().expect("kernel stats")["drop"] > before["drop"] {
            break;
        }
        sent += udp_flows(&ns, 500, 31_000 + k * 500, false).expect("udp");
        flows += 500;
    }
    let row = settled_row(&stats, ns.inum);
    let after = ns.kernel_stats().expect("kernel stats");
    let count = ns.count().expect("count");
    let status = rec.signal(libc::SIGINT).expect("record exits");
    assert!(status.success(), "{status}: {}", rec.stderr_text());
    drop(stats);

    let kernel_drops = after["drop"] - before["drop"];
    let max = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max");
    // On 5.10 early drop always found an unreplied UDP entry to evict (a VM
    // run: 30,500 flows, 10,500 early drops, no refusal), so the refusal
    // part is not exercised there; every count below is still checked
    // (with no drops on either side).
    if kernel_drops == 0 && !kernel_at_least(6, 1) {
        eprintln!(
            "SKIPPED: table-full refusals before 6.1: early drop made room for all {flows} flows"
        );
    } else {
        assert!(
            kernel_drops > 0,
            "the table never filled: {sent} sent, count {count}, max {max:?}, kernel {after:?}"
        );
    }
    let mode = std::fs::metadata(&file.0)
        .expect("trace")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "traces hold addresses");

    let (out, rows) = export(file.path(), "alloc,free,drops");
    assert!(out.status.success(), "{}", stderr(&out));
    let c = counts_in(&rows, ns.inum);
    let alloc = c.get("alloc").copied().unwrap_or(0);
    let free = c.get("free").copied().unwrap_or(0);
    let full = c.get("drop/table_full").copied().unwrap_or(0);
    // What stats reported over the same run.
    assert_eq!(alloc, num(&row, "/alloc"), "{row}");
    assert_eq!(free, num(&row, "/free"), "{row}");
    assert_eq!(full, num(&row, "/drops_by_cause/table_full"), "{row}");
    assert_eq!(
        full + c.get("drop/invalid").copied().unwrap_or(0),
        num(&row, "/drops")
    );
    // What the kernel counted: its drop counter, and the entries it holds
    // (early drop frees some, and each free is in the file).
    assert_eq!(full, kernel_drops);
    assert_eq!(
        alloc - free,
        count,
        "allocation events minus frees = nf_conntrack_count"
    );
    // A refused flow fails its send, so count the flows attempted.
    assert_eq!(alloc + full, flows, "every flow is an allocation or a drop");

    // Replayed through the model, the namespace's row is what stats printed.
    let out = ctscope(&["replay", file.path(), "--stats"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let last: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| serde_json::from_str(l).expect("json"))
        .expect("replay printed records");
    assert_schema("stats.schema.json", &last);
    let replayed = netns_row(&last, ns.inum).expect("row in replay");
    for field in ["/alloc", "/free", "/drops", "/drops_by_cause/table_full"] {
        assert_eq!(
            num(replayed, field),
            num(&row, field),
            "{field}: {replayed} vs {row}"
        );
    }

    let (out, summary) = info(file.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary["end_reason"], "signal", "{summary}");
    assert_eq!(summary["truncated"], false);
    assert_eq!(summary["damaged"], false);
    assert_eq!(num(&summary, "/lost/ring_full"), 0, "{summary}");
    assert!(num(&summary, "/events/alloc") >= alloc);
    assert!(num(&summary, "/snapshots") >= 3, "{summary}");
    assert_eq!(
        summary["kernel"].as_str(),
        Some(
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .expect("uname")
                .trim()
        )
    );
}

#[test]
fn sigkill_leaves_a_readable_file_plain_and_compressed() {
    require_root();
    let _lock = shared_lock();
    let ns = Netns::new().expect("namespace");
    for compress in [false, true] {
        let file = TraceFile::new(if compress { "kill-z" } else { "kill" });
        let mut args = vec!["record", "-o", file.path()];
        if compress {
            args.push("--compress");
        }
        let mut rec = Ctscope::start(&args).expect("record");
        let first = if compress { 30_000 } else { 20_000 };
        assert_eq!(udp_flows(&ns, 3000, first, false).expect("udp"), 3000);
        // Flushed at least every half second: after 1.5 s everything is in
        // the file, whatever happens to the recorder.
        std::thread::sleep(Duration::from_millis(1500));
        rec.signal(libc::SIGKILL).expect("killed");

        let (out, summary) = info(file.path());
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(summary["truncated"], true, "{summary}");
        assert_eq!(summary["damaged"], false, "{summary}");
        assert!(summary["end_reason"].is_null(), "{summary}");
        let issues = summary["issues"].as_array().expect("issues");
        assert!(
            issues
                .iter()
                .all(|i| i["message"].as_str().is_some_and(|m| m.contains("offset"))),
            "{summary}"
        );
        let (out, rows) = export(file.path(), "alloc");
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("warning"), "the cut is reported");
        let mine: Vec<_> = rows
            .iter()
            .filter(|r| r["netns"].as_u64() == Some(u64::from(ns.inum)))
            .collect();
        assert_eq!(mine.len(), 3000, "compress={compress}");
    }
}

/// A short recording with some traffic, for the bad-input tests.
fn small_recording(file: &TraceFile) {
    let ns = Netns::new().expect("namespace");
    let mut rec = Ctscope::start(&["record", "-o", file.path()]).expect("record");
    udp_flows(&ns, 2000, 20_000, false).expect("udp");
    std::thread::sleep(Duration::from_millis(600));
    udp_flows(&ns, 2000, 30_000, false).expect("udp");
    std::thread::sleep(Duration::from_millis(600));
    assert!(rec.signal(libc::SIGTERM).expect("exit").success());
}

#[test]
fn truncated_and_damaged_files_give_the_documented_errors() {
    require_root();
    let _lock = shared_lock();
    let file = TraceFile::new("bad");
    small_recording(&file);
    let good = std::fs::read(&file.0).expect("trace");
    let (_, all) = export(file.path(), "alloc");
    let broken = TraceFile::new("broken");

    let events = event_frames(&good);
    assert!(
        events.len() >= 2,
        "two bursts, two event frames: {events:?}"
    );

    // Cut in the middle of the last events frame: everything before the
    // cut is exported, exit 0.
    let (off, len) = events[events.len() - 1];
    let cut = off + len / 2;
    std::fs::write(&broken.0, &good[..cut]).expect("write");
    let (out, summary) = info(broken.path());
    assert!(out.status.success());
    assert_eq!(summary["truncated"], true, "{summary}");
    let msg = summary["issues"][0]["message"].as_str().expect("message");
    assert!(msg.contains("byte offset"), "{msg}");
    let (out, rows) = export(broken.path(), "alloc");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!rows.is_empty() && rows.len() < all.len());
    assert_eq!(rows[..], all[..rows.len()], "a prefix of the events");

    // A flipped bit in the middle: reported with its offset, skipped, the
    // rest exported, exit status 1.
    let (off, len) = events[0];
    let mut bad = good.clone();
    bad[off + len / 2] ^= 0x40;
    std::fs::write(&broken.0, &bad).expect("write");
    let out = ctscope(&["info", broken.path()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("DAMAGED") && text.contains("damaged data at byte offset"),
        "{text}"
    );
    let (out, rows) = export(broken.path(), "alloc");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("damaged data at byte offset"),
        "{}",
        stderr(&out)
    );
    assert!(
        rows.len() < all.len() && rows.len() + 4096 >= all.len(),
        "one frame lost"
    );
    assert!(
        stderr(&out).contains(&format!("damaged data at byte offset {off}")),
        "{}",
        stderr(&out)
    );
    let out = ctscope(&["replay", broken.path(), "--stats"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!out.stdout.is_empty(), "replay goes on past the damage");

    // Not a trace, an unknown version: exit 2, one clear line.
    std::fs::write(&broken.0, b"{\"ts_ms\": 1}\n").expect("write");
    let out = ctscope(&["info", broken.path()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a ctscope trace"),
        "{}",
        stderr(&out)
    );
    let mut v2 = good.clone();
    v2[8] = 9;
    let crc = crc32(&v2[..12]);
    v2[12..16].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&broken.0, &v2).expect("write");
    let out = ctscope(&["export", broken.path()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("version 9 is not supported"),
        "{}",
        stderr(&out)
    );
    let out = ctscope(&["replay", "/nonexistent/trace", "--stats"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot open"), "{}", stderr(&out));
}

/// (offset, length) of each EVENTS frame of an uncompressed trace
/// (docs/trace-format.md: 16-byte preamble, 28-byte frame headers).
fn event_frames(file: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 16;
    while at + 28 <= file.len() {
        let len = u32::from_le_bytes([file[at + 4], file[at + 5], file[at + 6], file[at + 7]]);
        let total = 28 + len as usize;
        if file[at + 8] == 3 {
            out.push((at, total));
        }
        at += total;
    }
    out
}

/// CRC-32 (IEEE), to forge a preamble with another version.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn rotation_and_compression_keep_every_event() {
    require_root();
    let _lock = shared_lock();
    let ns = Netns::new().expect("namespace");
    let file = TraceFile::new("rotate");
    let mut rec = Ctscope::start(&[
        "record",
        "-o",
        file.path(),
        "--compress",
        "--max-size",
        "64K",
        "--interval",
        "0.25",
    ])
    .expect("record");
    for chunk in 0..4 {
        udp_flows(&ns, 5000, 10_000 + chunk * 5000, false).expect("udp");
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(rec.signal(libc::SIGINT).expect("exit").success());
    assert!(file.part(1).exists(), "rotated at 64K");
    for n in 1..3 {
        if let Ok(m) = std::fs::metadata(file.part(n)) {
            assert_eq!(m.permissions().mode() & 0o777, 0o600);
        }
    }
    let (out, summary) = info(file.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(num(&summary, "/parts") >= 2, "{summary}");
    assert_eq!(summary["compression"], "zstd");
    let (out, rows) = export(file.path(), "alloc");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts_in(&rows, ns.inum)["alloc"], 20_000);
    // A part alone replays (it starts with the last snapshot before it).
    let out = ctscope(&["replay", &file.part(1).to_string_lossy(), "--stats"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn filters_keep_only_matching_events() {
    require_root();
    let _lock = shared_lock();
    let a = Netns::new().expect("namespace a");
    let b = Netns::new().expect("namespace b");
    let file = TraceFile::new("filter");
    let inum = a.inum.to_string();
    let mut rec = Ctscope::start(&[
        "record",
        "-o",
        file.path(),
        "--netns",
        &inum,
        "--port",
        "20005",
    ])
    .expect("record");
    udp_flows(&a, 10, 20_000, false).expect("udp");
    udp_flows(&b, 10, 20_000, false).expect("udp");
    std::thread::sleep(Duration::from_millis(800));
    assert!(rec.signal(libc::SIGINT).expect("exit").success());
    let (_, rows) = export(file.path(), "alloc,free,drops");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["dport"], 20005);
    assert_eq!(rows[0]["netns"].as_u64(), Some(u64::from(a.inum)));
    let (_, summary) = info(file.path());
    let filter: Vec<&str> = summary["filter"]
        .as_array()
        .expect("filter")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert_eq!(filter, [format!("netns={inum}").as_str(), "port=20005"]);
    // Counts stay complete: snapshots are never filtered.
    assert!(num(&summary, "/counted/alloc") >= 20, "{summary}");
}

/// Benchmark (not run by `cargo xtask test`): record while one core
/// creates new flows as fast as it can, and check nothing was lost.
/// `cargo test -p ctscope-integration --test trace -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: run by hand"]
fn benchmark_recording_at_full_rate_loses_nothing() {
    require_root();
    let _lock = shared_lock();
    let ns = Netns::new().expect("namespace");
    let file = TraceFile::new("bench");
    let ring = std::env::var("CTSCOPE_BENCH_RING_MIB").unwrap_or_else(|_| "16".into());
    let mut args = vec!["record", "-o", file.path(), "--ring-size", &ring];
    let compress = std::env::var_os("CTSCOPE_BENCH_COMPRESS").is_some();
    if compress {
        args.push("--compress");
    }
    let mut rec = Ctscope::start(&args).expect("record");
    const FLOWS: u32 = 200_000;
    let took = ns
        .run(|| {
            let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
            let start = Instant::now();
            for i in 0..FLOWS {
                let dst = Ipv4Addr::new(127, 0, 1 + (i / 50_000) as u8, 1);
                let _ = sock.send_to(b"x", (dst, 10_000 + (i % 50_000) as u16));
            }
            start.elapsed()
        })
        .expect("load");
    std::thread::sleep(Duration::from_secs(2));
    assert!(rec.signal(libc::SIGINT).expect("exit").success());
    let (_, summary) = info(file.path());
    let (_, rows) = export(file.path(), "alloc");
    let mine = counts_in(&rows, ns.inum).get("alloc").copied().unwrap_or(0);
    let bytes: u64 = std::fs::metadata(&file.0).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "benchmark: {FLOWS} flows in {:.2} s ({:.0}/s), ring {ring} MiB, compress {compress}: \
         {mine} allocation events in the namespace, lost {}, file {} bytes, {}",
        took.as_secs_f64(),
        f64::from(FLOWS) / took.as_secs_f64(),
        summary["lost"],
        bytes,
        Path::new(file.path()).display()
    );
    assert_eq!(num(&summary, "/lost/ring_full"), 0, "{summary}");
    assert_eq!(num(&summary, "/lost/pending_overflow"), 0, "{summary}");
    assert_eq!(mine, u64::from(FLOWS));
}

/// `file` (uncompressed) with its END record replaced by one of reason
/// `rotated` naming `next` as the next part (docs/trace-format.md: frame
/// header, CRC-32 of bytes 4-23 and the payload).
fn with_next_part(file: &[u8], next: &str) -> Vec<u8> {
    let mut at = 16;
    while at + 28 <= file.len() {
        let len = u32::from_le_bytes([file[at + 4], file[at + 5], file[at + 6], file[at + 7]]);
        let total = 28 + len as usize;
        if file[at + 8] == 6 {
            let mut end: serde_json::Value =
                serde_json::from_slice(&file[at + 28..at + total]).expect("END json");
            end["reason"] = "rotated".into();
            end["next_part"] = next.into();
            let payload = serde_json::to_vec(&end).expect("json");
            let mut out = file[..at].to_vec();
            let mut header = file[at..at + 28].to_vec();
            header[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
            let mut covered = header[4..24].to_vec();
            covered.extend_from_slice(&payload);
            header[24..28].copy_from_slice(&crc32(&covered).to_le_bytes());
            out.extend_from_slice(&header);
            out.extend_from_slice(&payload);
            return out;
        }
        at += total;
    }
    panic!("no END record");
}

/// Runs ctscope, failing the test if it has not ended within `limit`.
fn ctscope_within(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(ctscope_bin())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ctscope");
    let deadline = Instant::now() + limit;
    // Drained as it comes: a looping export fills any pipe.
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::Read::take(stdout, 64 << 20), &mut buf);
        buf
    });
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ctscope {args:?} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = child.wait_with_output().expect("output");
    out.stdout = reader.join().expect("reader");
    out
}

#[test]
fn parts_that_name_each_other_end_with_the_cycle_error() {
    require_root();
    let _lock = shared_lock();
    let file = TraceFile::new("cycle");
    small_recording(&file);
    let good = std::fs::read(&file.0).expect("trace");
    let (_, all) = export(file.path(), "snapshots");
    let name = |p: &Path| p.file_name().expect("name").to_string_lossy().into_owned();

    // An END naming its own file; then two parts naming each other.
    let me = name(&file.0);
    std::fs::write(&file.0, with_next_part(&good, &me)).expect("write");
    let pair = TraceFile::new("cycle-pair");
    let second = pair.part(1);
    std::fs::write(&pair.0, with_next_part(&good, &name(&second))).expect("write");
    std::fs::write(&second, with_next_part(&good, &name(&pair.0))).expect("write");

    for (trace, parts) in [(file.path(), 1), (pair.path(), 2)] {
        let limit = Duration::from_secs(5);
        let out = ctscope_within(&["info", trace, "--json"], limit);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(num(&summary, "/parts"), parts, "{summary}");
        let msg = summary["issues"][0]["message"].as_str().expect("issue");
        assert!(
            msg.contains("cycle of parts at byte offset") && msg.contains("already read"),
            "{msg}"
        );

        let out = ctscope_within(
            &["export", trace, "--format", "jsonl", "--kind", "snapshots"],
            limit,
        );
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("cycle of parts"), "{}", stderr(&out));
        let rows = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(rows, all.len() * parts as usize, "each part exported once");

        let out = ctscope_within(&["replay", trace, "--stats"], limit);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("cycle of parts"), "{}", stderr(&out));
    }
}
