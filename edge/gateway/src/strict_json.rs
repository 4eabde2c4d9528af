//! JSON parsing that refuses duplicate object members.
//!
//! `serde_json` keeps the last of two members with the same name, while other parsers keep the
//! first: a token whose header or claims say `"sub": "alice", "sub": "admin"` could mean one
//! thing to the gateway and another to the upstream or the issuer's own checks. RFC 7515 §5.2
//! lets a verifier reject such input; the gateway always does, at every nesting level.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Most nesting levels accepted (serde_json's own limit is 128; tokens need far fewer).
const MAX_DEPTH: usize = 32;

/// Parses `bytes` as a JSON value, refusing duplicate member names (`None`).
pub(crate) fn parse(bytes: &[u8]) -> Option<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue { depth: 0 }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}

/// Parses `bytes` as a JSON object, refusing duplicate member names.
pub(crate) fn parse_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match parse(bytes)? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

#[derive(Clone, Copy)]
struct StrictValue {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value without duplicate object members")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested::<A::Error>()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested::<A::Error>()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // One lookup per member: the vacant slot is filled once its value is parsed.
            match out.entry(key) {
                serde_json::map::Entry::Occupied(_) => {
                    return Err(de::Error::custom("duplicate object member"));
                }
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(map.next_value_seed(inner)?);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

impl StrictValue {
    fn nested<E: de::Error>(self) -> Result<StrictValue, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom("JSON nested too deeply"));
        }
        Ok(StrictValue {
            depth: self.depth + 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicate_members_are_refused_at_any_depth() {
        assert_eq!(
            parse_object(br#"{"sub":"alice","n":{"a":[1,2.5,null,true]}}"#).map(Value::Object),
            Some(json!({"sub": "alice", "n": {"a": [1, 2.5, null, true]}}))
        );
        assert!(parse(br#"{"sub":"alice","sub":"admin"}"#).is_none());
        assert!(parse(br#"{"a":{"x":1,"x":1}}"#).is_none());
        assert!(parse(br#"[{"x":1,"x":2}]"#).is_none());
        // Escapes that spell the same name are duplicates too.
        assert!(parse(br#"{"sub":"a","\u0073ub":"b"}"#).is_none());
    }

    #[test]
    fn trailing_data_deep_nesting_and_non_objects_are_refused() {
        assert!(parse(br#"{"a":1} x"#).is_none());
        assert!(parse_object(b"[1]").is_none());
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert!(parse(deep.as_bytes()).is_none());
        let ok = format!("{}{}", "[".repeat(10), "]".repeat(10));
        assert!(parse(ok.as_bytes()).is_some());
    }
}
