//! ctscope: a live, lossless observer of the Linux conntrack table.
//!
//! Data flows one way: kernel probes ([`probe`]) -> event sources
//! ([`source`]) -> the aggregation model ([`model`]) -> views ([`views`]).
pub mod btf;
pub mod cli;
pub mod commands;
pub mod doctor;
pub mod event;
pub mod fsutil;
pub mod kallsyms;
pub mod kernel;
pub mod loadgen;
pub mod model;
pub mod probe;
pub mod source;
pub mod trace;
pub mod version;
pub mod views;

use cli::{Cli, Command, TopArgs};

/// Runs one invocation of the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // A global sysctl left changed by a ctscope that was killed is put back
    // first, whatever the command (kernel::restore).
    let leftover = kernel::restore::repair();
    if let Some(message) = leftover.message() {
        eprintln!("{message}");
    }
    match &cli.command {
        Some(Command::Stats(args)) => commands::stats::run(args, &cli.probe).await,
        Some(Command::Drops(args)) => commands::drops::run(args, &cli.probe).await,
        Some(Command::Load(args)) => commands::load::run(args).await,
        Some(Command::Demo(args)) => commands::demo::run(args, &cli.probe).await,
        Some(Command::Serve(args)) => commands::serve::run(args, &cli.probe).await,
        Some(Command::Completions { shell }) => commands::docs::completions(*shell),
        Some(Command::Man { subcommand }) => commands::docs::man(subcommand.as_deref()),
        Some(Command::Record(args)) => commands::record::run(args, &cli.probe).await,
        Some(Command::Replay(args)) => commands::replay::run(args).await,
        Some(Command::Export(args)) => commands::export::run(args),
        Some(Command::Info(args)) => commands::info::run(args),
        Some(Command::Buckets(args)) => commands::buckets::run(args, &cli.probe).await,
        Some(Command::Holders(args)) => commands::holders::run(args, &cli.probe).await,
        Some(Command::Doctor(args)) => commands::doctor::run(args, &cli.probe, &leftover).await,
        Some(Command::Top(args)) => commands::top::run(args, &cli.probe).await,
        // `top` itself falls back to stats lines when stdout is not a terminal.
        None => commands::top::run(&TopArgs::default(), &cli.probe).await,
    }
}

/// An error and its causes on one line, as `{:#}` prints them, but without
/// a cause whose text its parent already shows (many error types name their
/// source in their own message: "X: E: E" becomes "X: E").
pub fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

/// The command stopped because its reader closed stdout (`| head -1`):
/// nothing to report, exit status 0.
pub fn is_quiet_end(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.is::<commands::StdoutClosed>())
}

/// Exit status for an error: 2 when the environment or the arguments are at
/// fault (not root, no BTF, conntrack missing, bad input), 1 otherwise.
pub fn exit_status(err: &anyhow::Error) -> u8 {
    if let Some(findings) = err.downcast_ref::<commands::doctor::DoctorFindings>() {
        return findings.0.exit_code();
    }
    let walk_env = err
        .downcast_ref::<probe::WalkError>()
        .is_some_and(probe::WalkError::is_environment);
    if walk_env
        || err
            .downcast_ref::<probe::ProbeError>()
            .is_some_and(probe::ProbeError::is_environment)
        || err
            .downcast_ref::<trace::TraceError>()
            .is_some_and(trace::TraceError::is_bad_input)
        || err.downcast_ref::<commands::BadInput>().is_some()
        || err
            .downcast_ref::<kernel::restore::GuardError>()
            .is_some_and(kernel::restore::GuardError::is_environment)
        || err
            .downcast_ref::<loadgen::NamespaceError>()
            .is_some_and(loadgen::NamespaceError::is_environment)
    {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod error_text_tests {
    use super::error_text;

    #[derive(Debug, thiserror::Error)]
    #[error("writing X: {0}")]
    struct Names(#[source] std::io::Error);

    #[test]
    fn a_cause_already_in_its_parents_message_is_not_repeated() {
        let io = std::io::Error::from_raw_os_error(libc::EPERM);
        let e = anyhow::Error::new(Names(io)).context("recording");
        let text = error_text(&e);
        assert_eq!(text.matches("Operation not permitted").count(), 1, "{text}");
        assert!(text.starts_with("recording: writing X: "), "{text}");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&plain), "outer: inner");
    }
}
