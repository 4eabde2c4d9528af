//! Canonical JSON: the one byte form of a value that is signed (policy bundles) and hashed
//! (audit chain).
//!
//! Rules: object keys sorted by their UTF-8 bytes, no insignificant whitespace, strings and
//! numbers as `serde_json` writes them. The sort is done here explicitly so that the result does
//! not depend on whether some crate in the build enabled `serde_json/preserve_order`.

use serde::Serialize;
use serde_json::Value;

/// Serialises `value` to canonical JSON bytes.
///
/// # Errors
/// Fails only when the value cannot be represented as JSON (e.g. a map with non-string keys).
pub fn to_canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let value = serde_json::to_value(value)?;
    let mut out = Vec::with_capacity(256);
    write_value(&value, &mut out)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key)?;
                out.push(b':');
                write_value(item, out)?;
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_at_every_depth_and_whitespace_is_dropped() {
        let value = json!({"b": 1, "a": {"z": [3, {"y": true, "x": null}], "c": "s"}});
        let bytes = to_canonical_json(&value).expect("json");
        assert_eq!(
            String::from_utf8(bytes).expect("utf8"),
            r#"{"a":{"c":"s","z":[3,{"x":null,"y":true}]},"b":1}"#
        );
    }

    #[test]
    fn same_value_built_in_different_orders_gives_same_bytes() {
        let one = json!({"first": 1, "second": 2});
        let mut two = serde_json::Map::new();
        two.insert("second".into(), json!(2));
        two.insert("first".into(), json!(1));
        assert_eq!(
            to_canonical_json(&one).expect("json"),
            to_canonical_json(&Value::Object(two)).expect("json")
        );
    }
}
