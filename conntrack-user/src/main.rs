use std::process::ExitCode;

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
            eprintln!("ctscope: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(ctscope::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ctscope: {e:#}");
            ExitCode::from(ctscope::exit_status(&e))
        }
    }
}
