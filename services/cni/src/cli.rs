//! The plugin binary's entry point: pick the plugin, read stdin, print the
//! result or the spec's error JSON.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use crate::env::Args;
use crate::error::Error;
use crate::{requested_version, run, Plugin};

/// The plugin named by argv[0]'s file name, else by the first argument.
pub fn plugin_from_argv(argv: &[String]) -> Option<Plugin> {
    let own_name = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    Plugin::from_name(own_name).or_else(|| argv.get(1).and_then(|a| Plugin::from_name(a)))
}

pub fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let plugin = plugin_from_argv(&argv);

    let mut stdin = Vec::new();
    let outcome = match plugin {
        None => Err(Error::InvalidEnv {
            name: "argv[0]",
            why: format!(
                "run as {}, {}, {} or {} (a symlink, or the first argument)",
                crate::BRIDGE,
                crate::HOST_LOCAL,
                crate::LOOPBACK,
                crate::PORTMAP
            ),
        }),
        Some(plugin) => match std::io::stdin().read_to_end(&mut stdin) {
            Err(e) => Err(Error::io("read stdin", e)),
            Ok(_) => Args::from_env().and_then(|args| run(plugin, &args, &stdin)),
        },
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(json)) => {
            let _ = writeln!(out, "{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let spec = e.to_spec(&requested_version(&stdin));
            let _ = writeln!(out, "{}", serde_json::to_string(&spec).unwrap_or_default());
            ExitCode::FAILURE
        }
    }
}
