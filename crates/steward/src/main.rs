//! The `steward` binary: thin glue from the command line to the libraries.
//! `main` -> [`run`] -> `anyhow::Result<ExitCode>`; every failure becomes a message on stderr
//! and a documented exit code (see `docs/cli.md`).
//!
//! Unsafe code: denied, except the one allocator option call in
//! [`purge_freed_memory_at_once`] (mimalloc's options have no safe Rust API).
#![deny(unsafe_code)]

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

/// `mi_option_purge_delay` in mimalloc 3's `mimalloc.h` (the enum's 16th option).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Its defaults (10 ms in mimalloc 2's header, 1000 ms in the mimalloc 3 this links),
/// checked before changing it: another value means the index is not the option we think,
/// or someone set it; then it is left alone.
const MI_PURGE_DELAY_DEFAULTS: [std::ffi::c_long; 2] = [10, 1000];

/// `steward repo` moves gigabytes through short-lived megabyte buffers; by default mimalloc
/// keeps freed memory committed for up to a second, which made a restore's peak memory 174
/// MiB against 88 with immediate purging, and a backup's 168 against about 105 (restic: about
/// 100 and 125; bench/README.md). The price is some system time (a restore about 0.3 to 1 s
/// slower on the 2 GiB benchmark). `MIMALLOC_PURGE_DELAY` in the environment still wins.
#[allow(unsafe_code)]
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: called from `main` before any other thread is started (mimalloc's option
    // setters are not thread safe); both calls only read and write mimalloc's option table,
    // and the index is checked against the option's documented default first.
    unsafe {
        if MI_PURGE_DELAY_DEFAULTS.contains(&libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY))
        {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
}

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
    if matches!(cli.command, cli::Command::Repo(_)) {
        purge_freed_memory_at_once();
    }
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
