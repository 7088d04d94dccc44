//! `cargo xtask bench`: what ctscope costs the machine it watches, and how it
//! compares with what users would run instead, measured side by side in one
//! run on this machine. Writes docs/benchmarks.md (`--smoke`: a short run
//! that only checks the harness works, written to target/bench-smoke.md).

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
}

pub const FULL: Scale = Scale {
    flows: 200_000,
    trials: 5,
    slab_secs: 3.0,
    loss_flows: 200_000,
};

pub const SMOKE: Scale = Scale {
    flows: 5_000,
    trials: 1,
    slab_secs: 0.3,
    loss_flows: 5_000,
};

pub fn run(root: &Path, scale: Scale, out: &Path) -> Result<()> {
    let bin = root.join("target/release/ctscope");
    if !bin.exists() {
        bail!("{} is missing; the bench builds it first", bin.display());
    }
    let mut report = Report::new(scale);
    let bench = Bench { bin, scale };
    report.rows.extend(bench.connection_rate()?);
    report.rows.extend(bench.slab_overhead()?);
    report.rows.extend(bench.event_loss()?);
    report.rows.extend(bench.own_cost()?);
    report.write(out)?;
    eprintln!("xtask: wrote {}", out.display());
    Ok(())
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

impl Bench {
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
    ///    ctscope mode, interleaved trial by trial so drift hits all alike.
    fn connection_rate(&self) -> Result<Vec<Row>> {
        let modes: [(&str, Vec<&str>); 2] = [
            ("ctscope stats", vec!["stats", "--interval", "1"]),
            ("ctscope drops", vec!["drops", "--json"]),
        ];
        let mut base = Vec::new();
        let mut with: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        for _ in 0..self.scale.trials {
            base.push(self.load_rate(&[])?);
            for (i, (_, args)) in modes.iter().enumerate() {
                let _running = self.start(args)?;
                with[i].push(self.load_rate(&[])?);
            }
        }
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
        for ((name, _), samples) in modes.iter().zip(with) {
            let s = Stats::of(&samples);
            rows.push(
                Row::ratio(
                    "1. connection rate",
                    name,
                    s.median,
                    "flows/s",
                    base.median,
                    0.97,
                )
                .spread(s),
            );
        }
        Ok(rows)
    }

    /// 2. Unrelated slab-heavy work (file create/unlink in tmpfs: dentry and
    ///    inode slabs, so the kmem_cache_alloc probe runs on every op).
    fn slab_overhead(&self) -> Result<Vec<Row>> {
        let mut base = Vec::new();
        let mut with = Vec::new();
        for _ in 0..self.scale.trials {
            base.push(measure::slab_ops_per_sec(self.scale.slab_secs)?);
            let _running = self.start(&["stats", "--interval", "1"])?;
            with.push(measure::slab_ops_per_sec(self.scale.slab_secs)?);
        }
        let (b, w) = (Stats::of(&base), Stats::of(&with));
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
                "ctscope stats attached",
                w.median,
                "ops/s",
                b.median,
                0.98,
            )
            .spread(w),
        ])
    }

    /// 3. Events seen at the maximum rate: `conntrack -E` against the
    ///    kernel's ground truth (ctscope's record comparison is added by
    ///    the trace benchmark).
    fn event_loss(&self) -> Result<Vec<Row>> {
        let ns = measure::NamedNetns::create("ctscope-bench")?;
        let mut listener = Command::new("ip")
            .args(["netns", "exec", &ns.name, "conntrack", "-E", "-e", "NEW"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting conntrack -E (apt-get install conntrack)")?;
        let counter = measure::count_lines(listener.stdout.take());
        thread::sleep(Duration::from_millis(500));
        let stats = self.start(&["stats", "--json", "--interval", "1"])?;
        let out = Command::new(&self.bin)
            .args([
                "load",
                "--json",
                "--netns",
                &ns.name,
                "--count",
                &self.scale.loss_flows.to_string(),
            ])
            .stderr(Stdio::null())
            .output()?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let flows = report["flows"].as_u64().unwrap_or(0);
        thread::sleep(Duration::from_secs(2));
        let truth = ns.count()?;
        drop(stats);
        let _ = listener.kill();
        let _ = listener.wait();
        let seen = counter.join().unwrap_or(0);
        Ok(vec![
            Row::measured(
                "3. event loss",
                "ground truth (kernel entries)",
                truth as f64,
                "events",
            ),
            Row::measured(
                "3. event loss",
                "load generator flows",
                flows as f64,
                "flows",
            ),
            Row::ratio(
                "3. event loss",
                "conntrack -E -e NEW",
                seen as f64,
                "events",
                truth as f64,
                1.0,
            ),
        ])
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
        Ok(vec![
            Row::goal(
                "5. ctscope's own cost",
                "CPU in stats mode at max rate",
                cpu * 100.0,
                "% of a core",
                5.0,
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
