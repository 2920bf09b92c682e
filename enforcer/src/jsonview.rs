//! A JSON document read as a view of its text: a tree whose strings are borrowed from the text
//! (unless they carry escapes) and whose objects are plain member lists. One parse, a vector
//! per object or array, nothing hashed: what the proxy needs to judge a server's answer (its
//! id, result or error, every string for the detectors) and to record it canonical, at a
//! fraction of what a `serde_json::Value` costs (a hashed map plus a `String` per key and
//! value, as `preserve_order` is on in this build).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, PartialEq)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    /// Members in the order sent (a key sent twice appears twice).
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

/// Parses one JSON document (trailing whitespace only).
pub fn parse(text: &str) -> Result<Node<'_>, serde_json::Error> {
    serde_json::from_str(text)
}

impl<'a> Node<'a> {
    /// The value of member `key` of an object (the last one, if sent twice, as `Value` keeps).
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        match self {
            Node::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Whether an object has a key more than once.
    pub fn has_duplicate_keys(&self) -> bool {
        match self {
            Node::Object(m) => m
                .iter()
                .enumerate()
                .any(|(i, (k, _))| m[..i].iter().any(|(k2, _)| k2 == k)),
            _ => false,
        }
    }

    /// The same JSON as `serde_json::Value` holds it.
    pub fn to_value(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(n) => Value::Number(n.clone()),
            Node::String(s) => Value::String(s.to_string()),
            Node::Array(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Node::Object(members) => {
                let mut m = serde_json::Map::new();
                for (k, v) in members {
                    m.insert(k.to_string(), v.to_value());
                }
                Value::Object(m)
            }
        }
    }

    /// Writes canonical JSON (members sorted by key bytewise, no whitespace): the same bytes
    /// as `audit::canonical::canonical_json` of the same document parsed into a `Value`
    /// (of members sent twice, the last one stays).
    pub fn write_canonical(mut self, out: &mut Vec<u8>) {
        self.sort();
        self.write_sorted(out);
    }

    fn sort(&mut self) {
        match self {
            Node::Array(items) => items.iter_mut().for_each(Node::sort),
            Node::Object(members) => {
                // Stable: members with the same key keep their order, and the last one wins.
                members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                let mut i = 0;
                while i + 1 < members.len() {
                    if members[i].0 == members[i + 1].0 {
                        members.remove(i);
                    } else {
                        i += 1;
                    }
                }
                members.iter_mut().for_each(|(_, v)| v.sort());
            }
            _ => {}
        }
    }

    fn write_sorted(&self, out: &mut Vec<u8>) {
        // Serializing strings and numbers into a Vec cannot fail.
        match self {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Bool(true) => out.extend_from_slice(b"true"),
            Node::Bool(false) => out.extend_from_slice(b"false"),
            Node::Number(n) => serde_json::to_writer(&mut *out, n).expect("number to json"),
            Node::String(s) => serde_json::to_writer(&mut *out, s).expect("string to json"),
            Node::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_sorted(out);
                }
                out.push(b']');
            }
            Node::Object(members) => {
                out.push(b'{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, k).expect("string to json");
                    out.push(b':');
                    v.write_sorted(out);
                }
                out.push(b'}');
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// A key: borrowed from the text unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(NodeVisitor).and_then(|n| match n {
            Node::String(s) => Ok(Key(s)),
            _ => Err(serde::de::Error::custom("object key is not a string")),
        })
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(b))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(n.into()))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(n.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Node<'de>, E> {
        serde_json::Number::from_f64(n)
            .map(Node::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4));
        while let Some(Key(k)) = map.next_key()? {
            members.push((k, map.next_value()?));
        }
        Ok(Node::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn a_view_reads_as_the_value_would() {
        let text = r#"{"id": 3, "result": {"a\u00e9": ["x", 1.5, null, true]}, "id": 4}"#;
        let n = parse(text).unwrap();
        assert!(n.has_duplicate_keys());
        assert_eq!(n.get("id"), Some(&Node::Number(4.into())));
        assert_eq!(n.get("nope"), None);
        assert_eq!(n.to_value(), serde_json::from_str::<Value>(text).unwrap());
        assert!(matches!(
            n.get("result").unwrap().get("aé"),
            Some(Node::Array(_))
        ));
        assert!(!parse(r#"{"a": {"a": 1}}"#).unwrap().has_duplicate_keys());
        assert_eq!(parse("[1]").unwrap().to_value(), json!([1]));
        assert!(parse("{} x").is_err() && parse("{").is_err());
    }

    fn canonical_of(text: &str) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::new();
        parse(text)?.write_canonical(&mut out);
        Ok(out)
    }

    #[test]
    fn a_text_is_made_canonical_as_its_value_would_be() {
        let texts = [
            r#"{"b": 1, "a": {"z": [true, null, {"y": "x", "c": 2.5}], "b": "q\""}}"#,
            r#" [1, -2, 3.25, 1e300, 18446744073709551615, -9223372036854775808, 1E5, 0.1] "#,
            r#"{"k\u00e9y": "\u0041\n\/\t\u001f", "é": "ü", "": {}, "arr": [[], [{}]]}"#,
            r#"{"dup": 1, "a": 0, "dup": {"z": 1, "a": 2}}"#,
            r#""just a string""#,
            r#"12345678901234567890123"#,
            r#"{"content":[{"type":"text","text":"hello"}],"isError":false}"#,
        ];
        for t in texts {
            let v: Value = serde_json::from_str(t).unwrap();
            assert_eq!(
                String::from_utf8(canonical_of(t).unwrap()).unwrap(),
                String::from_utf8(crate::audit::canonical::canonical_json(&v)).unwrap(),
                "{t}"
            );
            let c = crate::audit::canonical::CanonicalJson::from_canonical_bytes(
                canonical_of(t).unwrap(),
            )
            .unwrap();
            assert_eq!(c, crate::audit::canonical::CanonicalJson::from_value(&v));
            assert_eq!(c.to_value(), v);
        }
        assert!(canonical_of("{\"a\": }").is_err());
        assert!(canonical_of("{} trailing").is_err());
    }
}
