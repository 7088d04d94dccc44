//! The truth table of docs/drop-causes.md, row by row, and the cases of
//! issue 17 that were misclassified before this function existed.

use super::*;

const NOT_FULL: Fill = Fill::Read {
    count: 10,
    max: 1000,
    slack: 2,
};
const FULL: Fill = Fill::Read {
    count: 1000,
    max: 1000,
    slack: 2,
};

/// A new flow's first packet: its entry allocated, never inserted.
const NEW: Entry = Entry {
    confirmed: false,
    linked: false,
    dying: false,
    related: false,
    nat_half_done: false,
};
/// An established flow's packet: a confirmed entry in the table.
const KNOWN: Entry = Entry {
    confirmed: true,
    linked: true,
    ..NEW
};

/// A drop on the build kernel (6.18, tracepoint backend): freed by
/// `nf_hook_slow`, an entry of a new flow, nothing else known.
fn base() -> DropFacts {
    DropFacts {
        freer: Freer::HookSlow,
        attached: Attached::Entry(NEW),
        fill: NOT_FULL,
        conntrack_in_use: Some(true),
        refused: None,
        insert: InsertEvidence::Unknown,
        chain: ChainVerdict::Short,
        nat_refused: false,
        hook: hook::POST_ROUTING,
        proto: 17,
        icmp_type: 0,
        nft_frees_own_drops: true,
    }
}

fn name(c: u8) -> &'static str {
    match c {
        cause::TABLE_FULL => "table_full",
        cause::INVALID => "invalid",
        cause::INSERT_FAILED => "insert_failed",
        cause::CHAIN_TOO_LONG => "chain_too_long",
        cause::RULESET => "ruleset",
        cause::OTHER => "other",
        _ => "?",
    }
}

struct Row {
    what: &'static str,
    facts: DropFacts,
    want: u8,
}

fn row(what: &'static str, want: u8, edit: impl FnOnce(&mut DropFacts)) -> Row {
    let mut facts = base();
    edit(&mut facts);
    Row { what, facts, want }
}

fn redirect(f: &mut DropFacts) {
    f.proto = 1;
    f.icmp_type = 5;
}

fn rows() -> [Row; 43] {
    [
        // ---- no entry attached ----
        row(
            "no entry, count at max, nf_hook_slow",
            cause::TABLE_FULL,
            |f| {
                f.attached = Attached::Nothing;
                f.fill = FULL;
            },
        ),
        row(
            "no entry, count within the slack of max",
            cause::TABLE_FULL,
            |f| {
                f.attached = Attached::Nothing;
                f.fill = Fill::Read {
                    count: 998,
                    max: 1000,
                    slack: 2,
                };
            },
        ),
        row("no entry, count unreadable", cause::TABLE_FULL, |f| {
            f.attached = Attached::Nothing;
            f.fill = Fill::Unknown;
        }),
        row("no entry, max unset (0)", cause::INVALID, |f| {
            f.attached = Attached::Nothing;
            f.fill = Fill::Read {
                count: 5,
                max: 0,
                slack: 2,
            };
        }),
        row("no entry, not full, nf_hook_slow", cause::INVALID, |f| {
            f.attached = Attached::Nothing;
        }),
        row(
            "no entry, not full, nft_do_chain (ct state invalid drop)",
            cause::INVALID,
            |f| {
                f.attached = Attached::Nothing;
                f.freer = Freer::NftChain;
            },
        ),
        row(
            "no entry, full, but a rule dropped it (raw table)",
            cause::INVALID,
            |f| {
                f.attached = Attached::Nothing;
                f.fill = FULL;
                f.freer = Freer::NftChain;
            },
        ),
        row(
            "no entry, conntrack unused in the namespace, nft rule",
            cause::RULESET,
            |f| {
                f.attached = Attached::Nothing;
                f.freer = Freer::NftChain;
                f.conntrack_in_use = Some(false);
            },
        ),
        row(
            "no entry, conntrack unused, nf_hook_slow before 6.7",
            cause::RULESET,
            |f| {
                f.attached = Attached::Nothing;
                f.conntrack_in_use = Some(false);
                f.nft_frees_own_drops = false;
            },
        ),
        row(
            "no entry, conntrack unused, nf_hook_slow since 6.7",
            cause::OTHER,
            |f| {
                f.attached = Attached::Nothing;
                f.conntrack_in_use = Some(false);
            },
        ),
        // ---- notrack, templates ----
        row("untracked, nft rule", cause::RULESET, |f| {
            f.attached = Attached::Untracked;
            f.freer = Freer::NftChain;
        }),
        row("untracked, nf_hook_slow before 6.7", cause::RULESET, |f| {
            f.attached = Attached::Untracked;
            f.nft_frees_own_drops = false;
        }),
        row("untracked, nf_hook_slow since 6.7", cause::OTHER, |f| {
            f.attached = Attached::Untracked;
        }),
        // ---- never inserted, freed by nf_hook_slow ----
        row("never linked, short chains", cause::INSERT_FAILED, |_| {}),
        row(
            "never linked, chain not walked",
            cause::INSERT_FAILED,
            |f| {
                f.chain = ChainVerdict::Unknown;
            },
        ),
        row(
            "never linked, own chain past the limit",
            cause::CHAIN_TOO_LONG,
            |f| {
                f.chain = ChainVerdict::TooLong;
            },
        ),
        row(
            "never linked, walk saw long chains elsewhere",
            cause::CHAIN_TOO_LONG,
            |f| f.chain = ChainVerdict::LongElsewhere,
        ),
        row("never linked, dying", cause::INSERT_FAILED, |f| {
            f.attached = Attached::Entry(Entry { dying: true, ..NEW });
            f.chain = ChainVerdict::TooLong;
        }),
        row(
            "never linked, at LOCAL_IN (confirm runs there)",
            cause::INSERT_FAILED,
            |f| {
                f.hook = hook::LOCAL_IN;
            },
        ),
        row("never linked, hook unknown", cause::INSERT_FAILED, |f| {
            f.hook = hook::UNKNOWN;
        }),
        row(
            "never linked, at FORWARD: confirm has not run yet",
            cause::OTHER,
            |f| f.hook = hook::FORWARD,
        ),
        // ---- any entry, nft_do_chain ----
        row("new flow, nft rule", cause::RULESET, |f| {
            f.freer = Freer::NftChain;
        }),
        row("known flow, nft rule", cause::RULESET, |f| {
            f.attached = Attached::Entry(KNOWN);
            f.freer = Freer::NftChain;
        }),
        // ---- entry in the table, nf_hook_slow ----
        row(
            "known flow, nf_hook_slow before 6.7 (rule)",
            cause::RULESET,
            |f| {
                f.attached = Attached::Entry(KNOWN);
                f.nft_frees_own_drops = false;
            },
        ),
        row("known flow, nf_hook_slow since 6.7", cause::OTHER, |f| {
            f.attached = Attached::Entry(KNOWN);
        }),
        // ---- freed elsewhere ----
        row("freed by another function", cause::OTHER, |f| {
            f.freer = Freer::Elsewhere;
            f.attached = Attached::Nothing;
            f.fill = FULL;
        }),
        // ---- kprobe backend ----
        row("kprobe: alloc refused", cause::TABLE_FULL, |f| {
            f.attached = Attached::Nothing;
            f.refused = Some(true);
        }),
        row(
            "kprobe: no refusal, even with the count at max",
            cause::INVALID,
            |f| {
                f.attached = Attached::Nothing;
                f.fill = FULL;
                f.refused = Some(false);
            },
        ),
        row("kprobe: confirm failed", cause::INSERT_FAILED, |f| {
            f.insert = InsertEvidence::Failed {
                chain_too_long: false,
            };
            f.chain = ChainVerdict::TooLong;
        }),
        row(
            "kprobe: confirm failed on chain length",
            cause::CHAIN_TOO_LONG,
            |f| {
                f.insert = InsertEvidence::Failed {
                    chain_too_long: true,
                };
            },
        ),
        row(
            "kprobe: confirm did not fail, before 6.7 (rule)",
            cause::RULESET,
            |f| {
                f.insert = InsertEvidence::NotFailed;
                f.nft_frees_own_drops = false;
            },
        ),
        // ---- 5.10 (no drop reasons, no chain limit, count in struct net) ----
        // The namespace's `users4/6` are in nf_conntrack's own struct,
        // which 5.10 publishes no BTF for: whether conntrack is in use is
        // unknown, so a rule drop of a packet conntrack never saw is
        // `invalid` there (documented, issue 16).
        row(
            "5.10: no entry, not full, conntrack use unknown",
            cause::INVALID,
            |f| {
                f.attached = Attached::Nothing;
                f.conntrack_in_use = None;
                f.nft_frees_own_drops = false;
            },
        ),
        row(
            "5.10: kprobe refusal, count unreadable",
            cause::TABLE_FULL,
            |f| {
                f.attached = Attached::Nothing;
                f.fill = Fill::Unknown;
                f.refused = Some(true);
                f.conntrack_in_use = None;
                f.nft_frees_own_drops = false;
            },
        ),
        row(
            "5.10: kprobe confirm failed (no chaintoolong counter)",
            cause::INSERT_FAILED,
            |f| {
                f.insert = InsertEvidence::Failed {
                    chain_too_long: false,
                };
                f.nft_frees_own_drops = false;
            },
        ),
        row(
            "5.10: known flow freed by nf_hook_slow (an nftables rule)",
            cause::RULESET,
            |f| {
                f.attached = Attached::Entry(KNOWN);
                f.conntrack_in_use = None;
                f.nft_frees_own_drops = false;
            },
        ),
        // ---- issue 17, case 1: an ICMP redirect through a NAT router ----
        // R forwards H's first echo request; ip_forward sends a redirect
        // before the FORWARD hook, icmp_glue_bits attaches the request's
        // (unconfirmed, never inserted) entry as RELATED, and NAT at
        // POSTROUTING drops it (nf_nat_icmp_reply_translation: NAT of that
        // entry is not done). nf_hook_slow frees it with NETFILTER_DROP.
        row(
            "issue 17 case 1: redirect with its flow's new entry",
            cause::OTHER,
            |f| {
                redirect(f);
                f.attached = Attached::Entry(Entry {
                    related: true,
                    nat_half_done: true,
                    ..NEW
                });
            },
        ),
        // ---- issue 17, case 2: redirects with policy accept everywhere ----
        row(
            "issue 17 case 2: redirect with a confirmed entry",
            cause::OTHER,
            |f| {
                redirect(f);
                f.attached = Attached::Entry(Entry {
                    related: true,
                    ..KNOWN
                });
            },
        ),
        // ---- issue 17 before 6.7: nf_hook_slow frees rule drops too ----
        // Without the NAT probe the redirect looks like a rule's drop
        // (the known miss of the tracepoint backend, docs/drop-causes.md).
        row(
            "before 6.7, tracepoint: redirect with a confirmed entry (known miss)",
            cause::RULESET,
            |f| {
                redirect(f);
                f.nft_frees_own_drops = false;
                f.attached = Attached::Entry(Entry {
                    related: true,
                    ..KNOWN
                });
            },
        ),
        row(
            "before 6.7, tracepoint: redirect with its flow's new entry (known miss)",
            cause::RULESET,
            |f| {
                redirect(f);
                f.nft_frees_own_drops = false;
                f.attached = Attached::Entry(Entry {
                    related: true,
                    nat_half_done: true,
                    ..NEW
                });
            },
        ),
        // The kprobe backend saw nf_nat_icmp_reply_translation return 0
        // for the packet: NAT's hook dropped it.
        row(
            "before 6.7, kprobe: NAT refused the redirect (confirmed entry)",
            cause::OTHER,
            |f| {
                redirect(f);
                f.nft_frees_own_drops = false;
                f.nat_refused = true;
                f.insert = InsertEvidence::NotFailed;
                f.attached = Attached::Entry(Entry {
                    related: true,
                    ..KNOWN
                });
            },
        ),
        row(
            "before 6.7, kprobe: NAT refused the redirect (new entry)",
            cause::OTHER,
            |f| {
                redirect(f);
                f.nft_frees_own_drops = false;
                f.nat_refused = true;
                f.hook = hook::LOCAL_OUT;
                f.attached = Attached::Entry(Entry {
                    related: true,
                    nat_half_done: true,
                    ..NEW
                });
            },
        ),
        row(
            "since 6.7, kprobe: NAT refused the redirect",
            cause::OTHER,
            |f| {
                redirect(f);
                f.nat_refused = true;
                f.attached = Attached::Entry(Entry {
                    related: true,
                    ..KNOWN
                });
            },
        ),
        // A rule's own drop stays the rule's, whatever NAT did before.
        row(
            "NAT refused, but freed by nft_do_chain",
            cause::RULESET,
            |f| {
                redirect(f);
                f.freer = Freer::NftChain;
                f.nat_refused = true;
                f.attached = Attached::Entry(Entry {
                    related: true,
                    ..KNOWN
                });
            },
        ),
    ]
}

#[test]
fn every_row_of_the_truth_table() {
    let mut wrong = 0;
    for r in rows() {
        let got = classify(&r.facts);
        if got != r.want {
            wrong += 1;
            eprintln!(
                "{}: got {}, want {} ({:?})",
                r.what,
                name(got),
                name(r.want),
                r.facts
            );
        }
    }
    assert_eq!(wrong, 0, "rows misclassified");
}

#[test]
fn issue_17_cases_are_never_insert_failures_nor_rules() {
    // Every variant of the redirect: with or without the NAT bits, the
    // chain verdict, the hook; the only evidence that counts is the
    // kernel's own insert-failure path.
    for nat_half_done in [false, true] {
        for chain in [
            ChainVerdict::Unknown,
            ChainVerdict::Short,
            ChainVerdict::TooLong,
            ChainVerdict::LongElsewhere,
        ] {
            for h in [hook::UNKNOWN, hook::POST_ROUTING, hook::LOCAL_OUT] {
                let mut f = base();
                redirect(&mut f);
                f.attached = Attached::Entry(Entry {
                    related: true,
                    nat_half_done,
                    ..NEW
                });
                f.chain = chain;
                f.hook = h;
                assert_eq!(classify(&f), cause::OTHER, "{f:?}");
                assert!(!needs_chain(&f), "no walk for an ICMP error: {f:?}");
            }
        }
    }
    // A new entry whose NAT is half done never reached confirm.
    let mut f = base();
    f.attached = Attached::Entry(Entry {
        nat_half_done: true,
        ..NEW
    });
    assert_eq!(classify(&f), cause::OTHER);
    // A related entry of a protocol the error rule does not cover (an
    // expected FTP data flow) can fail its insert.
    let mut f = base();
    f.proto = 6;
    f.attached = Attached::Entry(Entry {
        related: true,
        ..NEW
    });
    assert_eq!(classify(&f), cause::INSERT_FAILED);
}

#[test]
fn drops_are_recognised_with_and_without_drop_reasons() {
    let all = [Freer::HookSlow, Freer::NftChain, Freer::Elsewhere];
    // With reasons (5.17+), the reason alone decides, wherever freed.
    for freer in all {
        assert!(is_netfilter_drop(
            DropMark::Reason {
                netfilter_drop: true
            },
            freer
        ));
        assert!(!is_netfilter_drop(
            DropMark::Reason {
                netfilter_drop: false
            },
            freer
        ));
    }
    // Without (5.10): only a free by nf_hook_slow is netfilter's.
    assert!(is_netfilter_drop(DropMark::NoReason, Freer::HookSlow));
    assert!(!is_netfilter_drop(DropMark::NoReason, Freer::Elsewhere));
    assert!(!is_netfilter_drop(DropMark::NoReason, Freer::NftChain));
}

#[test]
fn icmp_errors_by_family() {
    assert!(is_icmp_error(1, 5));
    assert!(is_icmp_error(1, 3));
    assert!(!is_icmp_error(1, 8), "echo request");
    assert!(!is_icmp_error(1, 0), "echo reply");
    assert!(is_icmp_error(58, 1));
    assert!(is_icmp_error(58, 4));
    assert!(!is_icmp_error(58, 128), "echo request");
    assert!(!is_icmp_error(6, 5), "TCP");
}

#[test]
fn the_chain_is_walked_only_when_it_decides() {
    assert!(needs_chain(&base()));
    let mut f = base();
    f.attached = Attached::Entry(KNOWN);
    assert!(!needs_chain(&f));
    let mut f = base();
    f.insert = InsertEvidence::Failed {
        chain_too_long: false,
    };
    assert!(!needs_chain(&f));
    let mut f = base();
    f.freer = Freer::NftChain;
    assert!(!needs_chain(&f));
    let mut f = base();
    f.attached = Attached::Nothing;
    assert!(!needs_chain(&f));
    // NAT refused the packet: no insert failure to tell apart.
    let mut f = base();
    f.nat_refused = true;
    assert!(!needs_chain(&f));
    assert_eq!(classify(&f), cause::OTHER);
}

/// What the probe skips reading must not change any row's cause: every row
/// classified again with the fill unknown where `needs_fill` says so, and
/// conntrack's use unknown where `needs_users` does.
#[test]
fn skipped_reads_never_change_the_cause() {
    for r in rows() {
        let mut f = r.facts;
        if !needs_fill(f.freer) {
            f.fill = Fill::Unknown;
        }
        if !needs_users(f.freer) {
            f.conntrack_in_use = None;
        }
        assert_eq!(classify(&f), r.want, "{}: {:?}", r.what, r.facts);
        // And the other way: whatever the skipped reads would have said.
        for fill in [NOT_FULL, FULL, Fill::Unknown] {
            for users in [Some(true), Some(false), None] {
                let mut g = r.facts;
                if !needs_fill(g.freer) {
                    g.fill = fill;
                }
                if !needs_users(g.freer) {
                    g.conntrack_in_use = users;
                }
                assert_eq!(classify(&g), r.want, "{}: {:?}", r.what, g);
            }
        }
    }
}
