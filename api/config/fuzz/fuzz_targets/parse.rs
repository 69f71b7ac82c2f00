//! Arbitrary bytes into the parser and validator: any answer is fine, a
//! panic (or a hang, or unbounded memory) is a bug. A document that parses
//! must also survive serialise → parse and diff against itself.
#![no_main]

use kiln_config::MachineConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = MachineConfig::from_yaml(text) {
        let yaml = config.to_yaml().expect("a valid config serialises");
        let again = MachineConfig::from_yaml(&yaml).expect("a serialised valid config parses");
        assert_eq!(config, again);
        let _ = config.redacted();
        let diff = kiln_config::diff(&config, &again).expect("diff");
        assert!(diff.changes.is_empty());
    }
});
