//! Behavioural tests of the public API.

use serde_json::{json, Value};

use super::*;

fn dlp() -> Dlp {
    Dlp::new(&DlpConfig::default()).unwrap()
}

fn cfg(v: Value) -> DlpConfig {
    serde_json::from_value(v).unwrap()
}

/// Redact `s` as text, return the output and (name, count) pairs.
fn red(d: &Dlp, s: &str) -> (String, Vec<(String, u32)>) {
    let (out, f) = d.redact_text(s);
    (
        out.into_owned(),
        f.iter().map(|(k, v)| (k.to_string(), v)).collect(),
    )
}

fn one(name: &str, n: u32) -> Vec<(String, u32)> {
    vec![(name.to_string(), n)]
}

/// Each sample is a whole-token match: redacted to exactly the marker, count 1.
fn assert_whole(d: &Dlp, name: &str, samples: &[&str]) {
    let marker = format!("[REDACTED:{name}]");
    for s in samples {
        let (out, f) = red(d, s);
        assert_eq!(out, marker, "sample {s:?}");
        assert_eq!(f, one(name, 1), "sample {s:?}");
        let text = format!("value: {s}; end");
        let (out, f) = red(d, &text);
        assert_eq!(out, format!("value: {marker}; end"), "sample {s:?}");
        assert_eq!(f, one(name, 1));
    }
}

fn assert_clean(d: &Dlp, samples: &[&str]) {
    for s in samples {
        let (out, f) = red(d, s);
        assert_eq!(out, *s, "should be untouched: {s:?}");
        assert!(f.is_empty(), "unexpected findings {f:?} for {s:?}");
    }
}

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

const RSA_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n-----END RSA PRIVATE KEY-----";

#[test]
fn detector_names_stable() {
    assert_eq!(
        dlp().detector_names(),
        vec![
            "bound_secret",
            "private_key",
            "jwt",
            "aws_access_key",
            "aws_secret_key",
            "github_token",
            "gcp_api_key",
            "slack_token",
            "bearer_token",
            "credit_card",
            "email"
        ]
    );
}

#[test]
fn aws_access_key() {
    let d = dlp();
    assert_whole(
        &d,
        "aws_access_key",
        &[
            "AKIAIOSFODNN7EXAMPLE",
            "ASIAY34FZKBOKMUTVV7A",
            "AGPAJ2UCCR6DPCEXAMPL",
            "AROA3XFRBF535PLBIFPI",
        ],
    );
    assert_clean(
        &d,
        &[
            "AKIAIOSFODNN7EXAMP",     // too short
            "AKIAIOSFODNN7EXAMPLEXY", // too long
            "akiaiosfodnn7example",   // lower case
            "XAKIAIOSFODNN7EXAMPLE",  // embedded in a word
            "AXYZIOSFODNN7EXAMPLE",   // unknown prefix
        ],
    );
}

#[test]
fn aws_secret_key_needs_label() {
    let d = dlp();
    for (input, expected) in [
        (
            format!("AWS_SECRET_ACCESS_KEY={AWS_SECRET}"),
            "AWS_SECRET_ACCESS_KEY=[REDACTED:aws_secret_key]".to_string(),
        ),
        (
            format!("aws_secret_access_key = \"{AWS_SECRET}\"\n"),
            "aws_secret_access_key = \"[REDACTED:aws_secret_key]\"\n".to_string(),
        ),
        (
            format!("{{\"SecretAccessKey\": \"{AWS_SECRET}\", \"x\": 1}}"),
            "{\"SecretAccessKey\": \"[REDACTED:aws_secret_key]\", \"x\": 1}".to_string(),
        ),
        (
            format!("aws_secret: {AWS_SECRET}"),
            "aws_secret: [REDACTED:aws_secret_key]".to_string(),
        ),
    ] {
        let (out, f) = red(&d, &input);
        assert_eq!(out, expected);
        assert_eq!(f, one("aws_secret_key", 1));
    }
    // No label, wrong label, wrong length: untouched.
    assert_clean(
        &d,
        &[
            AWS_SECRET,
            &format!("checksum={AWS_SECRET}"),
            &format!("AWS_SECRET_ACCESS_KEY={}", &AWS_SECRET[..39]),
            &format!("AWS_SECRET_ACCESS_KEY={AWS_SECRET}A"),
        ],
    );
    // JSON: the label is the object key, the value a separate string.
    let mut v = json!({"Credentials": {"AccessKeyId": "ASIAY34FZKBOKMUTVV7A", "SecretAccessKey": AWS_SECRET},
                       "checksum": AWS_SECRET});
    let f = d.redact_value(&mut v);
    assert_eq!(
        v,
        json!({"Credentials": {"AccessKeyId": "[REDACTED:aws_access_key]", "SecretAccessKey": "[REDACTED:aws_secret_key]"},
               "checksum": AWS_SECRET})
    );
    assert_eq!(f.get("aws_secret_key"), 1);
    assert_eq!(f.get("aws_access_key"), 1);
    assert_eq!(f.total(), 2);
}

#[test]
fn gcp_api_key() {
    let d = dlp();
    assert_whole(
        &d,
        "gcp_api_key",
        &[
            "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
            "AIzaSyA1234567890abcdefghijklmnopqrstu-",
        ],
    );
    assert_clean(
        &d,
        &[
            "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGew",    // 33
            "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQeX", // 36
            "aizaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
        ],
    );
}

#[test]
fn github_token() {
    let d = dlp();
    assert_whole(
        &d,
        "github_token",
        &[
            "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",
            "gho_16C7e42F292c6912E7710c838347Ae178B4a",
            "ghs_16C7e42F292c6912E7710c838347Ae178B4a",
            "github_pat_11ABCDEFG0123456789abcd_0123456789abcdefghijABCDEFGHIJ0123456789abcdefghijKLMNOPQRS",
        ],
    );
    assert_clean(
        &d,
        &[
            "ghp_wWPw5k4aXcaT4fNP0UcnZwJUVFk6LO0pINU",  // 35
            "ghx_wWPw5k4aXcaT4fNP0UcnZwJUVFk6LO0pINUx", // bad prefix
            "github_pat_short",
        ],
    );
}

#[test]
fn slack_token() {
    let d = dlp();
    assert_whole(
        &d,
        "slack_token",
        &[
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
            "xoxp-1234-5678-9012-0123456789abcdef0123456789abcdef",
            "xoxa-2-0123456789abcdef",
        ],
    );
    assert_clean(
        &d,
        &[
            "xoxb-",
            "xoxb-12345678",
            "xoxq-1234-abcdefghijkl",
            "xoxb-1234-abc",
        ],
    );
}

#[test]
fn private_key_blocks() {
    let d = dlp();
    let ec = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIGlRHrBFJa4ePF3gtQXg1jN+o0Wu0n3wA==\n-----END EC PRIVATE KEY-----";
    let openssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----";
    let enc = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----";
    let pkcs8 = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC\n-----END PRIVATE KEY-----";
    assert_whole(&d, "private_key", &[RSA_KEY, ec, openssh, enc, pkcs8]);
    // Surrounding text kept; two keys -> two markers.
    let (out, f) = red(&d, &format!("key1:\n{RSA_KEY}\nkey2:\n{ec}\ndone"));
    assert_eq!(
        out,
        "key1:\n[REDACTED:private_key]\nkey2:\n[REDACTED:private_key]\ndone"
    );
    assert_eq!(f, one("private_key", 2));
    // Truncated block (no END line): everything PEM-like after BEGIN goes.
    let (out, f) = red(
        &d,
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHC\nozMx",
    );
    assert_eq!(out, "[REDACTED:private_key]");
    assert_eq!(f, one("private_key", 1));
    // Public keys and certificates are not secrets.
    assert_clean(
        &d,
        &[
            "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
        ],
    );
}

#[test]
fn jwt() {
    let d = dlp();
    // alg=none JWT with an empty signature.
    let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";
    assert_whole(&d, "jwt", &[JWT, none]);
    assert_clean(
        &d,
        &[
            // header {"typ":"JWT"} has no alg
            "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fw",
            // only two segments
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0",
            // header is not valid base64url JSON
            "eyJhbGciOiJIUz.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abc",
        ],
    );
}

#[test]
fn bearer_token_redacts_token_only() {
    let d = dlp();
    for (input, expected) in [
        (
            "Authorization: Bearer 8f14e45fceea167a5a36dedd4bea2543",
            "Authorization: Bearer [REDACTED:bearer_token]",
        ),
        (
            "curl -H 'authorization: bearer sk-live_4eC39HqLyjWDarjtT1zdp7dc' https://x",
            "curl -H 'authorization: bearer [REDACTED:bearer_token]' https://x",
        ),
        (
            "Bearer dGhpcyBpcyBhIHRva2VuIGZvciB0ZXN0aW5nIHB1cnBvc2Vz==",
            "Bearer [REDACTED:bearer_token]",
        ),
    ] {
        let (out, f) = red(&d, input);
        assert_eq!(out, expected);
        assert_eq!(f, one("bearer_token", 1));
    }
    assert_clean(
        &d,
        &[
            "Bearer",
            "Bearer ",
            "Use a Bearer token here",
            "Bearer authentication is required",
            "Bearer abc12", // too short
        ],
    );
    // A JWT as bearer token: same span, jwt (higher priority) names it, counted once.
    let (out, f) = red(&d, &format!("Authorization: Bearer {JWT}"));
    assert_eq!(out, "Authorization: Bearer [REDACTED:jwt]");
    assert_eq!(f, one("jwt", 1));
}

#[test]
fn credit_card() {
    let d = dlp();
    assert_whole(
        &d,
        "credit_card",
        &[
            "4111111111111111",
            "4111 1111 1111 1111",
            "5555-5555-5555-4444",
            "378282246310005",
            "3782 822463 10005",
            "6011111111111117",
        ],
    );
    assert_clean(
        &d,
        &[
            "4111111111111112",        // Luhn-invalid
            "4111 1111 1111 1112",     // Luhn-invalid, spaced
            "1234567812345670",        // Luhn-valid, no issuer prefix
            "order 411111111111",      // 12 digits
            "id 41111111111111110000", // too long, part of a longer number
            "tel +1 415 555 0132",
            "1700000000000", // epoch millis
        ],
    );
    let (out, f) = red(
        &d,
        "cards: 4111111111111111, 5555555555554444 and 4111111111111112.",
    );
    assert_eq!(
        out,
        "cards: [REDACTED:credit_card], [REDACTED:credit_card] and 4111111111111112."
    );
    assert_eq!(f, one("credit_card", 2));
}

#[test]
fn email() {
    let d = dlp();
    assert_whole(
        &d,
        "email",
        &[
            "alice@example.com",
            "bob.smith+tag@mail.co.uk",
            "x_y-z%1@sub-domain.example.org",
        ],
    );
    assert_clean(
        &d,
        &[
            "user@localhost",
            "@example.com",
            "alice@",
            "alice at example dot com",
            "foo@bar.c",
        ],
    );
    let (out, f) = red(&d, "From: Alice <alice@example.com>, cc bob@example.net.");
    assert_eq!(out, "From: Alice <[REDACTED:email]>, cc [REDACTED:email].");
    assert_eq!(f, one("email", 2));
}

#[test]
fn mixed_text_counts_exact() {
    let d = dlp();
    let text = format!(
        "user alice@example.com key AKIAIOSFODNN7EXAMPLE card 4111-1111-1111-1111 \
         token {JWT} again bob@example.org"
    );
    let (out, f) = d.redact_text(&text);
    assert_eq!(
        out,
        "user [REDACTED:email] key [REDACTED:aws_access_key] card [REDACTED:credit_card] \
         token [REDACTED:jwt] again [REDACTED:email]"
    );
    assert_eq!(f.get("email"), 2);
    assert_eq!(f.get("aws_access_key"), 1);
    assert_eq!(f.get("credit_card"), 1);
    assert_eq!(f.get("jwt"), 1);
    assert_eq!(f.total(), 5);
    assert_eq!(
        f.to_string(),
        "aws_access_key=1 credit_card=1 email=2 jwt=1"
    );
}

#[test]
fn clean_text_is_borrowed() {
    let d = dlp();
    let s = "just a normal log line with numbers 12345 and a path /usr/lib/x.so";
    let (out, f) = d.redact_text(s);
    assert!(matches!(out, std::borrow::Cow::Borrowed(_)));
    assert!(f.is_empty());
    let (out, _) = d.redact_text("short");
    assert!(matches!(out, std::borrow::Cow::Borrowed(_)));
}

#[test]
fn nested_json_values_and_keys() {
    let d = dlp();
    let mut v = json!({
        "content": [
            {"type": "text", "text": "contact alice@example.com"},
            {"type": "resource", "resource": {"items": [
                {"owner": "bob@example.org", "n": 4111111111111111u64, "card": "4111111111111111"},
                {"nested": [[{"deep": "AKIAIOSFODNN7EXAMPLE"}]]}
            ]}}
        ],
        "by_user": {"carol@example.com": 1, "dave@example.com": 2, "plain": 3},
        "isError": false
    });
    let before = v.clone();
    let scan = d.scan_value(&v);
    assert_eq!(v, before, "scan_value must not modify");
    let f = d.redact_value(&mut v);
    assert_eq!(scan, f);
    assert_eq!(
        v,
        json!({
            "content": [
                {"type": "text", "text": "contact [REDACTED:email]"},
                {"type": "resource", "resource": {"items": [
                    {"owner": "[REDACTED:email]", "n": 4111111111111111u64, "card": "[REDACTED:credit_card]"},
                    {"nested": [[{"deep": "[REDACTED:aws_access_key]"}]]}
                ]}}
            ],
            "by_user": {"[REDACTED:email]": 1, "[REDACTED:email] #2": 2, "plain": 3},
            "isError": false
        })
    );
    // Numbers are not strings: not scanned. Keys are.
    assert_eq!(f.get("email"), 4);
    assert_eq!(f.get("credit_card"), 1);
    assert_eq!(f.get("aws_access_key"), 1);
    assert_eq!(f.total(), 6);
}

#[test]
fn idempotent_redaction() {
    let d = dlp();
    d.set_bound_secrets(["upstream-secret-value-123"]).unwrap();
    let text = format!(
        "a@b.com AKIAIOSFODNN7EXAMPLE Bearer 8f14e45fceea167a5a36 {JWT} {RSA_KEY} \
         AWS_SECRET_ACCESS_KEY={AWS_SECRET} xoxb-1234-5678-abcdefghijkl 4111111111111111 \
         upstream-secret-value-123"
    );
    let (once, f1) = d.redact_text(&text);
    assert_eq!(f1.total(), 9, "{f1}");
    let (twice, f2) = d.redact_text(&once);
    assert_eq!(once, twice);
    assert!(f2.is_empty(), "{f2}");
    assert!(matches!(twice, std::borrow::Cow::Borrowed(_)));

    let mut v = json!({"k": text, "a@b.com": ["x@y.org"]});
    let f1 = d.redact_value(&mut v);
    assert_eq!(f1.total(), 11);
    let snapshot = v.clone();
    let f2 = d.redact_value(&mut v);
    assert_eq!(v, snapshot);
    assert!(f2.is_empty());
}

#[test]
fn markers_are_not_rematched_even_by_custom_detectors() {
    let d = Dlp::new(&cfg(json!({"custom": [
        {"name": "redacted_word", "pattern": "REDACTED:[a-z_]+"}
    ]})))
    .unwrap();
    let (out, f) = red(&d, "x [REDACTED:email] y REDACTED:foo");
    assert_eq!(out, "x [REDACTED:email] y [REDACTED:redacted_word]");
    assert_eq!(f, one("redacted_word", 1));
}

#[test]
fn bound_secrets_replaced_at_runtime() {
    let d = dlp();
    assert_eq!(d.bound_secret_count(), 0);
    let n = d
        .set_bound_secrets([
            "s3cr3t-upstream-token",
            "short",
            "another-Secret-9",
            "s3cr3t-upstream-token",
        ])
        .unwrap();
    assert_eq!(n, 2, "duplicates dropped, <8 chars ignored");
    let (out, f) = red(
        &d,
        "hdr x-api-key=s3cr3t-upstream-tokenXYZ; short; another-Secret-9",
    );
    assert_eq!(
        out,
        "hdr x-api-key=[REDACTED:bound_secret]XYZ; short; [REDACTED:bound_secret]"
    );
    assert_eq!(f, one("bound_secret", 2));

    // Replace the set: the old value is no longer special, the new one is.
    assert_eq!(
        d.set_bound_secrets(vec!["rotated-value-0001".to_string()])
            .unwrap(),
        1
    );
    assert_eq!(d.bound_secret_count(), 1);
    let (out, f) = red(&d, "s3cr3t-upstream-token rotated-value-0001");
    assert_eq!(out, "s3cr3t-upstream-token [REDACTED:bound_secret]");
    assert_eq!(f, one("bound_secret", 1));

    // Inside JSON strings and keys; and JSON-escaped in raw JSON text.
    d.set_bound_secrets(["pa\"ss\\word-42"]).unwrap();
    let mut v = json!({"cfg": {"password": "pa\"ss\\word-42", "pa\"ss\\word-42": true}});
    let f = d.redact_value(&mut v);
    assert_eq!(
        v,
        json!({"cfg": {"password": "[REDACTED:bound_secret]", "[REDACTED:bound_secret]": true}})
    );
    assert_eq!(f.get("bound_secret"), 2);
    let raw = serde_json::to_string(&json!({"password": "pa\"ss\\word-42"})).unwrap();
    let (out, f) = red(&d, &raw);
    assert_eq!(out, r#"{"password":"[REDACTED:bound_secret]"}"#);
    assert_eq!(f, one("bound_secret", 1));

    // Clearing.
    assert_eq!(d.set_bound_secrets(Vec::<String>::new()).unwrap(), 0);
    assert_clean(&d, &["pa\"ss\\word-42"]);
}

#[test]
fn bound_secret_wins_over_overlapping_detector() {
    let d = dlp();
    // The bound secret is a superset of an email: longest wins.
    d.set_bound_secrets(["svc-user:alice@example.com:pw"])
        .unwrap();
    let (out, f) = red(&d, "login svc-user:alice@example.com:pw ok");
    assert_eq!(out, "login [REDACTED:bound_secret] ok");
    assert_eq!(f, one("bound_secret", 1));
    // Partial overlap: nothing of either survives.
    d.set_bound_secrets(["example.com-secret-tail"]).unwrap();
    let (out, f) = red(&d, "x alice@example.com-secret-tail y");
    assert_eq!(out, "x [REDACTED:bound_secret] y");
    assert_eq!(f, one("bound_secret", 1));
}

#[test]
fn bound_secrets_redacted_even_when_results_off() {
    let d = Dlp::new(&cfg(json!({"results": "off"}))).unwrap();
    d.set_bound_secrets(["upstream-credential-xyz"]).unwrap();
    let (out, f) = red(&d, "alice@example.com upstream-credential-xyz");
    assert_eq!(out, "alice@example.com [REDACTED:bound_secret]");
    assert_eq!(f, one("bound_secret", 1));
    // scan_value still counts everything.
    let s = d.scan_value(&json!(["alice@example.com upstream-credential-xyz"]));
    assert_eq!(s.get("email"), 1);
    assert_eq!(s.get("bound_secret"), 1);
}

#[test]
fn matched_text_never_in_debug_or_display() {
    let d = dlp();
    let secret = "hunter2-upstream-SECRET";
    d.set_bound_secrets([secret]).unwrap();
    let mut v = json!({"a": format!("{secret} alice@example.com {JWT} 4111111111111111")});
    let f = d.redact_value(&mut v);
    assert_eq!(f.total(), 4);
    let verdict = d.arguments_verdict(&json!({"q": secret, "e": "alice@example.com"}));
    for s in [
        format!("{f:?}"),
        f.to_string(),
        serde_json::to_string(&f).unwrap(),
        format!("{d:?}"),
        format!("{:?}", verdict.findings),
        format!("{:?}", verdict.block),
        v.to_string(),
    ] {
        for needle in [
            secret,
            "alice@example.com",
            JWT,
            "4111111111111111",
            "hunter2",
        ] {
            assert!(!s.contains(needle), "{needle:?} leaked in {s:?}");
        }
    }
    assert!(format!("{d:?}").contains("bound_secrets: 1"));
    // Errors: name the field/detector, not data.
    let e = Dlp::new(&cfg(json!({"disabled": ["emails"]}))).unwrap_err();
    let msg = format!("{e} {e:?}");
    assert!(!msg.contains(secret));
}

#[test]
fn arguments_verdict_actions() {
    let d = Dlp::new(&cfg(json!({
        "arguments": "record",
        "detectors": {
            "email": {"arguments": "redact"},
            "aws_access_key": {"arguments": "block"},
            "bound_secret": {"arguments": "block"}
        }
    })))
    .unwrap();
    // Clean: nothing.
    let v = d.arguments_verdict(&json!({"query": "select 1", "n": 5}));
    assert_eq!(v, ArgumentsVerdict::default());
    assert!(!v.blocked());

    // Record only (credit_card): counted, forwarded unchanged.
    let v = d.arguments_verdict(&json!({"card": "4111111111111111"}));
    assert_eq!(v.findings.get("credit_card"), 1);
    assert!(v.block.is_empty());
    assert_eq!(v.redacted, None);

    // Redact (email) + record (card): copy with only the email replaced.
    let args =
        json!({"to": ["alice@example.com"], "body": "card 4111111111111111 from bob@example.org"});
    let v = d.arguments_verdict(&args);
    assert_eq!(v.findings.get("email"), 2);
    assert_eq!(v.findings.get("credit_card"), 1);
    assert!(v.block.is_empty());
    assert_eq!(
        v.redacted,
        Some(
            json!({"to": ["[REDACTED:email]"], "body": "card 4111111111111111 from [REDACTED:email]"})
        )
    );

    // Block.
    d.set_bound_secrets(["the-real-upstream-key"]).unwrap();
    let v = d.arguments_verdict(
        &json!({"a": "AKIAIOSFODNN7EXAMPLE", "b": {"c": "x the-real-upstream-key"}, "d": "e@x.io"}),
    );
    assert!(v.blocked());
    assert_eq!(
        v.block,
        vec!["aws_access_key".to_string(), "bound_secret".to_string()]
    );
    assert_eq!(v.findings.total(), 3);
    assert_eq!(
        v.redacted,
        Some(
            json!({"a": "AKIAIOSFODNN7EXAMPLE", "b": {"c": "x the-real-upstream-key"}, "d": "[REDACTED:email]"})
        )
    );
}

#[test]
fn results_off_per_detector_and_disabled() {
    let d = Dlp::new(&cfg(json!({
        "disabled": ["credit_card"],
        "detectors": {"email": {"results": "off"}}
    })))
    .unwrap();
    assert!(!d.detector_names().contains(&"credit_card"));
    let (out, f) = red(
        &d,
        "alice@example.com 4111111111111111 AKIAIOSFODNN7EXAMPLE",
    );
    assert_eq!(
        out,
        "alice@example.com 4111111111111111 [REDACTED:aws_access_key]"
    );
    assert_eq!(f, one("aws_access_key", 1));
    // email still counted by scan and arguments; credit_card nowhere.
    let s = d.scan_value(&json!("alice@example.com 4111111111111111"));
    assert_eq!(s.get("email"), 1);
    assert_eq!(s.get("credit_card"), 0);
}

#[test]
fn disabled_globally() {
    let d = Dlp::new(&cfg(json!({"enabled": false}))).unwrap();
    d.set_bound_secrets(["upstream-credential-xyz"]).unwrap();
    let mut v = json!({"a": "alice@example.com upstream-credential-xyz"});
    let before = v.clone();
    assert!(d.redact_value(&mut v).is_empty());
    assert_eq!(v, before);
    assert!(d.scan_value(&v).is_empty());
    assert_eq!(d.arguments_verdict(&v), ArgumentsVerdict::default());
}

#[test]
fn custom_detectors() {
    let d = Dlp::new(&cfg(json!({"custom": [
        {"name": "acme_key", "pattern": "acme_[0-9a-f]{32}", "arguments": "block"},
        {"name": "employee_id", "pattern": "(?-u:\\b)EMP-[0-9]{6}(?-u:\\b)"}
    ]})))
    .unwrap();
    let names = d.detector_names();
    assert_eq!(&names[names.len() - 2..], &["acme_key", "employee_id"]);
    let key = "acme_0123456789abcdef0123456789abcdef";
    let (out, f) = red(&d, &format!("k={key} by EMP-004211, not EMP-0042"));
    assert_eq!(
        out,
        "k=[REDACTED:acme_key] by [REDACTED:employee_id], not EMP-0042"
    );
    assert_eq!(
        f,
        vec![("acme_key".to_string(), 1), ("employee_id".to_string(), 1)]
    );
    let v = d.arguments_verdict(&json!({"k": key, "e": "EMP-123456"}));
    assert_eq!(v.block, vec!["acme_key".to_string()]);
    assert_eq!(v.findings.total(), 2);
    assert_eq!(v.redacted, None);
    // Custom override via [dlp.detectors.<custom>].
    let d = Dlp::new(&cfg(json!({
        "custom": [{"name": "acme_key", "pattern": "acme_[0-9a-f]{32}", "arguments": "block"}],
        "detectors": {"acme_key": {"arguments": "redact"}}
    })))
    .unwrap();
    let v = d.arguments_verdict(&json!({"k": key}));
    assert!(v.block.is_empty());
    assert_eq!(v.redacted, Some(json!({"k": "[REDACTED:acme_key]"})));
}

#[test]
fn config_errors_name_the_field() {
    let err = |v: Value| Dlp::new(&cfg(v)).unwrap_err();

    let e = err(
        json!({"custom": [{"name": "ok_name", "pattern": "a"}, {"name": "bad_re", "pattern": "([a-z"}]}),
    );
    assert!(matches!(e, DlpError::InvalidPattern { .. }));
    let m = e.to_string();
    assert!(
        m.starts_with("dlp.custom[1].pattern: invalid regex for detector `bad_re`"),
        "{m}"
    );

    let e = err(json!({"disabled": ["email", "emails"]}));
    let m = e.to_string();
    assert!(
        m.starts_with("dlp.disabled[1]: unknown detector `emails`"),
        "{m}"
    );
    assert!(m.contains("credit_card"), "lists known names: {m}");

    let e = err(json!({"detectors": {"jwtt": {"arguments": "block"}}}));
    assert!(
        e.to_string()
            .starts_with("dlp.detectors.jwtt: unknown detector `jwtt`"),
        "{e}"
    );

    let e = err(json!({"custom": [{"name": "Bad-Name", "pattern": "x"}]}));
    assert!(
        e.to_string()
            .starts_with("dlp.custom[0].name: invalid detector name `Bad-Name`"),
        "{e}"
    );

    let e = err(json!({"custom": [{"name": "email", "pattern": "x"}]}));
    assert_eq!(
        e.to_string(),
        "dlp.custom[0].name: detector name `email` is already in use"
    );
    let e =
        err(json!({"custom": [{"name": "a_b", "pattern": "x"}, {"name": "a_b", "pattern": "y"}]}));
    assert!(
        matches!(e, DlpError::DuplicateName { ref field, .. } if field == "dlp.custom[1].name")
    );

    let e = err(json!({"custom": [{"name": "empty", "pattern": "x*"}]}));
    assert_eq!(
        e.to_string(),
        "dlp.custom[0].pattern: pattern of detector `empty` can match the empty string"
    );

    // A disabled custom detector still has to be valid.
    let e = err(json!({"disabled": ["zz"], "custom": [{"name": "zz", "pattern": "("}]}));
    assert!(matches!(e, DlpError::InvalidPattern { .. }));
}

#[test]
fn short_strings_skipped_but_short_secrets_found() {
    let d = dlp();
    // Shortest built-in match is an email like a@b.cd (6 bytes).
    let (_, f) = red(&d, "a@b.cd");
    assert_eq!(f, one("email", 1));
    let (_, f) = red(&d, "a@b.c");
    assert!(f.is_empty());
}

#[test]
fn dlp_is_send_sync_and_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Dlp>();
    let d = std::sync::Arc::new(dlp());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let d = d.clone();
            std::thread::spawn(move || {
                d.set_bound_secrets([format!("thread-secret-{i:04}")])
                    .unwrap();
                d.redact_text("mail me: x@example.com").1.get("email")
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 1);
    }
    assert_eq!(d.bound_secret_count(), 1);
}

/// The walk over a text view behind the proxy's fast path agrees with `redact_value` on whether a server
/// message would change: strings, keys, escapes, AWS labels, detectors that only count.
#[test]
fn a_text_walk_finds_what_redaction_would_change() {
    let email_off = Dlp::new(&cfg(json!({"detectors": {"email": {"results": "off"}}}))).unwrap();
    let off = Dlp::new(&cfg(json!({"enabled": false}))).unwrap();
    let docs = [
        r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello"}],"isError":false}}"#.to_string(),
        r#"{"id":1,"result":{"content":[{"type":"text","text":"mail bob@example.com now"}]}}"#.to_string(),
        r#"{"id":1,"result":{"bob@example.com":1}}"#.to_string(),
        // Escaped: the detectors see the decoded text, as in the tree.
        r#"{"id":1,"result":{"text":"bob\u0040example.com"}}"#.to_string(),
        format!(r#"{{"id":1,"result":{{"SecretAccessKey":"{AWS_SECRET}"}}}}"#),
        format!(r#"{{"id":1,"result":{{"checksum":"{AWS_SECRET}","n":[1,2.5,null,true]}}}}"#),
        r#"{"id":1,"result":{"deep":[[{"x":"AKIAY34FZKBOKMUTVV7A"}]]}}"#.to_string(),
        r#"{"id":1,"result":"[REDACTED:email] already"}"#.to_string(),
    ];
    for d in [&dlp(), &email_off] {
        for text in &docs {
            let mut v: Value = serde_json::from_str(text).unwrap();
            let before = v.clone();
            let f = d.redact_value(&mut v);
            let unchanged = f.total() == 0 && v == before;
            let view = crate::jsonview::parse(text).unwrap();
            assert_eq!(d.results_clean(&view), unchanged, "{text}");
        }
    }
    assert!(!off.enabled);
    assert!(off.results_clean(&crate::jsonview::parse(&docs[1]).unwrap()));
}
