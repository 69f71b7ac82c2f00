//! Every `bad/NAME.yaml` must be refused with exactly the text in
//! `bad/NAME.err`. `KILN_BLESS=1` rewrites the `.err` files from the current
//! output (review the diff before committing it).

use std::fs;
use std::path::Path;

use kiln_config::MachineConfig;

#[test]
fn bad_documents_fail_with_the_expected_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let bless = std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1");
    let mut names: Vec<_> = fs::read_dir(&dir)
        .expect("tests/bad exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 20,
        "the corpus is missing: {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for yaml in &names {
        let text = fs::read_to_string(yaml).expect("readable document");
        let got = match MachineConfig::from_yaml(&text) {
            Ok(_) => "(accepted)".to_string(),
            Err(e) => e.to_string(),
        };
        // Secrets in the corpus are spelled SUPERSECRET or user:secret@.
        if got.contains("SUPERSECRET") || got.contains(":secret@") {
            failures.push(format!("{}: a secret is echoed:\n{got}", yaml.display()));
        }
        let err_file = yaml.with_extension("err");
        if bless {
            fs::write(&err_file, format!("{got}\n")).expect("writable .err");
            continue;
        }
        let want = fs::read_to_string(&err_file).unwrap_or_else(|_| "(no .err file)".into());
        if got != want.trim_end_matches('\n') {
            failures.push(format!(
                "{}:\n--- want\n{want}\n--- got\n{got}\n",
                yaml.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(KILN_BLESS=1 rewrites the .err files)",
        failures.join("\n")
    );
}
