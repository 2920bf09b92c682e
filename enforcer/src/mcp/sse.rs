//! Incremental Server-Sent Events framing for a stream that passes through: feed chunks, get
//! each event as soon as its blank line arrives, with its raw bytes (to forward unchanged) and
//! its data (to inspect, and to rewrite when masking changed it). At most one partial event is
//! held back, never a whole stream.

/// One complete event as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event's bytes including its terminating blank line.
    pub raw: Vec<u8>,
    /// The joined `data:` lines, when the event has any.
    pub data: Option<String>,
}

impl Event {
    /// The same event with its data replaced: other fields (id, event, retry, comments) keep
    /// their order; the data lines are written where the first one was.
    pub fn with_data(&self, data: &str) -> Vec<u8> {
        let text = String::from_utf8_lossy(&self.raw);
        let mut out = String::with_capacity(self.raw.len() + 16);
        let mut wrote = false;
        for line in text.lines() {
            if line.starts_with("data:") {
                if !wrote {
                    for d in data.split('\n') {
                        out.push_str("data: ");
                        out.push_str(d);
                        out.push('\n');
                    }
                    wrote = true;
                }
            } else if !line.is_empty() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push('\n');
        out.into_bytes()
    }
}

/// Splits a byte stream into SSE events.
#[derive(Default)]
pub struct SseSplitter {
    buf: Vec<u8>,
}

/// Upper bound for one buffered partial event.
pub const MAX_EVENT: usize = 8 * 1024 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub struct EventTooLarge;

impl SseSplitter {
    /// Feed a chunk; returns each event it completed. An event that grows past MAX_EVENT is an
    /// error: it can be neither inspected nor forwarded uninspected.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, EventTooLarge> {
        // Only the new bytes (plus 3 before them, for a separator spanning chunks) need a scan.
        let scan_from = self.buf.len().saturating_sub(3);
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut from = scan_from;
        while let Some((len, sep)) = find_event_end(&self.buf, from) {
            let raw: Vec<u8> = self.buf.drain(..len + sep).collect();
            let data = data_of(&raw[..len]);
            events.push(Event { raw, data });
            from = 0;
        }
        if self.buf.len() > MAX_EVENT {
            self.buf.clear();
            return Err(EventTooLarge);
        }
        Ok(events)
    }

    /// Bytes of an unfinished event at the end of the stream.
    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

fn data_of(event: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(event);
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    (!data.is_empty()).then(|| data.join("\n"))
}

/// Position of the blank line ending the first event at or after `from`:
/// (event length, separator length).
fn find_event_end(b: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\n' if b.get(i + 1) == Some(&b'\n') => return Some((i, 2)),
            b'\r' if b[i..].starts_with(b"\r\n\r\n") => return Some((i, 4)),
            b'\r' if b.get(i + 1) == Some(&b'\r') => return Some((i, 2)),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_chunks() {
        let mut s = SseSplitter::default();
        assert!(s.feed(b"event: message\ndata: {\"a\":").unwrap().is_empty());
        let ev = s.feed(b"1}\n\nid: 2\ndata: x\r\n\r\n: ping\n\n").unwrap();
        let data: Vec<_> = ev.iter().map(|e| e.data.clone()).collect();
        assert_eq!(data, vec![Some("{\"a\":1}".into()), Some("x".into()), None]);
        assert_eq!(ev[0].raw, b"event: message\ndata: {\"a\":1}\n\n");
        let ev = s.feed(b"data: a\ndata: b\n").unwrap();
        assert!(ev.is_empty());
        let ev = s.feed(b"\n").unwrap();
        assert_eq!(ev[0].data.as_deref(), Some("a\nb"));
    }

    #[test]
    fn separator_split_between_chunks_is_found() {
        let mut s = SseSplitter::default();
        assert!(s.feed(b"data: 1\r\n\r").unwrap().is_empty());
        let ev = s.feed(b"\ndata: 2\n\n").unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].data.as_deref(), Some("1"));
    }

    #[test]
    fn rewrites_data_keeping_other_fields() {
        let mut s = SseSplitter::default();
        let ev = s
            .feed(b"id: 7\nevent: message\ndata: {\"secret\":1}\nretry: 10\n\n")
            .unwrap();
        let out = ev[0].with_data("{\"secret\":\"[REDACTED]\"}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id: 7\nevent: message\ndata: {\"secret\":\"[REDACTED]\"}\nretry: 10\n\n"
        );
    }

    #[test]
    fn oversized_event_is_an_error() {
        let mut s = SseSplitter::default();
        let big = vec![b'x'; MAX_EVENT + 1];
        assert_eq!(s.feed(&big), Err(EventTooLarge));
    }
}
