//! A small OpenMetrics text parser for the tests: they compare values by exact label
//! sets, not by substrings of the exposition.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses `text`, checking the framing tests rely on: every sample belongs to a family
/// declared by a `# TYPE` line before it, and the text ends with `# EOF`.
pub fn parse(text: &str) -> Vec<Sample> {
    assert!(text.ends_with("# EOF\n"), "no EOF marker");
    let mut families: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.push(rest.split(' ').next().unwrap().to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let (labels, rest) = parse_labels(&line[open + 1..]);
                (&line[..open], labels, rest)
            }
            None => {
                let (name, rest) = line.split_once(' ').expect("sample without value");
                (name, BTreeMap::new(), rest)
            }
        };
        assert!(
            families.iter().any(|f| name.starts_with(f.as_str())),
            "sample {name} outside a declared family"
        );
        let value = rest.trim().split(' ').next().unwrap();
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

/// Labels up to the closing `}`, and what follows it.
fn parse_labels(s: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        rest = rest.strip_prefix(',').unwrap_or(rest);
        let (key, after) = rest.split_once("=\"").expect("label without value");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("unterminated label value") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("dangling escape").1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        rest = &after[end + 1..];
    }
}

/// The value of the sample with exactly these labels, if present.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut hits = samples
        .iter()
        .filter(|s| s.name == name && s.labels == want);
    let hit = hits.next().map(|s| s.value);
    assert!(hits.next().is_none(), "duplicate series {name} {labels:?}");
    hit
}
