//! Canonical JSON: the one byte form of a value that is signed (policy bundles) and hashed
//! (audit chain).
//!
//! Rules: object keys sorted by their UTF-8 bytes, no insignificant whitespace, strings and
//! numbers as `serde_json` writes them. The sort is done here explicitly so that the result does
//! not depend on whether some crate in the build enabled `serde_json/preserve_order`.
//!
//! The bytes are exactly those of `serde_json::to_value` followed by a sorted compact write (the
//! definition the chain and the signatures were first computed with; a test keeps the two equal),
//! but written by a serde `Serializer` straight into the output: each object's members are
//! written as they come and put in order afterwards, only when they were not already. Going
//! through a `serde_json::Value` allocated every key and value and cost a quarter of the
//! instructions the edge spends auditing a request. No crate writes this form: `serde_jcs`
//! (RFC 8785) orders keys by UTF-16 code units and formats numbers the ECMAScript way, which
//! would change the bytes of already signed bundles and already chained events.

use std::borrow::Cow;
use std::ops::Range;

use serde::ser::{self, Impossible, Serialize};
use serde_json::Error;

/// Serialises `value` to canonical JSON bytes.
///
/// # Errors
/// Fails only when the value cannot be represented as JSON (e.g. a map with keys that are not
/// strings, integers, booleans or characters).
pub fn to_canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    // An edge's audit event of an HTTP request is 550-900 bytes: one allocation, no regrowth.
    let mut out = Vec::with_capacity(1024);
    value.serialize(Canonical { out: &mut out })?;
    Ok(out)
}

/// Writes one value in canonical form at the end of `out`.
struct Canonical<'a> {
    out: &'a mut Vec<u8>,
}

impl Canonical<'_> {
    /// A scalar as `serde_json` writes it.
    fn scalar<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        serde_json::to_writer(&mut *self.out, value)
    }
}

/// `{"variant":`, the wrapper `serde_json` writes around an enum variant that carries data;
/// whoever writes the content closes it with `}`.
fn open_variant(out: &mut Vec<u8>, variant: &str) -> Result<(), Error> {
    out.push(b'{');
    serde_json::to_writer(&mut *out, variant)?;
    out.push(b':');
    Ok(())
}

/// `[` ... `]`, with `suffix` after the bracket (the `}` closing a tuple variant's wrapper).
struct Array<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    suffix: &'static [u8],
}

impl<'a> Array<'a> {
    fn open(out: &'a mut Vec<u8>, suffix: &'static [u8]) -> Self {
        out.push(b'[');
        Array {
            out,
            first: true,
            suffix,
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        value.serialize(Canonical {
            out: &mut *self.out,
        })
    }

    fn close(self) {
        self.out.push(b']');
        self.out.extend_from_slice(self.suffix);
    }
}

/// One member written: its name and where `"name":value` lies in the output.
struct Member {
    key: Cow<'static, str>,
    bytes: Range<usize>,
}

/// `{` ... `}` with its members put in key order when they are closed, and `suffix` after
/// (the `}` closing a struct variant's wrapper).
struct Object<'a> {
    out: &'a mut Vec<u8>,
    /// Where the first member starts (just after `{`).
    start: usize,
    members: Vec<Member>,
    /// A map's key, between `serialize_key` and `serialize_value`.
    pending_key: Option<String>,
    suffix: &'static [u8],
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>, suffix: &'static [u8], len: Option<usize>) -> Self {
        out.push(b'{');
        let start = out.len();
        Object {
            out,
            start,
            members: Vec::with_capacity(len.unwrap_or(8)),
            pending_key: None,
            suffix,
        }
    }

    fn member<T: Serialize + ?Sized>(
        &mut self,
        key: Cow<'static, str>,
        value: &T,
    ) -> Result<(), Error> {
        if !self.members.is_empty() {
            self.out.push(b',');
        }
        let begin = self.out.len();
        serde_json::to_writer(&mut *self.out, key.as_ref())?;
        self.out.push(b':');
        value.serialize(Canonical {
            out: &mut *self.out,
        })?;
        self.members.push(Member {
            key,
            bytes: begin..self.out.len(),
        });
        Ok(())
    }

    fn close(mut self) {
        let in_order = self
            .members
            .windows(2)
            .all(|pair| pair[0].key.as_bytes() < pair[1].key.as_bytes());
        if !in_order {
            // Sorted by name; of two members with one name the later wins (as in a map).
            let written = self.out.split_off(self.start);
            self.members
                .sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
            let mut kept: Vec<&Member> = Vec::with_capacity(self.members.len());
            for member in &self.members {
                match kept.last_mut() {
                    Some(last) if last.key == member.key => *last = member,
                    _ => kept.push(member),
                }
            }
            for (i, member) in kept.into_iter().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                let range = member.bytes.start - self.start..member.bytes.end - self.start;
                self.out.extend_from_slice(&written[range]);
            }
        }
        self.out.push(b'}');
        self.out.extend_from_slice(self.suffix);
    }
}

impl<'a> ser::Serializer for Canonical<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Array<'a>;
    type SerializeTuple = Array<'a>;
    type SerializeTupleStruct = Array<'a>;
    type SerializeTupleVariant = Array<'a>;
    type SerializeMap = Object<'a>;
    type SerializeStruct = Object<'a>;
    type SerializeStructVariant = Object<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.scalar(&v)
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.scalar(&v)
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.scalar(&v)
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.scalar(&v)
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.scalar(&v)
    }
    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        self.scalar(&v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.scalar(&v)
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.scalar(&v)
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.scalar(&v)
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.scalar(&v)
    }
    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        self.scalar(&v)
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        // A `Value` keeps an f32 as the f64 it converts to, and writes that.
        self.scalar(&f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.scalar(&v)
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.scalar(&v)
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.scalar(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        self.scalar(v)
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.serialize_none()
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_none()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.scalar(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        open_variant(self.out, variant)?;
        value.serialize(Canonical {
            out: &mut *self.out,
        })?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Array<'a>, Error> {
        Ok(Array::open(self.out, b""))
    }
    fn serialize_tuple(self, len: usize) -> Result<Array<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Array<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Array<'a>, Error> {
        open_variant(self.out, variant)?;
        Ok(Array::open(self.out, b"}"))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Object<'a>, Error> {
        Ok(Object::open(self.out, b"", len))
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Object<'a>, Error> {
        Ok(Object::open(self.out, b"", Some(len)))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Object<'a>, Error> {
        open_variant(self.out, variant)?;
        Ok(Object::open(self.out, b"}", Some(len)))
    }
}

/// serde's four sequence traits differ only in their names: each adds one element to an
/// [`Array`].
macro_rules! array_trait {
    ($trait:ident, $method:ident) => {
        impl ser::$trait for Array<'_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                self.element(value)
            }
            fn end(self) -> Result<(), Error> {
                self.close();
                Ok(())
            }
        }
    };
}
array_trait!(SerializeSeq, serialize_element);
array_trait!(SerializeTuple, serialize_element);
array_trait!(SerializeTupleStruct, serialize_field);
array_trait!(SerializeTupleVariant, serialize_field);

impl ser::SerializeMap for Object<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.pending_key = Some(key.serialize(KeyText)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .pending_key
            .take()
            .ok_or_else(|| <Error as ser::Error>::custom("map value without a key"))?;
        self.member(Cow::Owned(key), value)
    }
    fn end(self) -> Result<(), Error> {
        self.close();
        Ok(())
    }
}

/// A struct and a struct variant's fields: members of an [`Object`] named by the field.
macro_rules! struct_trait {
    ($trait:ident) => {
        impl ser::$trait for Object<'_> {
            type Ok = ();
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), Error> {
                self.member(Cow::Borrowed(key), value)
            }
            fn end(self) -> Result<(), Error> {
                self.close();
                Ok(())
            }
        }
    };
}
struct_trait!(SerializeStruct);
struct_trait!(SerializeStructVariant);

/// A map key as the text of its JSON name, as `serde_json` turns keys into names: strings and
/// characters as they are, integers and booleans written out; anything else is refused.
struct KeyText;

fn key_must_be_text() -> Error {
    <Error as ser::Error>::custom("key must be a string")
}

impl ser::Serializer for KeyText {
    type Ok = String;
    type Error = Error;
    type SerializeSeq = Impossible<String, Error>;
    type SerializeTuple = Impossible<String, Error>;
    type SerializeTupleStruct = Impossible<String, Error>;
    type SerializeTupleVariant = Impossible<String, Error>;
    type SerializeMap = Impossible<String, Error>;
    type SerializeStruct = Impossible<String, Error>;
    type SerializeStructVariant = Impossible<String, Error>;

    fn serialize_bool(self, v: bool) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_i8(self, v: i8) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_i16(self, v: i16) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_i32(self, v: i32) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_i64(self, v: i64) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_i128(self, v: i128) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_u8(self, v: u8) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_u16(self, v: u16) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_u32(self, v: u32) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_u64(self, v: u64) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_u128(self, v: u128) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_f32(self, _v: f32) -> Result<String, Error> {
        Err(key_must_be_text())
    }
    fn serialize_f64(self, _v: f64) -> Result<String, Error> {
        Err(key_must_be_text())
    }
    fn serialize_char(self, v: char) -> Result<String, Error> {
        Ok(v.to_string())
    }
    fn serialize_str(self, v: &str) -> Result<String, Error> {
        Ok(v.to_owned())
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<String, Error> {
        Err(key_must_be_text())
    }
    fn serialize_none(self) -> Result<String, Error> {
        Err(key_must_be_text())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<String, Error> {
        Err(key_must_be_text())
    }
    fn serialize_unit(self) -> Result<String, Error> {
        Err(key_must_be_text())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<String, Error> {
        Err(key_must_be_text())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<String, Error> {
        Ok(variant.to_owned())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<String, Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<String, Error> {
        Err(key_must_be_text())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(key_must_be_text())
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
        Err(key_must_be_text())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(key_must_be_text())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(key_must_be_text())
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(key_must_be_text())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        Err(key_must_be_text())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(key_must_be_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde_json::{json, Value};
    use std::collections::{BTreeMap, HashMap};

    /// The definition: through a `serde_json::Value`, keys sorted at every depth, compact.
    fn by_definition<T: Serialize>(value: &T) -> Vec<u8> {
        fn write(value: &Value, out: &mut Vec<u8>) {
            match value {
                Value::Object(map) => {
                    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                    out.push(b'{');
                    for (i, (key, item)) in entries.into_iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        serde_json::to_writer(&mut *out, key).expect("key");
                        out.push(b':');
                        write(item, out);
                    }
                    out.push(b'}');
                }
                Value::Array(items) => {
                    out.push(b'[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        write(item, out);
                    }
                    out.push(b']');
                }
                scalar => serde_json::to_writer(&mut *out, scalar).expect("scalar"),
            }
        }
        let mut out = Vec::new();
        write(&serde_json::to_value(value).expect("value"), &mut out);
        out
    }

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

    #[derive(Serialize)]
    enum Shape {
        Empty,
        Named(String),
        Pair(u8, i64),
        Box {
            width: f64,
            height: f32,
            label: Option<String>,
        },
    }

    #[derive(Serialize)]
    struct Unsorted {
        zeta: u64,
        alpha: Vec<Shape>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<bool>,
        mid: HashMap<String, Value>,
        #[serde(rename = "Ünïcode ☃")]
        unicode: &'static str,
        #[serde(rename = "ascii_after")]
        ascii: char,
        numbers: BTreeMap<u32, (i8, f64)>,
        bytes: &'static [u8],
        unit: (),
        newtype: Meters,
        #[serde(flatten)]
        flat: BTreeMap<String, i32>,
    }

    #[derive(Serialize)]
    struct Meters(f64);

    #[test]
    fn writes_the_bytes_the_value_definition_gives() {
        let mut mid = HashMap::new();
        for key in ["q", "b", "a\"quote", "é", "\u{1F600}", "\u{FFFD}", "", "Z"] {
            mid.insert(
                key.to_string(),
                json!({"k2": [1.5, -0.0, 1e300, "x\n\u{7}"], "k1": null}),
            );
        }
        let value = Unsorted {
            zeta: u64::MAX,
            alpha: vec![
                Shape::Empty,
                Shape::Named("tab\there".into()),
                Shape::Pair(7, i64::MIN),
                Shape::Box {
                    width: 0.1,
                    height: 0.1,
                    label: None,
                },
            ],
            skipped: None,
            mid,
            unicode: "snow ☃ \u{0}",
            ascii: '"',
            numbers: [(10, (-1, f64::NAN)), (2, (3, 2.5))].into_iter().collect(),
            bytes: b"\x00\xff",
            unit: (),
            newtype: Meters(f64::INFINITY),
            flat: [("beta".to_string(), 1), ("zeta".to_string(), 2)]
                .into_iter()
                .collect(),
        };
        let fast = to_canonical_json(&value).expect("canonical");
        assert_eq!(
            String::from_utf8(fast).expect("utf8"),
            String::from_utf8(by_definition(&value)).expect("utf8")
        );
    }

    #[test]
    fn audit_events_keep_their_bytes() {
        let event: crate::audit::AuditEvent = serde_json::from_value(json!({
            "seq": 3, "prev_hash": "ab", "ts_ms": 1_700_000_000_000_i64, "tenant_id": "t",
            "device_id": "d", "kind": "http_request", "decision": "deny",
            "reason": "scope_missing", "reference": "r-1", "policy_version": 9,
            "identity": "https://idp|alice", "http": null, "detail": "/items/0/qty"
        }))
        .expect("event");
        assert_eq!(
            to_canonical_json(&event).expect("canonical"),
            by_definition(&event)
        );
    }

    #[test]
    fn keys_that_are_not_text_are_refused() {
        let mut map = BTreeMap::new();
        map.insert(vec![1u8], 1);
        assert!(to_canonical_json(&map).is_err());
        let mut ints = BTreeMap::new();
        ints.insert(-3i64, "a");
        ints.insert(10, "b");
        assert_eq!(
            to_canonical_json(&ints).expect("int keys"),
            by_definition(&ints)
        );
    }
}
