use std::{io::Write as _, process::ExitCode};

use clap::Parser as _;
use ctscope::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(&format!("starting the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(ctscope::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if ctscope::is_quiet_end(&e) => ExitCode::SUCCESS,
        Err(e) => {
            report(&ctscope::error_text(&e));
            ExitCode::from(ctscope::exit_status(&e))
        }
    }
}

/// The last word on stderr; `eprintln!` would panic if stderr is a closed
/// pipe (`2>&1 | head -1`), and the exit status says the rest.
fn report(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "ctscope: {message}");
}
