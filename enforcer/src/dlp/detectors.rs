//! Built-in detector table: names, patterns, post-match validators.
//!
//! Patterns only use ASCII word boundaries (`(?-u:\b)`): a Unicode `\b` makes the
//! lazy DFA give up on non-ASCII input and fall back to a much slower engine.

use super::luhn;

/// Name of the literal-secret detector (exact values supplied at runtime).
pub const BOUND_SECRET: &str = "bound_secret";

/// Literal secrets shorter than this are ignored (too likely to occur by chance).
pub const MIN_BOUND_SECRET_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validator {
    None,
    /// Luhn + issuer prefix + length.
    Card,
    /// First segment must base64url-decode to a JSON object with an `alg` member.
    Jwt,
    /// Token must look like a credential, not a word (see [`bearer_token_plausible`]).
    Bearer,
}

pub(crate) struct Builtin {
    pub name: &'static str,
    pub pattern: &'static str,
    /// Capture group whose span is redacted (0 = whole match).
    pub group: usize,
    pub validator: Validator,
}

/// Built-in detectors in priority order (earlier wins a tie between equal spans).
pub(crate) const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "private_key",
        // A whole PEM block; or, when the END line is missing (truncated output), the
        // BEGIN line plus everything that looks like PEM body/headers after it.
        pattern: r"-----BEGIN[A-Z0-9 ]{0,32}PRIVATE KEY-----(?:[\s\S]*?-----END[A-Z0-9 ]{0,32}PRIVATE KEY-----|[A-Za-z0-9+/=\s:,.\\-]*)",
        group: 0,
        validator: Validator::None,
    },
    Builtin {
        name: "jwt",
        pattern: r"(?-u:\b)eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",
        group: 0,
        validator: Validator::Jwt,
    },
    Builtin {
        name: "aws_access_key",
        pattern: r"(?-u:\b)(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}(?-u:\b)",
        group: 0,
        validator: Validator::None,
    },
    Builtin {
        name: "aws_secret_key",
        // Only next to a label; the 40-char value (group 1) is redacted.
        pattern: r#"(?i:aws[_.-]?secret(?:[_.-]?access)?(?:[_.-]?key)?|secret[_.-]?access[_.-]?key)(?:\\?["'])?[ \t]*(?:=>|:=|[:=])[ \t]*(?:\\?["'])?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
        group: 1,
        validator: Validator::None,
    },
    Builtin {
        name: "github_token",
        pattern: r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,255})(?-u:\b)",
        group: 0,
        validator: Validator::None,
    },
    Builtin {
        name: "gcp_api_key",
        pattern: r"(?-u:\b)(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)",
        group: 1,
        validator: Validator::None,
    },
    Builtin {
        name: "slack_token",
        pattern: r"(?-u:\b)xox[abprs]-(?:[0-9A-Za-z]+-){1,5}[0-9A-Za-z]{8,}(?-u:\b)",
        group: 0,
        validator: Validator::None,
    },
    Builtin {
        name: "bearer_token",
        // "Bearer <token>": only the token (group 1) is redacted.
        pattern: r"(?-u:\b)(?i:bearer)[ \t]+([A-Za-z0-9._~+/-]{8,}=*)",
        group: 1,
        validator: Validator::Bearer,
    },
    Builtin {
        name: "credit_card",
        pattern: r"(?-u:\b)(?:[0-9][ -]?){12,18}[0-9](?-u:\b)",
        group: 0,
        validator: Validator::Card,
    },
    Builtin {
        name: "email",
        pattern: r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?-u:\b)",
        group: 0,
        validator: Validator::None,
    },
];

/// Names of all built-in detectors plus `bound_secret`.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    std::iter::once(BOUND_SECRET).chain(BUILTINS.iter().map(|b| b.name))
}

pub(crate) fn validate(v: Validator, m: &str) -> bool {
    match v {
        Validator::None => true,
        Validator::Card => luhn::card_valid(m),
        Validator::Jwt => jwt_header_ok(m),
        Validator::Bearer => bearer_token_plausible(m),
    }
}

/// A bearer token must contain a digit, or be at least 20 chars with both cases:
/// "Bearer authentication" is prose, "Bearer 8f3a..." is a credential.
pub(crate) fn bearer_token_plausible(tok: &str) -> bool {
    let b = tok.as_bytes();
    b.iter().any(u8::is_ascii_digit)
        || (b.len() >= 20
            && b.iter().any(u8::is_ascii_uppercase)
            && b.iter().any(u8::is_ascii_lowercase))
}

fn jwt_header_ok(m: &str) -> bool {
    let Some(header) = m.split('.').next() else {
        return false;
    };
    let Some(bytes) = base64url_decode(header) else {
        return false;
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(map)) => map.contains_key("alg"),
        _ => false,
    }
}

/// Unpadded (or padded) base64url decoding; `None` on any invalid character.
pub(crate) fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// JSON object keys that label an AWS secret access key (compared case-insensitively,
/// ignoring `_`, `-`, `.`): the value of such a key is checked as a whole.
pub(crate) fn is_aws_secret_label(key: &str) -> bool {
    if key.len() > 40 {
        return false;
    }
    // Normalized on the stack: this runs for every key of every message.
    let mut norm = [0u8; 40];
    let mut n = 0;
    for b in key.bytes() {
        if matches!(b, b'_' | b'-' | b'.' | b' ') {
            continue;
        }
        if !b.is_ascii() {
            return false;
        }
        norm[n] = b.to_ascii_lowercase();
        n += 1;
    }
    matches!(
        &norm[..n],
        b"awssecret" | b"awssecretkey" | b"awssecretaccesskey" | b"secretaccesskey"
    )
}

/// Value shape of an AWS secret access key: exactly 40 chars of `[A-Za-z0-9/+]`.
pub(crate) fn is_aws_secret_value(v: &str) -> bool {
    v.len() == 40
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'+')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_roundtrip_known() {
        assert_eq!(
            base64url_decode("eyJhbGciOiJIUzI1NiJ9").unwrap(),
            br#"{"alg":"HS256"}"#
        );
        assert_eq!(base64url_decode("aGk").unwrap(), b"hi");
        assert!(base64url_decode("a$b").is_none());
    }

    #[test]
    fn jwt_header_check() {
        assert!(jwt_header_ok("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"));
        // {"typ":"JWT"} has no alg
        assert!(!jwt_header_ok("eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.sig"));
        assert!(!jwt_header_ok("eyJnot-json.eyJ.x"));
    }

    #[test]
    fn bearer_plausibility() {
        assert!(bearer_token_plausible("abc123defg"));
        assert!(bearer_token_plausible("AbcdefghijKlmnopqrstU"));
        assert!(!bearer_token_plausible("authentication"));
        assert!(!bearer_token_plausible("tokensaremadeofwordsok"));
    }

    #[test]
    fn aws_labels() {
        assert!(is_aws_secret_label("aws_secret_access_key"));
        assert!(is_aws_secret_label("AWS_SECRET_ACCESS_KEY"));
        assert!(is_aws_secret_label("SecretAccessKey"));
        assert!(is_aws_secret_label("aws-secret"));
        assert!(!is_aws_secret_label("aws_access_key_id"));
        assert!(!is_aws_secret_label("secret"));
        assert!(is_aws_secret_value(
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        ));
        assert!(!is_aws_secret_value(
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKE"
        ));
        assert!(!is_aws_secret_value(
            "wJalrXUtnFEMI-K7MDENG/bPxRfiCYEXAMPLEKEY"
        ));
    }

    #[test]
    fn all_builtin_patterns_compile_and_are_unique() {
        let mut names: Vec<_> = builtin_names().collect();
        for b in BUILTINS {
            regex::Regex::new(b.pattern).unwrap_or_else(|e| panic!("{}: {e}", b.name));
        }
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
