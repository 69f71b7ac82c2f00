//! `kilnctl validate`: the node's validation, offline.

use std::path::Path;

use anyhow::Result;
use kiln_config::MachineConfig;

use crate::cli::ValidateCommand;
use crate::fsio;
use crate::UsageError;

/// Checks every file; Ok(false) when any is invalid or unreadable.
pub fn run(cmd: &ValidateCommand) -> Result<bool> {
    if cmd.files.is_empty() {
        return Err(UsageError("validate needs at least one FILE".into()).into());
    }
    let mut all_valid = true;
    for file in &cmd.files {
        all_valid &= check(file);
    }
    Ok(all_valid)
}

fn check(file: &Path) -> bool {
    let shown = file.display();
    let text = match fsio::read_text(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{shown}: {e:#}");
            return false;
        }
    };
    match MachineConfig::from_yaml(&text) {
        Ok(_) => {
            println!("{shown}: valid");
            true
        }
        Err(e) => {
            // One error a line (ValidationErrors already is), each with the file.
            for line in e.to_string().lines() {
                eprintln!("{shown}: {line}");
            }
            false
        }
    }
}
