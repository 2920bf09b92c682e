//! Matching, overlap resolution and replacement, for text and for JSON values.
//!
//! Overlaps: candidates whose spans overlap form one cluster, replaced by a single
//! `[REDACTED:<winner>]` covering the union of the cluster (so no part of any match
//! survives and nothing is redacted twice). The winner is the longest match, then the
//! earliest, then the detector with the higher priority (bound_secret, built-ins in
//! table order, custom detectors). Only the winner is counted.
//!
//! JSON: every string value and every object key is scanned. A redacted key that would
//! collide with another key of the same object gets a ` #2`, ` #3`... suffix.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::bound::BoundSet;
use super::detectors::{is_aws_secret_label, is_aws_secret_value, validate};
use super::{ArgAction, ArgumentsVerdict, Dlp, Findings, ResultAction, MARKER_PREFIX};
use crate::jsonview::Node;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Count every enabled detector; change nothing (scan_value, exercised by the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Scan,
    /// Tool results: detectors with `results = redact`, all replaced.
    Results,
    /// Tool arguments: count every detector; replace those with `arguments = redact`.
    Arguments,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub start: usize,
    pub end: usize,
    pub det: usize,
}

struct Ctx {
    mode: Mode,
    bound: std::sync::Arc<BoundSet>,
    hits: Vec<Hit>,
    scratch: Vec<Hit>,
    findings: Findings,
    block: BTreeSet<usize>,
    needs_redact: bool,
}

/// Spans of `[REDACTED:<name>]` markers already present in `text`.
fn marker_spans(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices(MARKER_PREFIX) {
        let rest = &text.as_bytes()[i + MARKER_PREFIX.len()..];
        let n = rest
            .iter()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || **b == b'_')
            .count();
        if n > 0 && rest.get(n) == Some(&b']') {
            out.push((i, i + MARKER_PREFIX.len() + n + 1));
        }
    }
    out
}

/// Merge overlapping candidates into clusters; one hit per cluster (see module doc).
fn resolve(cands: &mut [Hit], out: &mut Vec<Hit>) {
    cands.sort_unstable_by_key(|h| (h.start, Reverse(h.end), h.det));
    let better = |a: &Hit, b: &Hit| {
        let (la, lb) = (a.end - a.start, b.end - b.start);
        la > lb || (la == lb && (a.start, a.det) < (b.start, b.det))
    };
    let mut i = 0;
    while i < cands.len() {
        let mut best = cands[i];
        let start = best.start;
        let mut end = best.end;
        let mut j = i + 1;
        while j < cands.len() && cands[j].start < end {
            end = end.max(cands[j].end);
            if better(&cands[j], &best) {
                best = cands[j];
            }
            j += 1;
        }
        out.push(Hit {
            start,
            end,
            det: best.det,
        });
        i = j;
    }
}

impl Dlp {
    fn counts(&self, mode: Mode, det: usize) -> bool {
        match mode {
            Mode::Scan | Mode::Arguments => true,
            Mode::Results => self.dets[det].results == ResultAction::Redact,
        }
    }

    fn applies(&self, mode: Mode, det: usize) -> bool {
        match mode {
            Mode::Scan => false,
            Mode::Results => true,
            Mode::Arguments => self.dets[det].arguments == ArgAction::Redact,
        }
    }

    /// Find resolved hits in `text` (sorted, non-overlapping) into `out`.
    fn analyze(
        &self,
        text: &str,
        mode: Mode,
        bound: &BoundSet,
        cands: &mut Vec<Hit>,
        out: &mut Vec<Hit>,
    ) {
        out.clear();
        cands.clear();
        let n = text.len();
        let regex_ok = n >= self.min_regex_len;
        let bound_ok = n >= bound.min_len && self.bound_det.is_some_and(|d| self.counts(mode, d));
        if regex_ok {
            // Most strings match nothing: `is_match` answers that without the allocation
            // `matches` makes for its set of patterns.
            if let Some(set) = self.set.as_ref().filter(|s| s.is_match(text)) {
                let matched = set.matches(text);
                for i in matched.iter() {
                    let rx = &self.regexes[i];
                    if !self.counts(mode, rx.det) {
                        continue;
                    }
                    if rx.group == 0 {
                        for m in rx.regex.find_iter(text) {
                            if m.start() < m.end() && validate(rx.validator, m.as_str()) {
                                cands.push(Hit {
                                    start: m.start(),
                                    end: m.end(),
                                    det: rx.det,
                                });
                            }
                        }
                    } else {
                        for c in rx.regex.captures_iter(text) {
                            if let Some(m) = c.get(rx.group) {
                                if m.start() < m.end() && validate(rx.validator, m.as_str()) {
                                    cands.push(Hit {
                                        start: m.start(),
                                        end: m.end(),
                                        det: rx.det,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        if bound_ok {
            if let (Some(ac), Some(det)) = (&bound.ac, self.bound_det) {
                for m in ac.find_iter(text) {
                    cands.push(Hit {
                        start: m.start(),
                        end: m.end(),
                        det,
                    });
                }
            }
        }
        if cands.is_empty() {
            return;
        }
        if text.contains(MARKER_PREFIX) {
            let markers = marker_spans(text);
            cands.retain(|h| !markers.iter().any(|&(s, e)| h.start < e && s < h.end));
        }
        resolve(cands, out);
    }

    fn apply<'a>(&self, text: &'a str, hits: &[Hit], mode: Mode) -> Cow<'a, str> {
        if !hits.iter().any(|h| self.applies(mode, h.det)) {
            return Cow::Borrowed(text);
        }
        let mut s = String::with_capacity(text.len() + 16);
        let mut last = 0;
        for h in hits.iter().filter(|h| self.applies(mode, h.det)) {
            s.push_str(&text[last..h.start]);
            s.push_str(MARKER_PREFIX);
            s.push_str(&self.dets[h.det].name);
            s.push(']');
            last = h.end;
        }
        s.push_str(&text[last..]);
        Cow::Owned(s)
    }

    fn new_ctx(&self, mode: Mode) -> Ctx {
        Ctx {
            mode,
            bound: self.bound_snapshot(),
            hits: Vec::new(),
            scratch: Vec::new(),
            findings: Findings::new(),
            block: BTreeSet::new(),
            needs_redact: false,
        }
    }

    /// Scan one string; count into `ctx`; return the replacement if `rewrite` and changed.
    fn on_str(&self, s: &str, aws_label: bool, ctx: &mut Ctx, rewrite: bool) -> Option<String> {
        let mut hits = std::mem::take(&mut ctx.hits);
        hits.clear();
        match self.aws_secret_det {
            Some(det) if aws_label && is_aws_secret_value(s) && self.counts(ctx.mode, det) => {
                hits.push(Hit {
                    start: 0,
                    end: s.len(),
                    det,
                });
            }
            _ => self.analyze(s, ctx.mode, &ctx.bound, &mut ctx.scratch, &mut hits),
        }
        let mut out = None;
        if !hits.is_empty() {
            for h in &hits {
                let d = &self.dets[h.det];
                ctx.findings.add(&d.name);
                if ctx.mode == Mode::Arguments && d.arguments == ArgAction::Block {
                    ctx.block.insert(h.det);
                }
                if self.applies(ctx.mode, h.det) {
                    ctx.needs_redact = true;
                }
            }
            if rewrite {
                if let Cow::Owned(o) = self.apply(s, &hits, ctx.mode) {
                    out = Some(o);
                }
            }
        }
        ctx.hits = hits;
        out
    }

    fn walk_ref(&self, v: &Value, aws_label: bool, ctx: &mut Ctx) {
        match v {
            Value::String(s) => {
                self.on_str(s, aws_label, ctx, false);
            }
            Value::Array(a) => a.iter().for_each(|x| self.walk_ref(x, false, ctx)),
            Value::Object(m) => {
                for (k, x) in m {
                    self.on_str(k, false, ctx, false);
                    self.walk_ref(x, is_aws_secret_label(k), ctx);
                }
            }
            _ => {}
        }
    }

    fn walk_mut(&self, v: &mut Value, aws_label: bool, ctx: &mut Ctx) {
        match v {
            Value::String(s) => {
                if let Some(new) = self.on_str(s, aws_label, ctx, true) {
                    *s = new;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.walk_mut(x, false, ctx)),
            Value::Object(m) => {
                let mut renames: Vec<(String, String)> = Vec::new();
                for (k, x) in m.iter_mut() {
                    if let Some(nk) = self.on_str(k, false, ctx, true) {
                        renames.push((k.clone(), nk));
                    }
                    self.walk_mut(x, is_aws_secret_label(k), ctx);
                }
                if !renames.is_empty() {
                    rename_keys(m, renames);
                }
            }
            _ => {}
        }
    }

    /// Count matches of every enabled detector in all strings and keys of `v`
    /// (regardless of actions). Never changes anything.
    #[cfg(test)]
    pub fn scan_value(&self, v: &Value) -> Findings {
        if !self.enabled {
            return Findings::new();
        }
        let mut ctx = self.new_ctx(Mode::Scan);
        self.walk_ref(v, false, &mut ctx);
        ctx.findings
    }

    /// Tool results: replace matches of detectors with `results = redact` in every string
    /// value and object key with `[REDACTED:<detector>]`; return their counts.
    pub fn redact_value(&self, v: &mut Value) -> Findings {
        if !self.enabled {
            return Findings::new();
        }
        let mut ctx = self.new_ctx(Mode::Results);
        self.walk_mut(v, false, &mut ctx);
        ctx.findings
    }

    /// Whether [`Dlp::redact_value`] would leave a JSON document as it is (no detector that
    /// redacts results matches any of its strings or keys), from its text view; stops at the
    /// first match.
    pub fn results_clean(&self, doc: &Node<'_>) -> bool {
        if !self.enabled {
            return true;
        }
        let mut ctx = self.new_ctx(Mode::Results);
        self.clean_node(doc, false, &mut ctx)
    }

    fn clean_node(&self, n: &Node<'_>, aws_label: bool, ctx: &mut Ctx) -> bool {
        match n {
            Node::String(s) => {
                self.on_str(s, aws_label, ctx, false);
                ctx.findings.is_empty()
            }
            Node::Array(items) => items.iter().all(|x| self.clean_node(x, false, ctx)),
            Node::Object(members) => members.iter().all(|(k, v)| {
                self.on_str(k, false, ctx, false);
                ctx.findings.is_empty() && self.clean_node(v, is_aws_secret_label(k), ctx)
            }),
            _ => true,
        }
    }

    /// Like [`Dlp::redact_value`] for plain text (log lines, non-JSON SSE data, raw
    /// JSON text). Borrowed when nothing matched.
    #[cfg(test)]
    pub fn redact_text<'a>(&self, text: &'a str) -> (Cow<'a, str>, Findings) {
        if !self.enabled {
            return (Cow::Borrowed(text), Findings::new());
        }
        let mut ctx = self.new_ctx(Mode::Results);
        let out = self.on_str(text, false, &mut ctx, true);
        let text = match out {
            Some(s) => Cow::Owned(s),
            None => Cow::Borrowed(text),
        };
        (text, ctx.findings)
    }

    /// Tool-call arguments: count every detector; list those whose action is `block`;
    /// produce a redacted copy when some matched detector's action is `redact`.
    pub fn arguments_verdict(&self, args: &Value) -> ArgumentsVerdict {
        if !self.enabled {
            return ArgumentsVerdict::default();
        }
        let mut ctx = self.new_ctx(Mode::Arguments);
        self.walk_ref(args, false, &mut ctx);
        let redacted = if ctx.needs_redact {
            let mut copy = args.clone();
            let mut c2 = self.new_ctx(Mode::Arguments);
            c2.bound = ctx.bound.clone(); // same secret set as the scan
            self.walk_mut(&mut copy, false, &mut c2);
            Some(copy)
        } else {
            None
        };
        ArgumentsVerdict {
            block: ctx
                .block
                .iter()
                .map(|&d| self.dets[d].name.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            findings: ctx.findings,
            redacted,
        }
    }
}

/// Apply key renames; a renamed key never overwrites another entry.
fn rename_keys(m: &mut Map<String, Value>, renames: Vec<(String, String)>) {
    let mut moved = Vec::with_capacity(renames.len());
    for (old, new) in renames {
        if let Some(v) = m.remove(&old) {
            moved.push((new, v));
        }
    }
    for (new, v) in moved {
        let mut key = new.clone();
        let mut n = 2;
        while m.contains_key(&key) {
            key = format!("{new} #{n}");
            n += 1;
        }
        m.insert(key, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(start: usize, end: usize, det: usize) -> Hit {
        Hit { start, end, det }
    }

    #[test]
    fn resolve_longest_then_earliest_then_priority() {
        let mut out = Vec::new();
        // Disjoint stay separate.
        resolve(&mut [h(10, 12, 1), h(0, 5, 2)], &mut out);
        assert_eq!(out, vec![h(0, 5, 2), h(10, 12, 1)]);
        // Contained: the longer wins, span = union.
        out.clear();
        resolve(&mut [h(2, 4, 0), h(0, 10, 5)], &mut out);
        assert_eq!(out, vec![h(0, 10, 5)]);
        // Equal spans: lower det (priority) wins.
        out.clear();
        resolve(&mut [h(3, 9, 7), h(3, 9, 2)], &mut out);
        assert_eq!(out, vec![h(3, 9, 2)]);
        // Partial overlap: the longer wins even if later priority; union covered.
        out.clear();
        resolve(&mut [h(5, 10, 1), h(0, 8, 4)], &mut out);
        assert_eq!(out, vec![h(0, 10, 4)]);
        // Partial overlap, equal length: the earliest wins over priority.
        out.clear();
        resolve(&mut [h(3, 8, 1), h(0, 5, 3)], &mut out);
        assert_eq!(out, vec![h(0, 8, 3)]);
    }

    #[test]
    fn markers_found() {
        let t = "a [REDACTED:email] b [REDACTED:] [REDACTED:x_1]";
        assert_eq!(marker_spans(t), vec![(2, 18), (33, 47)]);
    }

    #[test]
    fn rename_keys_never_collides() {
        let mut m = Map::new();
        m.insert("[REDACTED:email]".into(), Value::from(1));
        m.insert("a@b.co".into(), Value::from(2));
        m.insert("c@d.co".into(), Value::from(3));
        rename_keys(
            &mut m,
            vec![
                ("a@b.co".into(), "[REDACTED:email]".into()),
                ("c@d.co".into(), "[REDACTED:email]".into()),
            ],
        );
        assert_eq!(m.len(), 3);
        assert_eq!(m["[REDACTED:email]"], Value::from(1));
        assert_eq!(m["[REDACTED:email] #2"], Value::from(2));
        assert_eq!(m["[REDACTED:email] #3"], Value::from(3));
    }
}
