//! Runs the `compare` benchmark and prints its results as a Markdown table.
//!
//! ```text
//! cargo run -q -p breaker-bench -- [--quick] [--table-only] [FILTER...]
//! ```
//!
//! * `--quick`: 1 s warm-up, 2 s measurement, 30 samples per case (about
//!   three minutes in all, with the paired rounds); without it 2 s / 5 s /
//!   100 samples (about six minutes), both on 2 cores.
//! * `--table-only`: skip `cargo bench`, print whatever criterion has stored.
//! * `FILTER`: passed to criterion (a regex on `group/id`), e.g. `closed_1t`.
//!
//! A run without a filter ends with paired rounds (see
//! [`breaker_bench::paired`]): the ratios the targets name, from ours and the
//! peer timed alternately, printed as a second table.
//!
//! Built with `--features redis`, a run without a filter then runs the
//! `fleet` bench (it starts its own `redis-server`) and prints its figures:
//! the closed path shared through Redis against unshared, as paired rounds,
//! and how fast a transition reaches a second process (p50, p99):
//!
//! ```text
//! cargo run -q --release -p breaker-bench --features redis -- --quick
//! ```
//!
//! Criterion's own output goes to stderr; stdout carries only the table, so
//! `... > bench.md` keeps it. Results are read from `CRITERION_HOME`, else
//! `$CARGO_TARGET_DIR/criterion`, else the workspace target dir's `criterion`.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Instant, SystemTime};

use breaker_bench::{Estimate, paired, render_markdown};

const USAGE: &str = "usage: breaker-bench [--quick] [--table-only] [FILTER...]";

/// Criterion settings per mode: (warm-up s, measurement s, samples).
const QUICK: (&str, &str, &str) = ("1", "2", "30");
const FULL: (&str, &str, &str) = ("2", "5", "100");

struct Args {
    quick: bool,
    table_only: bool,
    filters: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        table_only: false,
        filters: Vec::new(),
    };
    for arg in env::args().skip(1) {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--table-only" => args.table_only = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            flag if flag.starts_with('-') => return Err(format!("unknown flag `{flag}`\n{USAGE}")),
            filter => args.filters.push(filter.to_owned()),
        }
    }
    Ok(args)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("breaker-bench lives inside the workspace")
        .to_path_buf()
}

/// `CARGO_TARGET_DIR` made absolute: `cargo bench` runs the bench binary from
/// the package directory, so a relative path would mean something else there.
fn absolute_target_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env::var_os("CARGO_TARGET_DIR")?);
    Some(env::current_dir().map_or(dir.clone(), |cwd| cwd.join(dir)))
}

fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn run_bench(args: &Args, paired_out: Option<&Path>) -> Result<(), String> {
    let (warm_up, measurement, samples) = if args.quick { QUICK } else { FULL };
    let mut command = Command::new(cargo());
    command
        .current_dir(workspace_root())
        .args(["bench", "-p", "breaker-bench", "--bench", "compare", "--"])
        .args(["--warm-up-time", warm_up])
        .args(["--measurement-time", measurement])
        .args(["--sample-size", samples])
        .arg("--noplot")
        .args(&args.filters)
        .stdout(Stdio::from(io::stderr()));
    if let Some(dir) = absolute_target_dir() {
        command.env("CARGO_TARGET_DIR", dir);
    }
    if let Some(out) = paired_out {
        command.env(paired::OUT_ENV, out);
    }
    eprintln!("running: {command:?}");
    let status = command
        .status()
        .map_err(|e| format!("cannot start cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo bench failed: {status}"))
    }
}

/// Runs the `fleet` bench (sharing through Redis) and stores what it
/// printed in `out`.
#[cfg(feature = "redis")]
fn run_fleet_bench(out: &Path) -> Result<(), String> {
    let mut command = Command::new(cargo());
    command
        .current_dir(workspace_root())
        .args(["bench", "-p", "breaker-bench", "--features", "redis"])
        .args(["--bench", "fleet"])
        .stderr(Stdio::inherit());
    if let Some(dir) = absolute_target_dir() {
        command.env("CARGO_TARGET_DIR", dir);
    }
    eprintln!("running: {command:?}");
    let output = command
        .output()
        .map_err(|e| format!("cannot start cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!("the fleet bench failed: {}", output.status));
    }
    fs::write(out, &output.stdout).map_err(|e| format!("{}: {e}", out.display()))
}

/// Where criterion stored its results, by criterion's own rules.
fn criterion_home() -> Result<PathBuf, String> {
    if let Some(home) = env::var_os("CRITERION_HOME") {
        return Ok(home.into());
    }
    if let Some(dir) = absolute_target_dir() {
        return Ok(dir.join("criterion"));
    }
    let output = Command::new(cargo())
        .current_dir(workspace_root())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata printed no JSON: {e}"))?;
    metadata["target_directory"]
        .as_str()
        .map(|dir| Path::new(dir).join("criterion"))
        .ok_or_else(|| "cargo metadata has no `target_directory`".to_owned())
}

fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every `*/new/` result under `dir` written at or after `since`.
fn collect(dir: &Path, since: Option<SystemTime>, out: &mut Vec<Estimate>) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|name| name == "new") {
            let estimates = path.join("estimates.json");
            let fresh = match since {
                None => true,
                Some(since) => fs::metadata(&estimates)
                    .and_then(|meta| meta.modified())
                    .is_ok_and(|written| written >= since),
            };
            if fresh && estimates.exists() {
                let benchmark = read_json(&path.join("benchmark.json"))?;
                out.push(Estimate::from_criterion_json(
                    &benchmark,
                    &read_json(&estimates)?,
                )?);
            }
        } else {
            collect(&path, since, out)?;
        }
    }
    Ok(())
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let started = Instant::now();
    let home = criterion_home()?;
    // Paired rounds for a whole run only; a filtered run asked for less.
    let paired_out = home.join("breaker-paired.md");
    let fleet_out = home.join("breaker-fleet.md");
    let since = if args.table_only {
        None
    } else {
        let now = SystemTime::now();
        let _ = fs::remove_file(&paired_out);
        let _ = fs::remove_file(&fleet_out);
        fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
        let paired = args.filters.is_empty().then_some(paired_out.as_path());
        run_bench(&args, paired)?;
        #[cfg(feature = "redis")]
        if args.filters.is_empty() {
            run_fleet_bench(&fleet_out)?;
        }
        Some(now)
    };

    let mut estimates = Vec::new();
    collect(&home, since, &mut estimates)?;
    if estimates.is_empty() {
        return Err(format!("no criterion results under {}", home.display()));
    }
    print!("{}", render_markdown(&estimates));
    let breaker = breaker_runtime::CircuitBreaker::new("memory", Default::default())
        .map_err(|e| e.to_string())?;
    println!(
        "- memory of one breaker (default config, excluding fallback caches): {} bytes (target: under 1 KiB)",
        breaker.memory_size()
    );
    if let Ok(rounds) = fs::read_to_string(&paired_out) {
        println!("\nThe target ratios again, from paired rounds in the same process:\n");
        print!("{rounds}");
    }
    match fs::read_to_string(&fleet_out) {
        Ok(fleet) => {
            println!("\nSharing through Redis (the `fleet` bench, its own redis-server):\n");
            print!("{fleet}");
        }
        Err(_) if since.is_some() && args.filters.is_empty() && !cfg!(feature = "redis") => {
            println!("\n(Sharing through Redis is measured when built with `--features redis`.)");
        }
        Err(_) => {}
    }
    if since.is_some() {
        eprintln!("bench + table took {:.0?}", started.elapsed());
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("breaker-bench: {message}");
            ExitCode::FAILURE
        }
    }
}
