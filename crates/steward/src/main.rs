//! The `steward` binary: thin glue from the command line to the libraries.
//! `main` -> [`run`] -> `anyhow::Result<ExitCode>`; every failure becomes a message on stderr
//! and a documented exit code (see `docs/cli.md`).
#![forbid(unsafe_code)]

mod alerts;
mod checks;
mod cli;
mod client;
mod commands;
mod files;
mod server;
mod settings;
mod testhooks;
mod watch;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: request handling allocates many small short-lived objects; measured faster than
/// the system allocator on the read benchmark (bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let code = commands::exit_code_for(&e);
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

async fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    commands::dispatch(cli).await
}
