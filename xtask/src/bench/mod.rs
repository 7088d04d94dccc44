//! `cargo xtask bench`: what ctscope costs the machine it watches, and how it
//! compares with what users would run instead, measured side by side in one
//! run on this machine; and the model's own speed under a spoofed flood. Writes docs/benchmarks.md (`--smoke`: a short run
//! that only checks the harness works, written to target/bench-smoke.md).

mod fleet;
mod measure;
mod report;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

pub use measure::Stats;
use report::{Report, Row};

/// Sizes for a full run and for the smoke run CI does.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Flows per connection-rate trial.
    pub flows: u64,
    /// Trials per configuration (the median is reported).
    pub trials: usize,
    /// Seconds of unrelated slab-heavy work per trial.
    pub slab_secs: f64,
    /// Flows for the event-loss comparison.
    pub loss_flows: u64,
    /// Entries (and buckets) for the table walk.
    pub walk_entries: u64,
    /// Seconds over which an idle ctscope's CPU share is measured.
    pub idle_cpu_secs: f64,
    /// Live namespaces for the fleet-scale measurement.
    pub fleet_namespaces: u64,
    /// Seconds with them all live, then as long again of churn at 10/s.
    pub fleet_secs: f64,
}

pub const FULL: Scale = Scale {
    flows: 200_000,
    trials: 5,
    slab_secs: 3.0,
    loss_flows: 200_000,
    walk_entries: 1 << 20,
    idle_cpu_secs: 30.0,
    fleet_namespaces: 1000,
    fleet_secs: 70.0,
};

pub const SMOKE: Scale = Scale {
    flows: 5_000,
    trials: 1,
    slab_secs: 0.3,
    loss_flows: 5_000,
    walk_entries: 4096,
    idle_cpu_secs: 2.0,
    fleet_namespaces: 20,
    fleet_secs: 3.0,
};

/// The sections, in report order, by the name `--only` takes.
const SECTIONS: [&str; 7] = ["rate", "slab", "loss", "walk", "own", "flood", "fleet"];

pub fn run(root: &Path, scale: Scale, only: &[String], out: &Path) -> Result<()> {
    let bin = root.join("target/release/ctscope");
    if !bin.exists() {
        bail!("{} is missing; the bench builds it first", bin.display());
    }
    if let Some(unknown) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
        bail!(
            "no bench section {unknown}; the sections are {}",
            SECTIONS.join(", ")
        );
    }
    let mut report = Report::new(scale);
    let bench = Bench { bin, scale };
    for section in SECTIONS {
        if !only.is_empty() && !only.iter().any(|s| s == section) {
            continue;
        }
        report.rows.extend(match section {
            "rate" => bench.connection_rate()?,
            "slab" => bench.slab_overhead()?,
            "loss" => bench.event_loss()?,
            "walk" => bench.table_walk()?,
            "own" => bench.own_cost()?,
            "flood" => model_flood(root)?,
            _ => bench.namespaces_at_scale()?,
        });
    }
    report.write(out)?;
    eprintln!("xtask: wrote {}", out.display());
    Ok(())
}

/// 6. The drop view under the flood it exists for: a million drops, each
///    from a different source, through `Model::apply` (conntrack-user's
///    `model_drops` bench; model only, no kernel).
fn model_flood(root: &Path) -> Result<Vec<Row>> {
    let out = Command::new("cargo")
        .args([
            "bench",
            "-p",
            "conntrack-user",
            "--bench",
            "model_drops",
            "--",
            "--json",
        ])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo bench --bench model_drops")?;
    if !out.status.success() {
        bail!("cargo bench --bench model_drops failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("no JSON line from the model_drops bench")?;
    let v: serde_json::Value = serde_json::from_str(line).context("model_drops output")?;
    let get = |k: &str| v[k].as_f64().unwrap_or(0.0) / 1e6;
    let stats = Stats {
        median: get("median"),
        min: get("min"),
        max: get("max"),
    };
    Ok(vec![
        Row::goal(
            "6. drop view under a spoofed flood",
            "1 M distinct-source drops through the model (no kernel)",
            stats.median,
            "M events/s",
            2.0,
            true,
        )
        .spread(stats),
    ])
}

struct Bench {
    bin: PathBuf,
    scale: Scale,
}

/// A ctscope running in the background, stopped with SIGINT on drop.
struct Running {
    child: Child,
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A detached tmux session, killed on drop (ctscope gets SIGHUP and exits).
struct TmuxSession {
    name: String,
}

impl Drop for TmuxSession {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
        thread::sleep(Duration::from_millis(500));
    }
}

impl Bench {
    /// Starts `ctscope ARGS` in a 120x40 tmux pane (the TUI renders for
    /// real) and waits until it is attached.
    fn start_in_tmux(&self, args: &[&str]) -> Result<TmuxSession> {
        let ready = std::env::temp_dir().join(format!("ctscope-bench-tmux-{}", std::process::id()));
        let _ = std::fs::remove_file(&ready);
        let name = format!("ctscope-bench-{}", std::process::id());
        let cmd = format!(
            "exec {} {} --ready-file {}",
            self.bin.display(),
            args.join(" "),
            ready.display()
        );
        let status = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "120",
                "-y",
                "40",
                &cmd,
            ])
            .status()
            .context("starting tmux (apt-get install tmux)")?;
        if !status.success() {
            bail!("tmux new-session failed");
        }
        let session = TmuxSession { name };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            if Instant::now() > deadline {
                bail!("ctscope {} did not attach in tmux", args.join(" "));
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&ready);
        Ok(session)
    }

    /// Starts `ctscope ARGS --ready-file F` and waits until it is attached.
    fn start(&self, args: &[&str]) -> Result<Running> {
        let ready =
            std::env::temp_dir().join(format!("ctscope-bench-ready-{}", std::process::id()));
        let _ = std::fs::remove_file(&ready);
        let child = Command::new(&self.bin)
            .args(args)
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting ctscope {}", args.join(" ")))?;
        let mut running = Running { child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            if running.child.try_wait()?.is_some() || Instant::now() > deadline {
                bail!("ctscope {} did not attach", args.join(" "));
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&ready);
        Ok(running)
    }

    /// One `ctscope load` run: new flows per second achieved.
    fn load_rate(&self, extra: &[&str]) -> Result<f64> {
        let out = Command::new(&self.bin)
            .args(["load", "--json", "--count", &self.scale.flows.to_string()])
            .args(extra)
            .stderr(Stdio::null())
            .output()
            .context("running ctscope load")?;
        if !out.status.success() {
            bail!("ctscope load failed");
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        v["rate"].as_f64().context("no rate in the load report")
    }

    /// 1. The maximum new-flow rate with nothing attached, then with each
    ///    ctscope mode and with its floor (`--floor`: programs that return at
    ///    once on exactly the hooks that mode attaches), interleaved trial by
    ///    trial so drift hits all alike.
    fn connection_rate(&self) -> Result<Vec<Row>> {
        let trace = std::env::temp_dir().join("ctscope-bench.ctrace");
        let trace = trace.to_string_lossy().into_owned();
        let listen = "127.0.0.1:19490";
        // (name, arguments, goal ratio against the baseline)
        let modes: [(&str, Vec<&str>, f64); 5] = [
            ("ctscope stats", vec!["stats", "--interval", "1"], 0.93),
            ("ctscope top (tmux)", vec!["top"], 0.93),
            ("ctscope serve", vec!["serve", "--listen", listen], 0.93),
            ("ctscope drops", vec!["drops", "--json"], 0.90),
            ("ctscope record", vec!["record", "-o", &trace], 0.90),
        ];
        let mut base = Vec::new();
        let mut with: Vec<[Vec<f64>; 2]> = vec![[Vec::new(), Vec::new()]; modes.len()];
        for _ in 0..self.scale.trials {
            base.push(self.load_rate(&[])?);
            for (i, (_, args, _)) in modes.iter().enumerate() {
                for (f, floor) in [false, true].into_iter().enumerate() {
                    let mut args = args.clone();
                    if floor {
                        args.push("--floor");
                    }
                    // Held for their Drop, which stops ctscope.
                    let (_child, _tmux) = if args[0] == "top" {
                        (None, Some(self.start_in_tmux(&args)?))
                    } else {
                        (Some(self.start(&args)?), None)
                    };
                    with[i][f].push(self.load_rate(&[])?);
                }
            }
        }
        let _ = std::fs::remove_file(&trace);
        let base = Stats::of(&base);
        let mut rows = vec![
            Row::measured(
                "1. connection rate",
                "no ctscope (baseline)",
                base.median,
                "flows/s",
            )
            .spread(base),
        ];
        for ((name, _, goal), [real, floor]) in modes.iter().zip(with) {
            let (s, f) = (Stats::of(&real), Stats::of(&floor));
            rows.push(
                Row::ratio(
                    "1. connection rate",
                    &format!("{name}: floor (same hooks, empty programs)"),
                    f.median,
                    "flows/s",
                    base.median,
                    0.0,
                )
                .spread(f),
            );
            rows.push(
                Row::ratio(
                    "1. connection rate",
                    name,
                    s.median,
                    "flows/s",
                    base.median,
                    *goal,
                )
                .spread(s)
                .floor(f.median),
            );
        }
        Ok(rows)
    }

    /// 2. Unrelated slab-heavy work (file create/unlink in tmpfs: dentry and
    ///    inode slabs, so the kmem_cache_alloc probe runs on every op).
    fn slab_overhead(&self) -> Result<Vec<Row>> {
        let mut base = Vec::new();
        let mut with = Vec::new();
        let mut floor = Vec::new();
        for _ in 0..self.scale.trials {
            base.push(measure::slab_ops_per_sec(self.scale.slab_secs)?);
            {
                let _running = self.start(&["stats", "--interval", "1"])?;
                with.push(measure::slab_ops_per_sec(self.scale.slab_secs)?);
            }
            let _running = self.start(&["stats", "--interval", "1", "--floor"])?;
            floor.push(measure::slab_ops_per_sec(self.scale.slab_secs)?);
        }
        let (b, w, f) = (Stats::of(&base), Stats::of(&with), Stats::of(&floor));
        Ok(vec![
            Row::measured(
                "2. unrelated slab work",
                "no ctscope (baseline)",
                b.median,
                "ops/s",
            )
            .spread(b),
            Row::ratio(
                "2. unrelated slab work",
                "ctscope stats: floor (same hooks, empty programs)",
                f.median,
                "ops/s",
                b.median,
                0.0,
            )
            .spread(f),
            Row::ratio(
                "2. unrelated slab work",
                "ctscope stats attached",
                w.median,
                "ops/s",
                b.median,
                0.985,
            )
            .spread(w)
            .floor(f.median),
        ])
    }

    /// 3. Events seen at the maximum rate: `ctscope record` and
    ///    `conntrack -E` side by side, each against the kernel's count of
    ///    entries created (UDP entries outlive the run, so the namespace's
    ///    nf_conntrack_count is the ground truth).
    fn event_loss(&self) -> Result<Vec<Row>> {
        let ns = measure::NamedNetns::create("ctscope-bench")?;
        let trace = std::env::temp_dir().join("ctscope-bench-loss.ctrace");
        let _ = std::fs::remove_file(&trace);
        let mut listener = Command::new("ip")
            .args(["netns", "exec", &ns.name, "conntrack", "-E", "-e", "NEW"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting conntrack -E (apt-get install conntrack)")?;
        let counter = measure::count_lines(listener.stdout.take());
        thread::sleep(Duration::from_millis(500));
        let recorder = self.start(&["record", "-o", &trace.to_string_lossy()])?;
        let out = Command::new(&self.bin)
            .args(["load", "--json", "--netns", &ns.name])
            .args(["--count", &self.scale.loss_flows.to_string()])
            .stderr(Stdio::null())
            .output()?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let rate = report["rate"].as_f64().unwrap_or(0.0);
        thread::sleep(Duration::from_secs(2));
        let truth = ns.count()?;
        drop(recorder);
        let _ = listener.kill();
        let _ = listener.wait();
        let seen_by_conntrack = counter.join().unwrap_or(0);
        let recorded = self.recorded_allocs(&trace, &ns.inum()?)?;
        let _ = std::fs::remove_file(&trace);
        Ok(vec![
            Row::measured(
                "3. event loss",
                "ground truth: entries created",
                truth as f64,
                "events",
            ),
            Row::measured("3. event loss", "load generator rate", rate, "flows/s"),
            Row::ratio(
                "3. event loss",
                "ctscope record",
                recorded as f64,
                "events",
                truth as f64,
                1.0,
            ),
            Row::ratio(
                "3. event loss",
                "conntrack -E -e NEW",
                seen_by_conntrack as f64,
                "events",
                truth as f64,
                1.0,
            ),
        ])
    }

    /// Allocation events of one namespace in a trace.
    fn recorded_allocs(&self, trace: &Path, netns: &str) -> Result<u64> {
        let out = Command::new(&self.bin)
            .arg("export")
            .arg(trace)
            .args(["--format", "jsonl", "--kind", "alloc"])
            .stderr(Stdio::null())
            .output()?;
        let needle = format!("\"netns\":{netns},");
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&needle))
            .count() as u64)
    }

    /// 4. A walk of the hash table with `walk_entries` entries over as many
    ///    buckets, against listing it with `conntrack -L`.
    fn table_walk(&self) -> Result<Vec<Row>> {
        let n = self.scale.walk_entries;
        let _sysctls = measure::SysctlRestore::set(&[
            ("nf_conntrack_buckets", n),
            ("nf_conntrack_max", n * 2),
        ])?;
        let ns = measure::NamedNetns::create("ctscope-walk")?;
        let out = Command::new(&self.bin)
            .args(["load", "--json", "--netns", &ns.name, "--threads", "2"])
            .args(["--count", &n.to_string()])
            .stderr(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("filling the table failed");
        }
        let entries = ns.count()?;
        let mut wall = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..self.scale.trials {
            let out = Command::new(&self.bin)
                .args(["buckets", "--json", "--top", "0"])
                .stderr(Stdio::null())
                .output()?;
            let v: serde_json::Value =
                serde_json::from_slice(&out.stdout).context("ctscope buckets --json")?;
            wall.push(v["duration_ns"].as_f64().unwrap_or(0.0) / 1e6);
            cpu.push(v["cpu_ns"].as_f64().unwrap_or(0.0) / 1e6);
        }
        let mut listing = Vec::new();
        for _ in 0..self.scale.trials {
            let start = Instant::now();
            let out = Command::new("sh")
                .args([
                    "-c",
                    &format!("ip netns exec {} conntrack -L 2>/dev/null | wc -l", ns.name),
                ])
                .output()?;
            listing.push(start.elapsed().as_secs_f64() * 1000.0);
            let _ = out;
        }
        // The limit the walk is measured against: the same number of nodes
        // chased through the same footprint in userspace (two nodes per
        // ~256-byte entry), one chain at a time and eight side by side.
        let nodes = 2 * entries.max(1) as usize;
        let chase = |lanes| {
            let runs: Vec<f64> = (0..3)
                .map(|_| measure::pointer_chase_ns(nodes, 128, lanes))
                .collect();
            Stats::of(&runs)
        };
        let (chase1, chase8) = (chase(1), chase(8));
        let rss = self.rss_with_entries()?;
        let top_cpu = self.idle_cpu_in_tmux(&["top"])?;
        let serve_cpu = {
            let running = self.start(&["serve", "--listen", "127.0.0.1:19491"])?;
            self.idle_cpu(running.pid())?
        };
        let (w, c, l) = (Stats::of(&wall), Stats::of(&cpu), Stats::of(&listing));
        Ok(vec![
            Row::measured(
                "4. table walk",
                "entries in the table",
                entries as f64,
                "entries",
            ),
            Row::goal(
                "4. table walk",
                "ctscope buckets: wall time",
                w.median,
                "ms",
                100.0,
                false,
            )
            .spread(w),
            Row::goal(
                "4. table walk",
                "ctscope buckets: CPU time",
                c.median,
                "ms",
                100.0,
                false,
            )
            .spread(c),
            Row::goal(
                "4. table walk",
                "ctscope buckets: per node (wall / nodes)",
                w.median * 1e6 / (2.0 * entries.max(1) as f64),
                "ns",
                70.0,
                false,
            ),
            Row::measured(
                "4. table walk",
                "memory-latency limit: the same nodes chased one chain at a time (userspace)",
                chase1.median,
                "ns per node",
            )
            .spread(chase1),
            Row::measured(
                "4. table walk",
                "memory-latency limit: 8 chains side by side, as the walker's lanes (userspace)",
                chase8.median,
                "ns per node",
            )
            .spread(chase8),
            Row::measured("4. table walk", "conntrack -L | wc -l", l.median, "ms").spread(l),
            Row::goal(
                "5. ctscope's own cost",
                "CPU of top (tmux) with the table full, no load",
                top_cpu * 100.0,
                "% of a core",
                5.0,
                false,
            ),
            Row::goal(
                "5. ctscope's own cost",
                "CPU of serve with the table full, no load",
                serve_cpu * 100.0,
                "% of a core",
                5.0,
                false,
            ),
            Row::goal(
                "5. ctscope's own cost",
                "peak RSS of stats --buckets with the table full",
                rss / 1024.0,
                "MiB",
                64.0,
                false,
            ),
        ])
    }

    /// Peak RSS of `ctscope stats --buckets` after a few walks of the full
    /// table.
    fn rss_with_entries(&self) -> Result<f64> {
        let running = self.start(&["stats", "--buckets", "--interval", "1"])?;
        thread::sleep(Duration::from_secs(3));
        Ok(measure::peak_rss_kib(running.pid())? as f64)
    }

    /// CPU share of `pid` over IDLE_CPU_SECS, after it settled (its first
    /// walk done).
    fn idle_cpu(&self, pid: u32) -> Result<f64> {
        thread::sleep(Duration::from_secs(3));
        let before = measure::cpu_ticks(pid)?;
        let start = Instant::now();
        thread::sleep(Duration::from_secs_f64(self.scale.idle_cpu_secs));
        let used = measure::cpu_ticks(pid)? - before;
        Ok(used as f64 / measure::ticks_per_sec() / start.elapsed().as_secs_f64())
    }

    /// [`Bench::idle_cpu`] of `ctscope ARGS` rendering in a tmux pane.
    fn idle_cpu_in_tmux(&self, args: &[&str]) -> Result<f64> {
        let session = self.start_in_tmux(args)?;
        let out = Command::new("tmux")
            .args(["display-message", "-p", "-t", &session.name, "#{pane_pid}"])
            .output()
            .context("asking tmux for the pane's pid")?;
        let pid: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .context("tmux pane pid")?;
        self.idle_cpu(pid)
    }

    /// 5. ctscope's own CPU and memory while the load generator runs flat out.
    fn own_cost(&self) -> Result<Vec<Row>> {
        let running = self.start(&["stats", "--interval", "1"])?;
        let before = measure::cpu_ticks(running.pid())?;
        let start = Instant::now();
        let _ = self.load_rate(&[])?;
        let secs = start.elapsed().as_secs_f64();
        let used = measure::cpu_ticks(running.pid())? - before;
        let rss = measure::peak_rss_kib(running.pid())?;
        let cpu = used as f64 / measure::ticks_per_sec() / secs;
        drop(running);
        // `record` completes every allocation event in userspace (resolver,
        // resolve_ct) and writes it: its process CPU, which includes the
        // programs it runs itself (resolve_ct, the paced walks).
        let trace = std::env::temp_dir().join("ctscope-bench-own.ctrace");
        let recording = self.start(&["record", "-o", &trace.to_string_lossy()])?;
        let before = measure::cpu_ticks(recording.pid())?;
        let _ = self.load_rate(&[])?;
        // Allocation events are completed up to ~0.2 s after the flow.
        thread::sleep(Duration::from_secs(1));
        let used = measure::cpu_ticks(recording.pid())? - before;
        drop(recording);
        let _ = std::fs::remove_file(&trace);
        let record_us = used as f64 / measure::ticks_per_sec() / self.scale.flows as f64 * 1e6;
        Ok(vec![
            Row::measured(
                "5. ctscope's own cost",
                "CPU of the record process per new flow at max rate",
                record_us,
                "µs",
            ),
            Row::goal(
                "5. ctscope's own cost",
                "CPU in stats mode at max rate",
                cpu * 100.0,
                "% of a core",
                3.0,
                false,
            ),
            Row::goal(
                "5. ctscope's own cost",
                "peak RSS",
                rss as f64 / 1024.0,
                "MiB",
                64.0,
                false,
            ),
        ])
    }
}
