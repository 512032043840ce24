//! docs/envelope.schema.json describes what `run` really emits: real envelopes (direct, group with
//! held history and a quote, a staged attachment) validated against it.

use imsg_bridge::sim::db::{InjectSpec, inject};
use serde_json::Value;

use crate::support::{Bridge, SimMac, imsg_sim_bin};

/// The keywords the schema uses: type (one or several), enum, properties, required,
/// additionalProperties: false, items. Returns the first violation.
fn validate(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    if let Some(kind) = schema.get("type") {
        let kinds: Vec<&str> = match kind {
            Value::String(k) => vec![k.as_str()],
            Value::Array(ks) => ks.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let fits = |k: &str| match k {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        };
        if !kinds.iter().any(|k| fits(k)) {
            return Err(format!("{path}: {value} is not {kinds:?}"));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        return Err(format!("{path}: {value} not in {allowed:?}"));
    }
    if let Value::Object(map) = value {
        let props = schema.get("properties").and_then(Value::as_object);
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = required.as_str().unwrap();
            if !map.contains_key(key) {
                return Err(format!("{path}: missing {key}"));
            }
        }
        for (key, inner) in map {
            match props.and_then(|p| p.get(key)) {
                Some(sub) => validate(sub, inner, &format!("{path}.{key}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{path}: unexpected {key}"));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(sub)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            validate(sub, item, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

#[test]
fn real_envelopes_match_the_published_schema() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/envelope.schema.json")).unwrap(),
    )
    .unwrap();
    let mac = SimMac::new();
    let root = std::fs::canonicalize(mac.dir.path()).unwrap();
    let config = mac.dir.path().join("config.json5");
    std::fs::write(
        &config,
        format!(
            "{{ channels: {{ imessage: {{ cliPath: {cli:?}, dbPath: {db:?}, dmPolicy: \"open\", allowFrom: [\"*\"],
                 groupPolicy: \"open\", includeAttachments: true, attachmentRoots: [{root:?}] }} }},
               messages: {{ groupChat: {{ mentionPatterns: [\"@bot\"] }} }},
               bridge: {{ stateDir: {state:?} }} }}",
            cli = imsg_sim_bin().display().to_string(),
            db = mac.db.display().to_string(),
            root = root.join("Attachments").display().to_string(),
            state = mac.state_dir().display().to_string(),
        ),
    )
    .unwrap();
    let photo = mac.dir.path().join("photo.jpg");
    std::fs::write(&photo, b"\xff\xd8\xff not really a jpeg").unwrap();
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");
    let spec = |from: &str, text: &str| InjectSpec {
        from: from.into(),
        text: text.into(),
        ..Default::default()
    };
    inject(
        &mac.db,
        &InjectSpec {
            attachments: vec![photo.clone()],
            ..spec("+15550001111", "")
        },
    )
    .unwrap();
    let group = |from: &str, text: &str| InjectSpec {
        group: Some("Crew".into()),
        participants: vec!["+15550001111".into(), "jane@example.com".into()],
        ..spec(from, text)
    };
    inject(
        &mac.db,
        &group("jane@example.com", "held until someone mentions the bot"),
    )
    .unwrap();
    inject(&mac.db, &group("+15550001111", "@bot over to you")).unwrap();
    bridge.wait_for_lines(2);
    let (_, lines) = bridge.stop(15);
    let envelopes: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(envelopes[0]["media"][0]["status"], "ok", "{}", envelopes[0]);
    assert_eq!(
        envelopes[1]["history"].as_array().map(Vec::len),
        Some(1),
        "{}",
        envelopes[1]
    );
    for envelope in &envelopes {
        validate(&schema, envelope, "$").unwrap_or_else(|e| panic!("{e}\n{envelope}"));
    }
    // The check can fail: a field the schema does not know is refused.
    let mut bad = envelopes[0].clone();
    bad["surprise"] = Value::Bool(true);
    assert!(validate(&schema, &bad, "$").is_err());
    bad = envelopes[0].clone();
    bad["media"][0]["status"] = Value::String("fine".into());
    assert!(validate(&schema, &bad, "$").is_err());
}
