//! Reading the kernel's own conntrack counters and sysctls.
