//! `Text`: shared, immutable text for records that repeat the same words many times
//! (receipts: actor, session, connector, policy version on every call of a flow).

use serde::{Deserialize, Serialize};

/// Shared text: clones are counted references to one copy (the parts every receipt of a flow
/// repeats cost no copy per receipt).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(std::sync::Arc<str>);

impl Text {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// One of the words receipts repeat ("ok", "session", "POST"...): shared copies of one
    /// text per word, made on a thread's first use, instead of a new one per receipt. Looked
    /// up by the literal's address: no lock, no hashing.
    pub fn word(w: &'static str) -> Text {
        thread_local! {
            static WORDS: std::cell::RefCell<Vec<(&'static str, Text)>> =
                const { std::cell::RefCell::new(Vec::new()) };
        }
        WORDS.with_borrow_mut(|words| {
            if let Some((_, t)) = words.iter().find(|(k, _)| std::ptr::eq(*k, w)) {
                return t.clone();
            }
            let t = Text::from(w);
            words.push((w, t.clone()));
            t
        })
    }
}

impl Default for Text {
    /// The empty text, shared (a default receipt allocates none).
    fn default() -> Self {
        static EMPTY: std::sync::LazyLock<Text> = std::sync::LazyLock::new(|| Text("".into()));
        EMPTY.clone()
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(s.into())
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(s.into())
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Self {
        Text(s.as_str().into())
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        t.0.to_string()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Text::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_clones_share_one_copy_and_read_as_strings() {
        let w: &'static str = "ok";
        let (a, b) = (Text::word(w), Text::word(w));
        assert!(std::sync::Arc::ptr_eq(&a.0, &b.0));
        assert!(std::sync::Arc::ptr_eq(
            &Text::default().0,
            &Text::default().0
        ));
        let t = Text::from("agent-7");
        assert!(std::sync::Arc::ptr_eq(&t.0, &t.clone().0));
        assert_eq!(t, "agent-7");
        assert_eq!(t.as_str(), "agent-7");
        assert_eq!(format!("{t} {t:?}"), "agent-7 \"agent-7\"");
        let json = serde_json::to_string(&vec![t.clone()]).unwrap();
        assert_eq!(json, r#"["agent-7"]"#);
        assert_eq!(serde_json::from_str::<Vec<Text>>(&json).unwrap(), vec![t]);
    }
}
