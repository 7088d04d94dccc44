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
        Some(Command::Doctor(args)) => commands::doctor::run(args, &cli.probe, &leftover).await,
        Some(Command::Top(args)) => commands::top::run(args, &cli.probe).await,
        // `top` itself falls back to stats lines when stdout is not a terminal.
        None => commands::top::run(&TopArgs::default(), &cli.probe).await,
    }
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
