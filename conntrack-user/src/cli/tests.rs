use super::*;
use crate::model::drops::Cause;

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration(" 3s "), Ok(Duration::from_secs(3)));
}

#[test]
fn bad_durations_say_why() {
    for bad in ["", "abc", "0", "-1", "5x", "1e400", "9999h"] {
        let err = parse_duration(bad).expect_err(bad);
        assert!(err.contains(bad.trim()) || bad.is_empty(), "{bad}: {err}");
    }
}

#[test]
fn ring_size_must_be_a_power_of_two() {
    assert_eq!(parse_ring_mib("16"), Ok(16));
    assert!(parse_ring_mib("3").is_err());
    assert!(parse_ring_mib("0").is_err());
    assert!(parse_ring_mib("2048").is_err());
}

#[test]
fn sizes_and_speeds_parse() {
    assert_eq!(parse_size("64K"), Ok(64 << 10));
    assert_eq!(parse_size("500M"), Ok(500 << 20));
    assert_eq!(parse_size("2GiB"), Ok(2 << 30));
    assert_eq!(parse_size("1048576"), Ok(1 << 20));
    for bad in ["", "1K", "5X", "big", "-1G"] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_speed("max"), Ok(Speed::Max));
    assert_eq!(parse_speed("10x"), Ok(Speed::Times(10.0)));
    assert!(parse_speed("0").is_err() && parse_speed("fast").is_err());
}

#[test]
fn trace_commands_parse() {
    let cli = Cli::try_parse_from([
        "ctscope",
        "record",
        "-o",
        "t.ctrace",
        "--cause",
        "table_full,policy",
        "--port",
        "443",
        "--max-size",
        "1G",
        "--compress",
    ])
    .expect("parse");
    let Some(Command::Record(args)) = cli.command else {
        panic!("not record");
    };
    assert_eq!(args.filter.cause, [Cause::TableFull, Cause::Ruleset]);
    assert_eq!(
        (args.filter.port, args.max_size),
        (Some(443), Some(1 << 30))
    );
    assert!(args.compress);
    assert!(
        Cli::try_parse_from(["ctscope", "record"]).is_err(),
        "-o is required"
    );
    assert!(Cli::try_parse_from(["ctscope", "record", "-o", "f", "--cause", "x"]).is_err());
    let cli = Cli::try_parse_from([
        "ctscope",
        "export",
        "t.ctrace",
        "--format",
        "csv",
        "--kind",
        "drops,alloc",
    ])
    .expect("parse");
    let Some(Command::Export(args)) = cli.command else {
        panic!("not export");
    };
    assert_eq!(args.kind, [ExportKind::Drops, ExportKind::Alloc]);
    assert_eq!(args.format, ExportFormat::Csv);
}

#[test]
fn cli_definition_is_consistent() {
    use clap::CommandFactory as _;
    Cli::command().debug_assert();
}

#[test]
fn drops_flags_build_a_filter() {
    let cli = Cli::try_parse_from([
        "ctscope",
        "drops",
        "--syn",
        "--cause",
        "policy",
        "--cause",
        "table-full",
        "--proto",
        "tcp",
        "--port",
        "443",
        "--host",
        "::1",
    ])
    .expect("parse");
    let Some(Command::Drops(args)) = cli.command else {
        panic!("not drops");
    };
    let f = args.filter.drop_filter();
    assert!(f.syn_only);
    assert_eq!(f.proto, Some(6));
    assert_eq!(f.port, Some(443));
    assert_eq!(f.causes.len(), 2);
    assert_eq!(f.host, Some("::1".parse().expect("addr")));
    assert!(Cli::try_parse_from(["ctscope", "drops", "--proto", "bogus"]).is_err());
    assert!(Cli::try_parse_from(["ctscope", "drops", "--cause", "bogus"]).is_err());
}

#[test]
fn stats_flags_parse() {
    let cli = Cli::try_parse_from([
        "ctscope",
        "stats",
        "--json",
        "--interval",
        "0.5",
        "--count",
        "3",
    ])
    .expect("parse");
    let Some(Command::Stats(args)) = cli.command else {
        panic!("not stats");
    };
    assert!(args.json);
    assert_eq!(args.interval, Duration::from_millis(500));
    assert_eq!(args.count, Some(3));
    assert!(Cli::try_parse_from(["ctscope", "stats", "--count", "0"]).is_err());
    assert!(Cli::try_parse_from(["ctscope", "stats", "--bogus"]).is_err());
}

#[test]
fn buckets_flags_parse() {
    let cli = Cli::try_parse_from(["ctscope", "buckets", "--json", "--top", "3"]).expect("parse");
    let Some(Command::Buckets(args)) = cli.command else {
        panic!("not buckets");
    };
    assert!(args.json);
    assert_eq!(args.top, 3);
    let cli = Cli::try_parse_from(["ctscope", "stats", "--buckets"]).expect("parse");
    assert!(matches!(cli.command, Some(Command::Stats(a)) if a.buckets));
}

#[test]
fn top_flags_parse() {
    let cli = Cli::try_parse_from(["ctscope", "top", "-i", "500ms"]).expect("parse");
    let Some(Command::Top(args)) = cli.command else {
        panic!("not top");
    };
    assert_eq!(args.interval, Duration::from_millis(500));
    assert!(
        Cli::try_parse_from(["ctscope"])
            .expect("bare")
            .command
            .is_none()
    );
}

#[test]
fn intervals_have_a_floor() {
    use super::parse::parse_interval;
    assert_eq!(parse_interval("0.1"), Ok(Duration::from_millis(100)));
    assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
    for bad in ["0.0000001", "99ms", "0.05"] {
        let err = parse_interval(bad).expect_err(bad);
        assert!(err.contains("at least 100 ms"), "{err}");
    }
}

#[test]
fn holders_flags_parse() {
    let cli = Cli::try_parse_from(["ctscope", "holders", "--json", "--by", "src", "--top", "3"])
        .expect("parse");
    let Some(Command::Holders(args)) = cli.command else {
        panic!("not holders");
    };
    assert!(args.json);
    assert_eq!(args.by, "src");
    assert_eq!(args.top, 3);
    assert_eq!(args.trace, None);
    assert!(Cli::try_parse_from(["ctscope", "holders", "--by", "port"]).is_err());
    let cli = Cli::try_parse_from(["ctscope", "holders"]).expect("parse");
    let Some(Command::Holders(args)) = cli.command else {
        panic!("not holders");
    };
    assert_eq!((args.by.as_str(), args.top, args.json), ("dst", 10, false));
}

#[test]
fn probe_options_are_in_long_help_only_under_their_own_heading() {
    use clap::CommandFactory as _;
    for sub in [
        "stats", "top", "record", "drops", "serve", "buckets", "holders",
    ] {
        let mut cmd = Cli::command();
        // Global options reach the subcommands when the command is built.
        cmd.build();
        let sub_cmd = cmd
            .find_subcommand_mut(sub)
            .unwrap_or_else(|| panic!("{sub} is a subcommand"));
        let short = sub_cmd.render_help().to_string();
        let long = sub_cmd.render_long_help().to_string();
        for opt in ["--ring-size", "--backend", "--kernel-stats", "--locate"] {
            assert!(!short.contains(opt), "{sub} -h repeats {opt}:\n{short}");
            assert!(long.contains(opt), "{sub} --help lacks {opt}");
        }
        assert!(long.contains("Probe options"), "{sub} --help: no heading");
    }
}
