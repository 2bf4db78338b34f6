//! The committed JSON Schema of `switchyard.yaml` must match the types. Regenerate with
//! `UPDATE_SCHEMAS=1 cargo test -p switchyard-schemas --test json_schema`.

use std::path::Path;

#[test]
fn committed_config_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("json/config.schema.json");
    let generated = switchyard_schemas::config::json_schema();
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, &generated).expect("write schema");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: run `UPDATE_SCHEMAS=1 cargo test -p switchyard-schemas --test json_schema` and commit it",
        path.display()
    );
}

#[test]
fn every_config_field_is_documented() {
    // Each property in the schema carries a description taken from its `///` comment.
    let schema: serde_json::Value = serde_json::from_str(&switchyard_schemas::config::json_schema()).unwrap();
    let mut missing = Vec::new();
    let mut visit = |name: &str, def: &serde_json::Value| {
        if let Some(props) = def.get("properties").and_then(|p| p.as_object()) {
            for (prop, body) in props {
                if body.get("description").is_none() {
                    missing.push(format!("{name}.{prop}"));
                }
            }
        }
    };
    visit("Config", &schema);
    if let Some(defs) = schema.get("$defs").and_then(|d| d.as_object()) {
        for (name, def) in defs {
            visit(name, def);
        }
    }
    assert!(missing.is_empty(), "undocumented config fields: {missing:?}");
}
