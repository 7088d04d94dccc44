//! Version strings: the crate version, the embedded eBPF object's build id,
//! and what the binary and its eBPF object were built for.
//!
//! The build id is a 64-bit FNV-1a hash of the embedded object (build.rs),
//! so two binaries with the same id carry the same eBPF programs. The object
//! differs between architectures (kprobe arguments are read from the
//! arch's `struct pt_regs`), hence the arch line.

pub const SHORT: &str = env!("CARGO_PKG_VERSION");
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\neBPF object build id: ",
    env!("CTSCOPE_EBPF_BUILD_ID"),
    "\neBPF object arch: ",
    env!("CTSCOPE_EBPF_ARCH"),
    "\ntarget: ",
    env!("CTSCOPE_TARGET"),
);
