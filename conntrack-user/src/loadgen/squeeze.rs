//! A lowered `nf_conntrack_max` for the length of a load run, so that the
//! table fills and drops. The sysctl is global (net/netfilter/
//! nf_conntrack_standalone.c makes it writable only from the initial
//! namespace): every namespace on the machine is held to it while it lasts.

use anyhow::Context as _;

use crate::kernel::sysctl::{read_sysctl, write_sysctl};

/// Puts the original limit back when dropped: normal end, Ctrl-C, SIGTERM
/// (the commands turn signals into a normal end), a panic (unwinding); not
/// SIGKILL.
#[derive(Debug)]
pub struct Squeeze {
    original: u64,
    /// The command, for messages.
    who: &'static str,
}

impl Squeeze {
    pub fn apply(max: u64, who: &'static str) -> anyhow::Result<Self> {
        let original = read_sysctl("nf_conntrack_max")?
            .context("nf_conntrack_max is not readable; is nf_conntrack loaded?")?;
        write_sysctl("nf_conntrack_max", max).context("lowering nf_conntrack_max")?;
        eprintln!(
            "{who}: nf_conntrack_max lowered from {original} to {max} for this run \
             (every namespace on this machine is held to it)"
        );
        Ok(Self { original, who })
    }

    /// The limit before the run.
    pub fn original(&self) -> u64 {
        self.original
    }
}

impl Drop for Squeeze {
    fn drop(&mut self) {
        match write_sysctl("nf_conntrack_max", self.original) {
            Ok(()) => eprintln!(
                "{}: nf_conntrack_max restored to {}",
                self.who, self.original
            ),
            Err(e) => eprintln!(
                "{}: could not restore nf_conntrack_max to {}: {e}; run \
                 `sysctl -w net.netfilter.nf_conntrack_max={}`",
                self.who, self.original, self.original
            ),
        }
    }
}
