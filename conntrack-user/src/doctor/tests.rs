//! Recorded machine states: the build machine, a Debian distro kernel, and
//! machines in trouble.

use super::*;

/// The build/CI machine: 6.18, nf_conntrack built in, no kprobes, root.
fn build_machine() -> MachineState {
    MachineState {
        kernel: "6.18.44".into(),
        euid: 0,
        btf_vmlinux: true,
        conntrack: Some(Conntrack::BuiltIn),
        kprobes_missing: Some("this kernel has no kprobes".into()),
        backend: "tracepoint".into(),
        backend_reason: "this kernel has no kprobes".into(),
        tracepoints: vec![
            ("kmem_cache_alloc".into(), true),
            ("kmem_cache_free".into(), true),
            ("kfree_skb".into(), true),
        ],
        kallsyms_visible: true,
        probes: Some(Ok("the tracepoint probes load and attach".into())),
        counters: Some("/proc/net/stat/nf_conntrack".into()),
        namespaces: vec![NamespaceFill {
            inum: 4026531840,
            name: None,
            entries: 10,
            ..NamespaceFill::default()
        }],
        max: Some(262_144),
        buckets: Some(262_144),
        buckets_writable: true,
        tcp_timeout_established: Some(21_600),
        objsize: Some(256),
        ..MachineState::default()
    }
}

fn find<'a>(checks: &'a [Check], id: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no {id} check in {checks:#?}"))
}

#[test]
fn a_healthy_build_machine_passes() {
    let checks = diagnose(&build_machine());
    assert_eq!(worst(&checks), Status::Info, "{checks:#?}");
    assert_eq!(find(&checks, "probes").status, Status::Ok);
    assert!(find(&checks, "backend").message.contains("no kprobes"));
    assert_eq!(worst(&checks).exit_code(), 0);
}

#[test]
fn the_default_established_timeout_is_flagged_with_the_guides_value() {
    let mut s = build_machine();
    s.tcp_timeout_established = Some(432_000);
    let checks = diagnose(&s);
    let c = find(&checks, "tcp-timeout");
    assert!(
        c.commands
            .iter()
            .any(|cmd| cmd == "sysctl -w net.netfilter.nf_conntrack_tcp_timeout_established=21600"),
        "{c:#?}"
    );
}

#[test]
fn a_full_table_is_critical_with_exact_commands() {
    let mut s = build_machine();
    s.max = Some(65_536);
    s.buckets = Some(16_384);
    s.namespaces[0].entries = 64_000;
    let checks = diagnose(&s);
    assert_eq!(worst(&checks), Status::Critical);
    let c = find(&checks, "raise-max");
    assert!(
        c.commands
            .iter()
            .any(|cmd| cmd.starts_with("sysctl -w net.netfilter.nf_conntrack_max=")),
        "{c:#?}"
    );
    assert!(
        c.commands
            .iter()
            .any(|cmd| cmd.starts_with("sysctl -w net.netfilter.nf_conntrack_buckets=")),
        "{c:#?}"
    );
    let persist = find(&checks, "persist");
    assert!(
        persist
            .commands
            .iter()
            .any(|cmd| cmd.contains("/etc/sysctl.d/")),
        "{persist:#?}"
    );
    assert_eq!(worst(&checks).exit_code(), 2);
}

#[test]
fn a_distro_module_kernel_gets_the_udev_rule_and_the_kprobe_backend() {
    let mut s = build_machine();
    s.kernel = "6.1.0-56-amd64".into();
    s.conntrack = Some(Conntrack::Module);
    s.btf_module = true;
    s.module_refcnt = Some(3);
    s.kprobes_missing = None;
    s.backend = "kprobe".into();
    s.backend_reason = "kprobes exist and conntrack's functions are not inlined".into();
    s.max = Some(65_536);
    s.namespaces[0].entries = 60_000;
    let checks = diagnose(&s);
    let persist = find(&checks, "persist");
    assert!(
        persist
            .commands
            .iter()
            .any(|cmd| cmd.contains("SUBSYSTEM==\"module\"")),
        "{persist:#?}"
    );
    assert_eq!(find(&checks, "btf").status, Status::Ok);
    assert!(
        checks.iter().all(|c| c.id != "unload"),
        "in use: do not suggest unloading"
    );
}

#[test]
fn a_module_without_btf_cannot_be_observed() {
    let mut s = build_machine();
    s.conntrack = Some(Conntrack::Module);
    s.btf_module = false;
    assert_eq!(find(&diagnose(&s), "btf").status, Status::Critical);
}

#[test]
fn an_unused_module_can_be_unloaded() {
    let mut s = build_machine();
    s.conntrack = Some(Conntrack::Module);
    s.btf_module = true;
    s.module_refcnt = Some(0);
    s.namespaces[0].entries = 0;
    let c = diagnose(&s)
        .into_iter()
        .find(|c| c.id == "unload")
        .expect("unload advice");
    assert_eq!(c.commands, vec!["modprobe -r nf_conntrack".to_owned()]);
}

#[test]
fn old_kernels_tune_buckets_through_hashsize() {
    let mut s = build_machine();
    s.buckets_writable = false;
    s.hashsize_param = Some(16_384);
    s.max = Some(65_536);
    let c = diagnose(&s)
        .into_iter()
        .find(|c| c.id == "hashsize")
        .expect("hashsize");
    assert_eq!(
        c.commands,
        vec!["echo 65536 > /sys/module/nf_conntrack/parameters/hashsize".to_owned()]
    );
}

#[test]
fn not_root_is_critical_and_says_so() {
    let mut s = build_machine();
    s.euid = 1000;
    s.missing_caps = vec![
        "CAP_BPF".into(),
        "CAP_PERFMON".into(),
        "CAP_SYS_ADMIN".into(),
    ];
    s.probes = None;
    s.kallsyms_visible = false;
    let checks = diagnose(&s);
    let c = find(&checks, "privileges");
    assert_eq!(c.status, Status::Critical);
    assert!(c.message.contains("root"), "{c:#?}");
    assert_eq!(worst(&checks).exit_code(), 2);
}

#[test]
fn no_btf_and_no_kprobes_is_critical() {
    let mut s = build_machine();
    s.btf_vmlinux = false;
    s.tracepoints.iter_mut().for_each(|t| t.1 = false);
    let checks = diagnose(&s);
    assert_eq!(find(&checks, "btf").status, Status::Critical);
    assert_eq!(find(&checks, "tracepoints").status, Status::Critical);
}

#[test]
fn states_round_trip_as_json() {
    // Recorded states are stored and shared as JSON.
    let s = build_machine();
    let text = serde_json::to_string(&s).expect("json");
    let back: MachineState = serde_json::from_str(&text).expect("parse");
    assert_eq!(back, s);
}

fn left(state: LeftState) -> LeftChanged {
    LeftChanged {
        sysctl: "nf_conntrack_max".into(),
        original: 262_144,
        set: 300,
        command: "ctscope demo".into(),
        pid: 4242,
        state,
        error: Some("Permission denied".into()),
    }
}

#[test]
fn a_limit_left_lowered_by_a_killed_run_is_critical_with_the_command_to_restore_it() {
    let s = MachineState {
        left_changed: Some(left(LeftState::Stuck)),
        ..build_machine()
    };
    let checks = diagnose(&s);
    let c = find(&checks, "restore");
    assert_eq!(c.status, Status::Critical);
    assert!(c.message.contains("300"), "{}", c.message);
    assert_eq!(
        c.commands,
        vec!["sysctl -w net.netfilter.nf_conntrack_max=262144".to_owned()]
    );
    assert_eq!(worst(&checks), Status::Critical);
}

#[test]
fn a_limit_restored_at_start_is_a_warning_and_a_running_demo_only_information() {
    let restored = diagnose(&MachineState {
        left_changed: Some(left(LeftState::Restored)),
        ..build_machine()
    });
    let c = find(&restored, "restore");
    assert_eq!(c.status, Status::Warning);
    assert!(c.message.contains("restored to 262144"), "{}", c.message);
    assert!(c.commands.is_empty());
    let held = diagnose(&MachineState {
        left_changed: Some(left(LeftState::Held)),
        ..build_machine()
    });
    assert_eq!(find(&held, "restore").status, Status::Info);
    assert!(diagnose(&build_machine()).iter().all(|c| c.id != "restore"));
}

#[test]
fn the_exact_causes_depend_on_the_kernel_and_the_backend() {
    use crate::probe::features::KernelFeatures;
    let all = KernelFeatures {
        drop_reasons: true,
        bpf_loop: true,
        slab_cache_arg: true,
        cnet_count: true,
        chain_limit: true,
        nft_frees_own_drops: true,
    };
    let mut host = build_machine();
    host.features = Some(all);
    let causes = find(&diagnose(&host), "causes").message.clone();
    assert!(
        causes.starts_with(
            "exact drop causes with the tracepoint backend: table_full, invalid, ruleset, other;"
        ),
        "{causes}"
    );
    assert!(causes.contains("insert_failed: exact as a sum"), "{causes}");
    let mut debian = build_machine();
    debian.kernel = "6.1.0-57-amd64".into();
    debian.backend = "kprobe".into();
    debian.nat_probed = true;
    debian.features = Some(KernelFeatures {
        nft_frees_own_drops: false,
        ..all
    });
    let causes = find(&diagnose(&debian), "causes").message.clone();
    assert_eq!(
        causes,
        "exact drop causes with the kprobe backend: table_full, invalid, insert_failed, \
         chain_too_long, ruleset, other"
    );
    // nf_nat not loaded: its ICMP translation is not probed.
    debian.nat_probed = false;
    let causes = find(&diagnose(&debian), "causes").message.clone();
    assert!(
        causes.starts_with(
            "exact drop causes with the kprobe backend: table_full, invalid, insert_failed, chain_too_long, other;"
        ),
        "{causes}"
    );
    assert!(
        causes.contains(
            "a NAT hook's drop (an ICMP redirect through a NAT router) counts as ruleset"
        ),
        "{causes}"
    );
    debian.backend = "tracepoint".into();
    let causes = find(&diagnose(&debian), "causes").message.clone();
    assert!(
        causes.contains("told from insert failures by the kernel's insert_failed counter"),
        "{causes}"
    );
}

#[test]
fn a_5_10_kernel_says_what_it_lacks_and_which_causes_are_exact() {
    use crate::probe::features::KernelFeatures;
    let mut s = build_machine();
    s.kernel = "5.10.0-46-amd64".into();
    s.backend = "kprobe".into();
    s.features = Some(KernelFeatures::default());
    s.conntrack = Some(Conntrack::Module);
    s.btf_module = false;
    let checks = diagnose(&s);
    assert_eq!(
        find(&checks, "btf").status,
        Status::Ok,
        "5.10 needs no module BTF"
    );
    let f = find(&checks, "features");
    assert_eq!(f.status, Status::Info);
    assert!(
        f.message
            .contains("missing: kfree_skb drop reasons (5.17), bpf_loop (5.17)"),
        "{}",
        f.message
    );
    let c = find(&checks, "causes");
    assert!(
        c.message
            .starts_with("exact drop causes with the kprobe backend: table_full, insert_failed;"),
        "{}",
        c.message
    );
    assert!(
        c.message.contains("chain_too_long: never happens"),
        "{}",
        c.message
    );
    // Without the features, nothing is said (no BTF).
    s.features = None;
    assert!(
        diagnose(&s)
            .iter()
            .all(|c| c.id != "features" && c.id != "causes")
    );
}
