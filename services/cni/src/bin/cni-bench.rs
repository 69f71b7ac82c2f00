//! ADD+DEL latency of Kiln's bridge + host-local against Debian's reference
//! bridge + host-local, and of Kiln's port mappings (nftables over netlink)
//! against the reference portmap (iptables), chained after them, in the
//! same namespace set-up the integration tests use. Prints markdown tables.
//! Needs root.
//!
//! `cargo run --release -p kiln-cni --bin cni-bench [cycles]`
//!
//! The bench binary is also Kiln's plugin: the plugin symlinks point at it
//! and it dispatches on argv[0], so what is measured is the release build of
//! the plugin code without a separate build step.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

// The integration tests' lab; the tests use the parts the bench does not.
#[allow(dead_code)]
#[path = "../../tests/harness/mod.rs"]
mod harness;

use harness::{Lab, PluginSet};

const DEFAULT_CYCLES: usize = 200;
const WARM_UP: usize = 5;

#[derive(Default)]
struct Stats {
    add: Vec<Duration>,
    del: Vec<Duration>,
    both: Vec<Duration>,
}

impl Stats {
    fn row(&self, what: &str, cycles: usize) -> String {
        format!(
            "| {what} | {cycles} | {} | {} | {} | {} | {} | {} |",
            ms(&self.add, 50),
            ms(&self.add, 99),
            ms(&self.del, 50),
            ms(&self.del, 99),
            ms(&self.both, 50),
            ms(&self.both, 99),
        )
    }
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
    let header = "| plugins | cycles | ADD p50 | ADD p99 | DEL p50 | DEL p99 | ADD+DEL p50 | ADD+DEL p99 |\n| --- | --- | --- | --- | --- | --- | --- | --- |";
    let mut portmap = Vec::new();
    println!("{header}");
    for set in &sets {
        let (bridge, pm) = measure(set, cycles)?;
        println!(
            "{}",
            bridge.row(&format!("{} bridge + host-local", set.name), cycles)
        );
        portmap.push((set.name, pm));
    }
    println!("\n{header}");
    for (name, pm) in portmap {
        println!(
            "{}",
            pm.row(&format!("{name} portmap (one mapping)"), cycles)
        );
    }
    Ok(())
}

/// Bridge ADD, port mapping ADD, port mapping DEL, bridge DEL per cycle;
/// the bridge's and the port mapping's times apart.
fn measure(set: &PluginSet, cycles: usize) -> Result<(Stats, Stats)> {
    let mut lab = Lab::new("bench");
    let pod = lab.pod("p");
    let conf = lab.conf(set, true);
    let (mut bridge, mut portmap) = (Stats::default(), Stats::default());
    for i in 0..WARM_UP + cycles {
        let id = format!("bench{i}");
        let t0 = Instant::now();
        let add = lab.cni(&set.bridge, "ADD", &conf, &id, Some(&pod), "eth0");
        let t1 = Instant::now();
        let pm = json!({
            "cniVersion": "1.0.0",
            "name": "kilntest",
            "type": set.portmap.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
            "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}
            ]},
            "prevResult": add.json,
        });
        let pm_add = lab.cni(&set.portmap, "ADD", &pm, &id, Some(&pod), "eth0");
        let t2 = Instant::now();
        let pm_del = lab.cni(&set.portmap, "DEL", &pm, &id, Some(&pod), "eth0");
        let t3 = Instant::now();
        let del = lab.cni(&set.bridge, "DEL", &conf, &id, Some(&pod), "eth0");
        let t4 = Instant::now();
        if !add.ok || !pm_add.ok || !pm_del.ok || !del.ok {
            bail!(
                "{}: cycle {i}: ADD {} portmap ADD {} portmap DEL {} DEL {}",
                set.name,
                add.stdout,
                pm_add.stdout,
                pm_del.stdout,
                del.stdout
            );
        }
        if i >= WARM_UP {
            bridge.add.push(t1 - t0);
            bridge.del.push(t4 - t3);
            bridge.both.push((t1 - t0) + (t4 - t3));
            portmap.add.push(t2 - t1);
            portmap.del.push(t3 - t2);
            portmap.both.push(t3 - t1);
        }
    }
    Ok((bridge, portmap))
}

/// The p-th percentile (nearest rank) in milliseconds.
fn ms(v: &[Duration], p: usize) -> String {
    let mut v = v.to_vec();
    v.sort();
    let rank = (v.len() * p).div_ceil(100).max(1) - 1;
    format!("{:.1} ms", v[rank].as_secs_f64() * 1e3)
}
