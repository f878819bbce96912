//! gregor-perf: the perf harness. Open-loop load against any Kafka-protocol
//! endpoint through librdkafka, HDR latencies from intended send times, the
//! machine's limits beside every number, JSON/markdown/SVG reports.

mod keys;
mod limits;
mod pacing;
mod payload;
mod procstat;
mod progress;
mod rate_search;
mod report;
mod runner;
mod stats;
mod svg;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::report::Report;
use crate::runner::{RunOptions, Target};
use crate::workload::Workload;

#[derive(Parser)]
#[command(
    name = "gregor-perf",
    version,
    about = "Open-loop benchmarks of any Kafka-protocol broker, beside the machine's limits"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure this machine's ceilings (disk, fdatasync, loopback, memcpy) and cache them
    Limits {
        /// Directory for the disk tests (use the broker's data disk)
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Bytes written by each sequential-write test
        #[arg(long, default_value = "1GiB")]
        size: String,
        /// Where to cache the result [default: ~/.cache/gregor-perf/limits.json]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Run a workload against one endpoint
    Run {
        /// A workload file, or the name of a built-in one (see `workloads`)
        workload: String,
        /// HOST:PORT of the broker
        #[arg(long)]
        bootstrap: String,
        /// Name of this endpoint in the output [default: the bootstrap address]
        #[arg(long)]
        label: Option<String>,
        /// The broker's pid, for CPU% and RSS [default: the local listener of the port]
        #[arg(long)]
        broker_pid: Option<u32>,
        #[command(flatten)]
        common: Common,
    },
    /// Run the same workload against several endpoints, one after the other, with a ratio table
    Compare {
        /// A workload file, or the name of a built-in one
        workload: String,
        /// NAME=HOST:PORT[,pid=PID]; the first is the baseline of the ratios
        #[arg(long = "target", required = true)]
        targets: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// List the built-in workloads
    Workloads,
}

#[derive(Args)]
struct Common {
    /// Print the full result as JSON on stdout
    #[arg(long)]
    json: bool,
    /// Write result.json, summary.md and SVG plots into DIR
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Machine limits from `gregor-perf limits` [default: the cached ones, if any]
    #[arg(long, value_name = "FILE")]
    limits: Option<PathBuf>,
    /// Override a workload field, e.g. --set duration_s=5 (repeatable)
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
    /// Leave the benchmark topics in place (default: delete them at the end)
    #[arg(long)]
    keep_topics: bool,
    /// No progress output on stderr
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', "; ");
            eprintln!("gregor-perf: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

pub fn librdkafka_version() -> String {
    rdkafka::util::get_rdkafka_version().1
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Limits {
            dir,
            size,
            out,
            json,
        } => {
            let size = workload::parse_size(&size).map_err(anyhow::Error::msg)?;
            let l = limits::measure(&dir, size, &|what| eprintln!("measuring {what} ..."))?;
            let path = out.unwrap_or_else(limits::default_cache_path);
            limits::save(&l, &path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&l)?);
            } else {
                print!("{}", report::limits_human(&l));
            }
            eprintln!("limits cached in {}", path.display());
            Ok(())
        }
        Cmd::Run {
            workload,
            bootstrap,
            label,
            broker_pid,
            common,
        } => {
            let target = Target {
                label: label.unwrap_or_else(|| bootstrap.clone()),
                bootstrap,
                broker_pid,
            };
            bench(&workload, vec![target], &common)
        }
        Cmd::Compare {
            workload,
            targets,
            common,
        } => {
            let targets = targets
                .iter()
                .map(|t| parse_target(t))
                .collect::<Result<Vec<_>>>()?;
            let mut labels: Vec<&str> = targets.iter().map(|t| t.label.as_str()).collect();
            labels.sort_unstable();
            labels.dedup();
            if labels.len() != targets.len() {
                bail!("--target names must be distinct");
            }
            bench(&workload, targets, &common)
        }
        Cmd::Workloads => {
            for (name, _) in workload::BUILTIN {
                let w = Workload::load(name, &[])?;
                println!("{name:<20} {}", w.description);
            }
            Ok(())
        }
    }
}

/// NAME=HOST:PORT[,pid=PID]
fn parse_target(s: &str) -> Result<Target> {
    let (label, rest) = s
        .split_once('=')
        .with_context(|| format!("--target {s:?}: expected NAME=HOST:PORT[,pid=PID]"))?;
    let mut parts = rest.split(',');
    let bootstrap = parts.next().unwrap_or_default().trim().to_string();
    if label.trim().is_empty() || bootstrap.is_empty() || !bootstrap.contains(':') {
        bail!("--target {s:?}: expected NAME=HOST:PORT[,pid=PID]");
    }
    let mut broker_pid = None;
    for p in parts {
        match p.trim().split_once('=') {
            Some(("pid", v)) => {
                broker_pid = Some(
                    v.parse()
                        .with_context(|| format!("--target {s:?}: bad pid {v:?}"))?,
                )
            }
            _ => bail!("--target {s:?}: unknown option {p:?} (only pid=PID)"),
        }
    }
    Ok(Target {
        label: label.trim().to_string(),
        bootstrap,
        broker_pid,
    })
}

fn load_limits(path: Option<&Path>) -> Result<Option<limits::Limits>> {
    match path {
        Some(p) => Ok(Some(limits::load(p)?)),
        None => {
            let p = limits::default_cache_path();
            if !p.exists() {
                return Ok(None);
            }
            match limits::load(&p) {
                Ok(l) => Ok(Some(l)),
                Err(e) => {
                    eprintln!("warning: ignoring cached limits: {e:#}");
                    Ok(None)
                }
            }
        }
    }
}

fn bench(workload_spec: &str, targets: Vec<Target>, common: &Common) -> Result<()> {
    let w = Workload::load(workload_spec, &common.set)?;
    let limits = load_limits(common.limits.as_deref())?;
    let opts = RunOptions {
        keep_topics: common.keep_topics,
        progress: !common.quiet,
    };
    let mut results = Vec::new();
    for t in &targets {
        let mut r = if targets.len() > 1 {
            runner::run(&w, t, &opts).with_context(|| format!("target {}", t.label))?
        } else {
            runner::run(&w, t, &opts)?
        };
        if let Some(l) = &limits {
            r.limit_shares = report::limit_shares(&w, &r.measured, l);
        }
        results.push(r);
    }
    let ratios = if results.len() > 1 {
        report::ratio_rows(&results)
    } else {
        Vec::new()
    };
    let rep = Report {
        tool: "gregor-perf".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        librdkafka: librdkafka_version(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        workload: w,
        limits,
        results,
        ratios,
    };
    if let Some(dir) = &common.report {
        report::write_dir(&rep, dir)?;
        if !common.quiet {
            eprintln!("report written to {}", dir.display());
        }
    }
    if common.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        for r in &rep.results {
            println!("{}", report::human(&rep, r));
        }
        if rep.results.len() > 1 {
            print!("{}", report::human_ratios(&rep));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("gregor=127.0.0.1:9092").unwrap();
        assert_eq!(
            (t.label.as_str(), t.bootstrap.as_str(), t.broker_pid),
            ("gregor", "127.0.0.1:9092", None)
        );
        let t = parse_target("kafka=localhost:9093,pid=42").unwrap();
        assert_eq!(t.broker_pid, Some(42));
        assert!(parse_target("nolabel").is_err());
        assert!(parse_target("x=noport").is_err());
        assert!(parse_target("x=h:1,pid=abc").is_err());
        assert!(parse_target("x=h:1,color=red").is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
