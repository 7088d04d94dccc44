//! A lowered `nf_conntrack_max` for the length of a load run, so that the
//! table fills and drops. The sysctl is global (net/netfilter/
//! nf_conntrack_standalone.c makes it writable only from the initial
//! namespace): every namespace on the machine is held to it while it lasts.

use crate::kernel::restore::{Guard, GuardError};

/// Puts the original limit back when dropped: normal end, Ctrl-C, SIGTERM
/// (the commands turn signals into a normal end), a panic (unwinding). After
/// SIGKILL, the restore record it keeps lets the next ctscope command put
/// the limit back (`kernel::restore`).
#[derive(Debug)]
pub struct Squeeze {
    guard: Guard,
}

impl Squeeze {
    pub fn apply(max: u64, who: &'static str) -> Result<Self, GuardError> {
        let guard = Guard::lower("nf_conntrack_max", max, who)?;
        eprintln!(
            "{who}: nf_conntrack_max lowered from {} to {max} for this run \
             (every namespace on this machine is held to it)",
            guard.record().original
        );
        Ok(Self { guard })
    }

    /// The limit before the run.
    pub fn original(&self) -> u64 {
        self.guard.record().original
    }
}
