//! Measurements: medians, unrelated slab work, a process's CPU and memory,
//! a named namespace for tools that need one.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read},
    process::{Command, Stdio},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(samples: &[f64]) -> Self {
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return Self::default();
        }
        let mid = v.len() / 2;
        let median = if v.len().is_multiple_of(2) {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        };
        Self {
            median,
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}

/// File create+write+unlink per second in /dev/shm: each op allocates and
/// frees dentries and inodes, so every op runs the kmem_cache probes.
pub fn slab_ops_per_sec(secs: f64) -> Result<f64> {
    let dir = std::env::temp_dir().join(format!("ctscope-slab-{}", std::process::id()));
    let base = if std::path::Path::new("/dev/shm").exists() {
        std::path::PathBuf::from("/dev/shm").join(dir.file_name().unwrap_or_default())
    } else {
        dir
    };
    fs::create_dir_all(&base)?;
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let p = base.join(format!("f{}", ops % 64));
        fs::write(&p, b"x")?;
        fs::remove_file(&p)?;
        ops += 1;
    }
    let rate = ops as f64 / start.elapsed().as_secs_f64();
    let _ = fs::remove_dir_all(&base);
    Ok(rate)
}

/// The memory-latency limit of a table walk on this machine: `nodes`
/// pointers chased in random order through a buffer of `nodes` * `stride`
/// bytes (the table's footprint: a conntrack entry is ~256 bytes and holds
/// two nodes), `lanes` chains side by side as the walker does. Nanoseconds
/// per node: what the walk would cost if reading a node cost nothing but
/// its cache (and TLB) miss.
pub fn pointer_chase_ns(nodes: usize, stride: usize, lanes: usize) -> f64 {
    let step = (stride / 8).max(1);
    let nodes = nodes.max(lanes);
    let mut mem = vec![0u64; nodes * step];
    // A random cyclic order (xorshift Fisher-Yates), one node per stride.
    let mut order: Vec<usize> = (0..nodes).collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..nodes).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    for (i, &n) in order.iter().enumerate() {
        mem[n * step] = (order[(i + 1) % nodes] * step) as u64;
    }
    let per_lane = nodes / lanes;
    let mut at: Vec<usize> = (0..lanes).map(|l| order[l * per_lane] * step).collect();
    let start = Instant::now();
    for _ in 0..per_lane {
        for a in at.iter_mut() {
            *a = mem[*a] as usize;
        }
    }
    let elapsed = start.elapsed();
    std::hint::black_box(&at);
    elapsed.as_nanos() as f64 / (per_lane * lanes) as f64
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).context("utime")?.parse()?;
    let stime: u64 = f.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Peak resident set size (VmHWM) in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")
}

/// Counts lines of a child's output on a thread.
pub fn count_lines(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<u64> {
    thread::spawn(move || match pipe {
        Some(p) => BufReader::new(p).lines().map_while(Result::ok).count() as u64,
        None => 0,
    })
}

/// An `ip netns` namespace with conntrack active, for tools that need a
/// name (`conntrack -E` through `ip netns exec`). Deleted on drop.
pub struct NamedNetns {
    pub name: String,
}

impl NamedNetns {
    pub fn create(prefix: &str) -> Result<Self> {
        let name = format!("{prefix}-{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        let mut nft = Command::new("ip")
            .args(["netns", "exec", &ns.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = nft.stdin.take() {
            std::io::Write::write_all(
                &mut stdin,
                b"table inet bench {\n chain out { type filter hook output priority 0; ct state established accept; }\n}\n",
            )?;
        }
        if !nft.wait()?.success() {
            bail!("nft failed in {}", ns.name);
        }
        Ok(ns)
    }

    /// Inode number of the namespace, as ctscope reports it.
    pub fn inum(&self) -> Result<String> {
        use std::os::unix::fs::MetadataExt as _;
        Ok(fs::metadata(format!("/run/netns/{}", self.name))?
            .ino()
            .to_string())
    }

    /// `nf_conntrack_count` inside the namespace.
    pub fn count(&self) -> Result<u64> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "cat",
                "/proc/sys/net/netfilter/nf_conntrack_count",
            ])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        thread::sleep(Duration::from_millis(100));
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed");
    }
    Ok(())
}

/// Sets conntrack sysctls for a measurement and restores them on drop.
pub struct SysctlRestore {
    saved: Vec<(String, String)>,
}

impl SysctlRestore {
    pub fn set(values: &[(&str, u64)]) -> Result<Self> {
        let mut me = Self { saved: Vec::new() };
        for (name, value) in values {
            let path = format!("/proc/sys/net/netfilter/{name}");
            me.saved
                .push((path.clone(), fs::read_to_string(&path)?.trim().to_owned()));
            fs::write(&path, value.to_string()).with_context(|| format!("writing {path}"))?;
        }
        Ok(me)
    }
}

impl Drop for SysctlRestore {
    fn drop(&mut self) {
        for (path, value) in self.saved.iter().rev() {
            if let Err(e) = fs::write(path, value) {
                eprintln!("xtask: could not restore {path} to {value}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pointer_chase_ns;

    #[test]
    fn the_pointer_chase_reports_a_time_per_node() {
        for lanes in [1, 8] {
            let ns = pointer_chase_ns(4096, 128, lanes);
            assert!(ns.is_finite() && ns > 0.0, "{lanes} lanes: {ns}");
        }
    }
}
