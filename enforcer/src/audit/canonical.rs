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

/// A JSON text that is canonical: written into a receipt as it is (no tree to walk, no keys to
/// sort when the receipt is written), and compared as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalJson(Box<str>);

impl CanonicalJson {
    pub fn from_value(v: &Value) -> Self {
        Self::from_canonical_bytes(canonical_json(v)).expect("canonical JSON is UTF-8")
    }

    /// From bytes that already are canonical JSON: this module's output, or a document
    /// assembled from it (`jsonview` writes the same form). Not parsed again: the receipt
    /// writer trusts it, so only canonical output may come here (checked in debug builds).
    pub fn from_canonical_bytes(bytes: Vec<u8>) -> Result<Self, std::string::FromUtf8Error> {
        let text = String::from_utf8(bytes)?;
        debug_assert!(
            serde_json::from_str::<Value>(&text)
                .is_ok_and(|v| canonical_json(&v) == text.as_bytes()),
            "not canonical JSON: {text}"
        );
        Ok(Self(text.into_boxed_str()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    #[cfg(test)]
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).expect("canonical JSON is valid")
    }
}

impl serde::Serialize for CanonicalJson {
    /// As the JSON it holds (not as a string). The receipt writer copies the text itself;
    /// this path (exports, the control API) checks it once more on the way out.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_json::value::RawValue::from_string(self.0.to_string())
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for CanonicalJson {
    /// Kept as read: receipts come back from the log, where they were written canonical (and
    /// `verify` canonicalizes what it reads before hashing, whatever the text).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        Ok(Self(raw.get().into()))
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
