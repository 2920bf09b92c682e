//! Source-text helpers: byte offset -> line:column, and a light scanner that
//! splits Cedar text into policy statements and finds annotation positions
//! (Cedar's public API does not expose per-policy source locations).

/// Maps byte offsets to 1-based (line, column); columns count characters.
pub struct LineIndex<'a> {
    src: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(src: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { src, starts }
    }

    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.src.len());
        let line = match self.starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.starts[line];
        let col = self
            .src
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(offset - start);
        (line + 1, col + 1)
    }
}

/// An annotation as written in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    pub key: String,
    /// Byte offset of the `@`.
    pub offset: usize,
}

/// One policy statement (`...;`), in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Byte offset of the first token (an annotation or the effect keyword).
    pub start: usize,
    /// Byte offset just past the terminating `;`.
    pub end: usize,
    pub annotations: Vec<Annotation>,
}

impl Statement {
    pub fn text<'s>(&self, src: &'s str) -> &'s str {
        &src[self.start..self.end]
    }
}

/// Split Cedar source into statements. Understands `//` comments and string
/// literals with escapes; `;` only appears at the end of a policy in Cedar.
pub fn scan_statements(src: &str) -> Vec<Statement> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut cur: Option<Statement> = None;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let stmt = cur.get_or_insert_with(|| Statement {
            start: i,
            end: i,
            annotations: Vec::new(),
        });
        match c {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'@' => {
                let start = i;
                i += 1;
                let key_start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                stmt.annotations.push(Annotation {
                    key: src[key_start..i].to_string(),
                    offset: start,
                });
            }
            b';' => {
                i += 1;
                let mut s = cur.take().expect("statement started");
                s.end = i;
                out.push(s);
            }
            _ => i += 1,
        }
    }
    if let Some(mut s) = cur {
        s.end = src.len();
        out.push(s);
    }
    out
}

/// Find `needle` inside `src[start..end]`, returning an absolute offset.
pub fn find_in(src: &str, start: usize, end: usize, needle: &str) -> Option<usize> {
    src.get(start..end)?.find(needle).map(|i| start + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let idx = LineIndex::new("ab\ncdé\nx");
        assert_eq!(idx.line_col(0), (1, 1));
        assert_eq!(idx.line_col(3), (2, 1));
        assert_eq!(idx.line_col(8), (3, 1));
        assert_eq!(idx.line_col(7), (2, 4));
    }

    #[test]
    fn scanner_ignores_semicolons_in_strings_and_comments() {
        let src = "// a; comment\n@id(\"a;b\")\npermit(principal, action, resource);\n\n@id(\"c\") @note(\"x\\\";\")\nforbid(principal, action, resource);";
        let st = scan_statements(src);
        assert_eq!(st.len(), 2);
        assert_eq!(&src[st[0].start..st[0].start + 3], "@id");
        assert_eq!(st[0].annotations.len(), 1);
        assert_eq!(st[1].annotations[1].key, "note");
        assert!(st[1].text(src).ends_with("resource);"));
    }
}
