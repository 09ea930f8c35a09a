//! `shoal-loadtest`: the command-line entry point. See the crate documentation and
//! loadtest/README.md.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use shoal_loadtest::cli::{Cli, Command};
use shoal_loadtest::{record, report};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status when the run completed but missed one of its `--expect-*` expectations.
const EXPECTATION_FAILED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SHOAL_LOADTEST_LOG")
                .unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Report {
        inputs,
        output,
        title,
    } = &cli.command
    {
        let results = inputs
            .iter()
            .map(|p| report::read_json(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        std::fs::write(output, report::html::render(&results, title))
            .with_context(|| format!("cannot write {}", output.display()))?;
        eprintln!("wrote {}", output.display());
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Check {
        inputs,
        fault_at_ns,
        stall,
        json,
    } = &cli.command
    {
        let lines = record::read(inputs)?;
        let verdict = record::check::check(
            &lines,
            record::check::CheckOptions {
                fault_at_ns: *fault_at_ns,
                stall_us: stall.0.as_micros() as u64,
            },
        );
        print!("{}", record::check::render(&verdict));
        if let Some(path) = json {
            std::fs::write(path, serde_json::to_vec_pretty(&verdict)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        return Ok(if verdict.passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXPECTATION_FAILED)
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if matches!(cli.command, Command::Worker) {
        runtime.block_on(shoal_loadtest::worker::worker_main())?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some((spec, args)) = cli.command.scenario()? else {
        return Ok(ExitCode::SUCCESS);
    };
    let config = args.config(spec)?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let reporting = args.reporting(command);
    let result = runtime.block_on(shoal_loadtest::run::execute(config, &reporting))?;
    print!("{}", report::summary::render(&result));
    if let Some(path) = &args.json {
        report::write_json(&result, path)?;
    }
    if let Some(path) = &args.csv {
        report::write_csv(&result, path)?;
    }
    if let Some(path) = &args.html {
        std::fs::write(
            path,
            report::html::render(std::slice::from_ref(&result), &result.label),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
    }
    // Connections still open in tasks are dropped with the runtime, without waiting.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    Ok(if result.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXPECTATION_FAILED)
    })
}
