//! The `lockstep` binary: argument parsing and glue over the library crates.
//!
//! Arguments are parsed into typed structs first (`args.rs`, no I/O), then each
//! subcommand builds its real objects and runs. Errors are printed once, prefixed
//! with the program name, with their whole cause chain; the exit code says whether
//! anything failed. Only this crate prints.
//!
//! It must hold no logic of a subcommand: each lives in its own module.

mod args;
mod audit;
mod chaos;
mod check;
mod config;
mod connection;
mod converge;
mod demo;
#[cfg(test)]
mod golden;
mod rdb;
mod report;
mod status;
mod sync;
mod task;
mod verify;

fn main() -> std::process::ExitCode {
    let args = config::parse_cli();
    let log_format = args.log_format;
    let display = report::init(log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("lockstep: cannot start the async runtime: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match args.command {
            args::Command::Sync(args) => sync::run(args, display).await,
            args::Command::Check(args) => check::run(args).await,
            args::Command::Verify(args) => verify::run(args).await,
            args::Command::Status(args) => status::run(args).await,
            args::Command::Rdb(command) => rdb::run(command),
            args::Command::Demo(args) => demo::run(args).await,
            args::Command::Chaos(args) => chaos::run(args).await,
            args::Command::Audit(args) => audit::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            // For machines, the final error is a log line like the others.
            match log_format {
                args::LogFormat::Json => tracing::error!("{err:#}"),
                args::LogFormat::Text => eprintln!("lockstep: {err:#}"),
            }
            std::process::ExitCode::from(2)
        }
    }
}
