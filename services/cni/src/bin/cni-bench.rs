//! ADD+DEL latency of Kiln's bridge + host-local against Debian's reference
//! bridge + host-local, in the same namespace set-up the integration tests
//! use. Prints a markdown table. Needs root.
//!
//! `cargo run --release -p kiln-cni --bin cni-bench [cycles]`
//!
//! The bench binary is also Kiln's plugin: the plugin symlinks point at it
//! and it dispatches on argv[0], so what is measured is the release build of
//! the plugin code without a separate build step.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

// The integration tests' lab; the tests use the parts the bench does not.
#[allow(dead_code)]
#[path = "../../tests/harness/mod.rs"]
mod harness;

use harness::{Lab, PluginSet};

const DEFAULT_CYCLES: usize = 200;
const WARM_UP: usize = 5;

struct Stats {
    add: Vec<Duration>,
    del: Vec<Duration>,
    both: Vec<Duration>,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if kiln_cni::cli::plugin_from_argv(&argv).is_some() {
        return kiln_cni::cli::main();
    }
    match bench(&argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cni-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(argv: &[String]) -> Result<()> {
    let cycles = match argv.get(1) {
        Some(n) => n.parse().context("cycles must be a number")?,
        None => DEFAULT_CYCLES,
    };
    let me = std::env::current_exe().context("own path")?;
    let sets = [PluginSet::kiln(&me), PluginSet::reference()];
    println!(
        "| plugins | cycles | ADD p50 | ADD p99 | DEL p50 | DEL p99 | ADD+DEL p50 | ADD+DEL p99 |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for set in &sets {
        let s = measure(set, cycles)?;
        println!(
            "| {} bridge + host-local | {cycles} | {} | {} | {} | {} | {} | {} |",
            set.name,
            ms(&s.add, 50),
            ms(&s.add, 99),
            ms(&s.del, 50),
            ms(&s.del, 99),
            ms(&s.both, 50),
            ms(&s.both, 99),
        );
    }
    Ok(())
}

fn measure(set: &PluginSet, cycles: usize) -> Result<Stats> {
    let mut lab = Lab::new("bench");
    let pod = lab.pod("p");
    let conf = lab.conf(set, true);
    let mut s = Stats {
        add: Vec::new(),
        del: Vec::new(),
        both: Vec::new(),
    };
    for i in 0..WARM_UP + cycles {
        let id = format!("bench{i}");
        let t0 = Instant::now();
        let add = lab.cni(&set.bridge, "ADD", &conf, &id, Some(&pod), "eth0");
        let t1 = Instant::now();
        let del = lab.cni(&set.bridge, "DEL", &conf, &id, Some(&pod), "eth0");
        let t2 = Instant::now();
        if !add.ok || !del.ok {
            bail!(
                "{}: cycle {i}: ADD {} DEL {}",
                set.name,
                add.stdout,
                del.stdout
            );
        }
        if i >= WARM_UP {
            s.add.push(t1 - t0);
            s.del.push(t2 - t1);
            s.both.push(t2 - t0);
        }
    }
    Ok(s)
}

/// The p-th percentile (nearest rank) in milliseconds.
fn ms(v: &[Duration], p: usize) -> String {
    let mut v = v.to_vec();
    v.sort();
    let rank = (v.len() * p).div_ceil(100).max(1) - 1;
    format!("{:.1} ms", v[rank].as_secs_f64() * 1e3)
}
