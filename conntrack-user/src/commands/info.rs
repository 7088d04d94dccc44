//! `ctscope info`: a summary of a trace file.

use crate::{
    cli::InfoArgs,
    trace::summary::{render, summarize},
};

pub fn run(args: &InfoArgs) -> anyhow::Result<()> {
    let summary = summarize(&args.file)?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", render(&summary));
    }
    if summary.damaged {
        anyhow::bail!(
            "{}: damaged data in the middle of the file (listed above)",
            args.file.display()
        );
    }
    Ok(())
}
