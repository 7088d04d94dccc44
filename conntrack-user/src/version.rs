//! Version strings: the crate version and the embedded eBPF object's build id.

pub const SHORT: &str = env!("CARGO_PKG_VERSION");
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\neBPF object build id: ",
    env!("CTSCOPE_EBPF_BUILD_ID"),
);
