//! The `steward` binary: thin glue from the command line to the libraries.
//! `main` -> [`run`] -> `anyhow::Result<ExitCode>`; every failure becomes a message on stderr
//! and a documented exit code (see `docs/cli.md`).
#![forbid(unsafe_code)]

mod alerts;
mod backups;
mod checks;
mod cli;
mod client;
mod commands;
mod files;
mod repo;
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

/// `steward ... | head` closes stdout early and `println!` then panics. Like other Unix tools,
/// end quietly instead (status 141, as if SIGPIPE had ended the process): no panic text.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        // `println!` says "failed printing to stdout: Broken pipe"; clap_complete's
        // generator "failed to write completion file: ... BrokenPipe".
        if msg.contains("Broken pipe") || msg.contains("BrokenPipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_broken_pipe();
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
