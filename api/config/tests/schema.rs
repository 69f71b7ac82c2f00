//! The checked-in JSON Schema must be what the types generate.

use std::fs;
use std::path::Path;

#[test]
fn checked_in_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/machine-config.schema.json");
    let generated = kiln_config::json_schema().expect("schema serialises");
    if std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1") {
        fs::write(&path, &generated).expect("docs/ is writable");
        return;
    }
    let checked_in = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} is stale: regenerate it with\n  KILN_BLESS=1 cargo test -p kiln-config --test schema",
        path.display()
    );
}

#[test]
fn schema_describes_the_document() {
    let schema: serde_json::Value =
        serde_json::from_str(&kiln_config::json_schema().expect("schema")).expect("JSON");
    let required = schema["required"].as_array().expect("required list");
    for field in ["apiVersion", "kind", "cluster", "machine"] {
        assert!(required.iter().any(|v| v == field), "{field} not required");
    }
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown fields are refused"
    );
    assert!(schema["properties"]["network"].is_object());
}
