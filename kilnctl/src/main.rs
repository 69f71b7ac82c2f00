//! kilnctl: the operator's CLI for Kiln nodes.
//!
//! Exit codes scripts can trust: 0 success, 1 failure (an invalid config, a
//! file that exists, an I/O error), 2 usage (unknown flags, missing or
//! malformed arguments).

mod call;
mod cli;
mod completion;
mod fsio;
mod gen;
mod kilnconfig;
mod validate;

use std::process::ExitCode;

use argh::FromArgs;

/// A command-line argument with a bad value: exits 2 like argh's own errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let name = args
        .first()
        .map_or("kilnctl", |a| a.rsplit('/').next().unwrap_or(a));
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let cli = match cli::Cli::from_args(&[name], &rest) {
        Ok(cli) => cli,
        Err(early) => {
            return match early.status {
                // --help
                Ok(()) => {
                    print!("{}", early.output);
                    ExitCode::SUCCESS
                }
                Err(()) => {
                    eprint!("{}", early.output);
                    eprintln!("Run {name} --help for usage.");
                    ExitCode::from(2)
                }
            };
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILNCTL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = match cli.command {
        cli::Command::Validate(ref cmd) => validate::run(cmd),
        cli::Command::Gen(cli::GenCommand {
            command: cli::GenSubcommand::Config(ref cmd),
        }) => gen::run(cmd).map(|()| true),
        cli::Command::Completion(ref cmd) => completion::run(cmd),
        _ => call::run(&cli),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            let usage = e.downcast_ref::<UsageError>().is_some();
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
