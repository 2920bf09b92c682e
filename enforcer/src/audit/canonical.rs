//! Canonical JSON (object keys sorted, no whitespace) and the chain hash over it. Sorting is done
//! here rather than relying on `serde_json::Map` being a BTreeMap, which the `preserve_order`
//! feature (enabled by any crate in the build) would silently change.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// All-zero hash: the `prev_hash` of the first record of a chain.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// Canonical JSON bytes of `v`: keys sorted bytewise, no insignificant whitespace.
pub fn canonical_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_canonical(v, &mut out);
    out
}

/// Canonical JSON of a top-level object, recording where the values of the top-level keys
/// `slots` start and end in the output (`None` for a key that is absent). Used to splice a
/// record's `id` and `seq` in later without serializing it again.
pub fn canonical_json_with_slots<const N: usize>(
    v: &Value,
    slots: [&str; N],
) -> (Vec<u8>, [Option<(usize, usize)>; N]) {
    let mut out = Vec::with_capacity(2048);
    let mut found = [None; N];
    let Value::Object(map) = v else {
        write_canonical(v, &mut out);
        return (out, found);
    };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.push(b'{');
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, k).expect("string to json");
        out.push(b':');
        let start = out.len();
        write_canonical(&map[k.as_str()], &mut out);
        if let Some(j) = slots.iter().position(|s| *s == k.as_str()) {
            found[j] = Some((start, out.len()));
        }
    }
    out.push(b'}');
    (out, found)
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Serializing a &str into a Vec cannot fail.
                serde_json::to_writer(&mut *out, k).expect("string to json");
                out.push(b':');
                write_canonical(&map[k.as_str()], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("scalar to json"),
    }
}

/// Canonical JSON bytes of a JSON text, read without building a `serde_json::Value`:
/// strings are borrowed from the text where they carry no escapes, and each object is one
/// vector of members (a `Value` would be a hashed map plus a `String` per key and value).
/// Same bytes as [`canonical_json`] of the text parsed into a `Value`, duplicate members
/// included (the last one wins, as there).
pub fn canonical_json_of_text(text: &str) -> Result<Vec<u8>, serde_json::Error> {
    let node: text_tree::Node = serde_json::from_str(text)?;
    let mut out = Vec::with_capacity(text.len() + 16);
    node.write(&mut out);
    Ok(out)
}

/// A JSON text that is canonical: written into a receipt as it is (no tree to walk, no keys to
/// sort when the receipt is serialized), and compared as text.
#[derive(Clone, Debug)]
pub struct CanonicalJson(Box<serde_json::value::RawValue>);

impl CanonicalJson {
    pub fn from_value(v: &Value) -> Self {
        Self::from_canonical(canonical_json(v))
    }

    /// From bytes this module produced (canonical, valid JSON).
    fn from_canonical(bytes: Vec<u8>) -> Self {
        Self::from_canonical_bytes(bytes).expect("canonical JSON is valid")
    }

    /// From bytes that already are canonical JSON (assembled from this module's output);
    /// checked to be JSON, not re-sorted.
    pub fn from_canonical_bytes(bytes: Vec<u8>) -> Result<Self, serde_json::Error> {
        let text = String::from_utf8(bytes).map_err(serde::de::Error::custom)?;
        serde_json::value::RawValue::from_string(text).map(Self)
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    #[cfg(test)]
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.0.get()).expect("canonical JSON is valid")
    }
}

impl PartialEq for CanonicalJson {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl serde::Serialize for CanonicalJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for CanonicalJson {
    /// Kept as read: receipts come back from the log, where they were written canonical (and
    /// `verify` canonicalizes what it reads before hashing, whatever the text).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<serde_json::value::RawValue>::deserialize(d).map(Self)
    }
}

/// A JSON document as a tree of borrowed parts, only to be written back canonical.
mod text_tree {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

    pub enum Node<'a> {
        Null,
        Bool(bool),
        Number(serde_json::Number),
        String(Cow<'a, str>),
        Array(Vec<Node<'a>>),
        Object(Vec<(Cow<'a, str>, Node<'a>)>),
    }

    impl Node<'_> {
        pub fn write(mut self, out: &mut Vec<u8>) {
            self.sort();
            self.write_sorted(out);
        }

        /// Members sorted by key (bytewise); of members sent twice, the last one stays.
        fn sort(&mut self) {
            match self {
                Node::Array(items) => items.iter_mut().for_each(Node::sort),
                Node::Object(members) => {
                    // Stable: members with the same key keep their order, the last one wins.
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
}

/// hash = sha256(prev_hash (32 raw bytes) || canonical JSON of the record).
pub fn chain_hash(prev: &[u8; 32], record: &Value) -> [u8; 32] {
    chain_hash_bytes(prev, &canonical_json(record))
}

/// [`chain_hash`] over record bytes that already are canonical JSON.
pub fn chain_hash_bytes(prev: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical);
    h.finalize().into()
}

/// Parses a 64-hex-digit hash.
pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(s).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_recursively() {
        let v = json!({"b": 1, "a": {"z": [true, null, {"y": "x", "c": 2.5}], "b": "q\""}});
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"a":{"b":"q\"","z":[true,null,{"c":2.5,"y":"x"}]},"b":1}"#
        );
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
                String::from_utf8(canonical_json_of_text(t).unwrap()).unwrap(),
                String::from_utf8(canonical_json(&v)).unwrap(),
                "{t}"
            );
            let c =
                CanonicalJson::from_canonical_bytes(canonical_json_of_text(t).unwrap()).unwrap();
            assert_eq!(c, CanonicalJson::from_value(&v));
            assert_eq!(c.to_value(), v);
        }
        assert!(canonical_json_of_text("{\"a\": }").is_err());
        assert!(canonical_json_of_text("{} trailing").is_err());
    }

    #[test]
    fn canonical_json_is_written_and_read_as_it_is() {
        let c = CanonicalJson::from_value(&json!({"b": [1, {"d": 1, "c": 2}], "a": "x"}));
        let text = serde_json::to_string(&json!({"outer": 1})).unwrap();
        assert_eq!(text, r#"{"outer":1}"#);
        let embedded = serde_json::to_string(&vec![&c]).unwrap();
        assert_eq!(embedded, r#"[{"a":"x","b":[1,{"c":2,"d":1}]}]"#);
        let back: Vec<CanonicalJson> = serde_json::from_str(&embedded).unwrap();
        assert_eq!(back[0], c);
        // Into a Value (exports, the control API) it is the JSON it holds.
        assert_eq!(serde_json::to_value(&c).unwrap(), c.to_value());
    }

    #[test]
    fn hash_depends_on_prev_and_content() {
        let a = chain_hash(&GENESIS, &json!({"seq": 1}));
        let b = chain_hash(&GENESIS, &json!({"seq": 2}));
        let c = chain_hash(&a, &json!({"seq": 1}));
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, chain_hash(&GENESIS, &json!({"seq": 1})));
        assert_eq!(parse_hash(&hex::encode(a)), Some(a));
        assert_eq!(parse_hash("abc"), None);
    }
}
