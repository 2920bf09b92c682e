//! Incremental Server-Sent Events framing, for inspecting a stream as it passes without
//! holding any byte back: feed chunks, get complete events' data.

/// Splits a byte stream into SSE events; keeps at most one partial event buffered.
#[derive(Default)]
pub struct SseSplitter {
    buf: Vec<u8>,
}

/// Upper bound for one buffered partial event; a larger event is skipped for inspection.
const MAX_EVENT: usize = 4 * 1024 * 1024;

impl SseSplitter {
    /// Feed a chunk; returns the `data` of each event completed by it.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = find_event_end(&self.buf) {
            let raw: Vec<u8> = self.buf.drain(..end.0 + end.1).collect();
            let text = String::from_utf8_lossy(&raw[..end.0]);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                events.push(data.join("\n"));
            }
        }
        if self.buf.len() > MAX_EVENT {
            self.buf.clear();
        }
        events
    }
}

/// Position of the blank line ending the first event: (event length, separator length).
fn find_event_end(b: &[u8]) -> Option<(usize, usize)> {
    for i in 0..b.len() {
        if b[i..].starts_with(b"\r\n\r\n") {
            return Some((i, 4));
        }
        if b[i..].starts_with(b"\n\n") || b[i..].starts_with(b"\r\r") {
            return Some((i, 2));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_chunks() {
        let mut s = SseSplitter::default();
        assert!(s.feed(b"event: message\ndata: {\"a\":").is_empty());
        assert_eq!(
            s.feed(b"1}\n\nid: 2\ndata: x\r\n\r\n: ping\n\n"),
            vec!["{\"a\":1}", "x"]
        );
        assert_eq!(s.feed(b"data: a\ndata: b\n\n"), vec!["a\nb"]);
    }
}
