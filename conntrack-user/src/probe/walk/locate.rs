//! The ways [`TableWalker`] finds a candidate address of the table: the
//! iterator of /proc/net/nf_conntrack, else (kernels without `bpf_loop`)
//! the `nf_conntrack_hash` pointer kallsyms lists, else a live entry (see
//! the eBPF side, conntrack-ebpf/src/locate.rs). A candidate is only used after a walk
//! validates it.

use std::{
    fs,
    io::Read as _,
    thread,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{Array, MapData},
    programs::{BtfTracePoint, RawTracePoint, RawTracePointRunOptions, TestRun as _},
};
use conntrack_common::{Located, located, setting};

use super::{Table, TableWalker, WalkError, total_entries};
use crate::probe::{ProbeError, program};

impl TableWalker {
    /// Finds a candidate address: the iterator of /proc/net/nf_conntrack,
    /// else kallsyms' `nf_conntrack_hash`, else a live entry.
    pub(super) fn locate(
        &mut self,
        ebpf: &mut Ebpf,
        settings: &mut Array<MapData, u32>,
        size: u32,
    ) -> Result<Option<Table>, WalkError> {
        if self.seq_file {
            self.located.set(0, Located::default(), 0)?;
            settings.set(setting::LOCATE_TGID, std::process::id(), 0)?;
            let result = with_attached(ebpf, "locate_seq", || {
                // ct_seq_start runs on the first read; close frees the state.
                let mut byte = [0u8; 1];
                fs::File::open("/proc/net/nf_conntrack").and_then(|mut f| f.read(&mut byte))
            });
            settings.set(setting::LOCATE_TGID, 0, 0)?;
            // An unreadable file leaves LOCATED empty: the entry locator runs.
            let _read = result?;
            let found = self.located.get(&0, 0)?;
            if found.how == located::SEQ_FILE && found.size == size {
                return Ok(Some(Table {
                    base: found.base,
                    size,
                    how: found.how,
                }));
            }
        }
        if self.from_symbol {
            self.located.set(0, Located::default(), 0)?;
            let prog: &mut RawTracePoint = program(ebpf, "locate_sym")?;
            let mut opts = RawTracePointRunOptions::new();
            opts.args[..2].copy_from_slice(&[self.hash_sym, self.size_sym]);
            prog.test_run(opts).map_err(|source| WalkError::Run {
                name: "locate_sym",
                source,
            })?;
            let found = self.located.get(&0, 0)?;
            // The size read with it, where kallsyms lists that too, must be
            // the sysctl's (a resize in between: the next walk finds out).
            if found.how == located::SYMBOL && (found.size == size || self.size_sym == 0) {
                return Ok(Some(Table {
                    base: found.base,
                    size,
                    how: found.how,
                }));
            }
        }
        if !self.from_entries || total_entries() == 0 {
            return Ok(None);
        }
        // The probe stays attached between walks until a packet of a tracked
        // flow comes by; a live run does not wait for one (`entry_wait` 0).
        if self.skb_link.is_none() {
            self.located.set(0, Located::default(), 0)?;
            let prog: &mut BtfTracePoint = program(ebpf, "locate_skb")?;
            self.skb_link = Some(prog.attach().map_err(|source| ProbeError::Attach {
                name: "locate_skb",
                source,
            })?);
        }
        let deadline = Instant::now() + self.entry_wait;
        let found = loop {
            match self.located.get(&0, 0)? {
                l if l.how == located::ENTRY => break Some(l),
                _ if Instant::now() >= deadline => break None,
                _ => thread::sleep(Duration::from_millis(10)),
            }
        };
        if found.is_some()
            && let Some(link) = self.skb_link.take()
        {
            let prog: &mut BtfTracePoint = program(ebpf, "locate_skb")?;
            prog.detach(link).map_err(|source| ProbeError::Attach {
                name: "locate_skb",
                source,
            })?;
        }
        Ok(found.map(|l| Table {
            base: l.base,
            size,
            how: l.how,
        }))
    }
}

/// Attaches a locator for the length of `f`.
fn with_attached<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    f: impl FnOnce() -> T,
) -> Result<T, ProbeError> {
    let prog: &mut BtfTracePoint = program(ebpf, name)?;
    let link = prog
        .attach()
        .map_err(|source| ProbeError::Attach { name, source })?;
    let out = f();
    let prog: &mut BtfTracePoint = program(ebpf, name)?;
    prog.detach(link)
        .map_err(|source| ProbeError::Attach { name, source })?;
    Ok(out)
}
