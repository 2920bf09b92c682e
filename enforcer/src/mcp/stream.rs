//! Reading the JSON-RPC messages out of a response body while it streams to the agent:
//! SSE events as each completes, or the single JSON document once it is whole. Nothing is
//! held back from the agent; this only looks.

use serde_json::Value;

use super::{
    jsonrpc::{self, Message},
    sse::SseSplitter,
};

/// Larger JSON documents are passed through without being read.
const MAX_JSON: usize = 4 * 1024 * 1024;

pub enum ResponseReader {
    Sse(SseSplitter),
    /// Bytes of a JSON document so far; None once read (or given up on).
    Json(Option<Vec<u8>>),
}

impl ResponseReader {
    pub fn new(sse: bool) -> Self {
        if sse {
            Self::Sse(SseSplitter::default())
        } else {
            Self::Json(Some(Vec::new()))
        }
    }

    /// Feed the next chunk; returns the messages it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Message> {
        match self {
            Self::Sse(splitter) => splitter
                .feed(chunk)
                .iter()
                .filter_map(|event| jsonrpc::parse(event.as_bytes()).ok())
                .flat_map(|p| p.messages)
                .collect(),
            Self::Json(state) => {
                let Some(buf) = state.as_mut() else {
                    return Vec::new();
                };
                buf.extend_from_slice(chunk);
                match serde_json::from_slice::<Value>(buf) {
                    Err(e) if e.is_eof() && buf.len() <= MAX_JSON => Vec::new(),
                    Err(_) => {
                        *state = None;
                        Vec::new()
                    }
                    Ok(v) => {
                        *state = None;
                        jsonrpc::from_value(v)
                            .map(|p| p.messages)
                            .unwrap_or_default()
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_split_across_chunks_and_sse_events() {
        let mut r = ResponseReader::new(false);
        assert!(r.feed(br#"{"jsonrpc":"2.0","id":3,"#).is_empty());
        let m = r.feed(br#""result":{}}"#);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].id(), Some(&serde_json::json!(3)));
        assert!(r.feed(b"trailing").is_empty(), "one document per body");

        let mut r = ResponseReader::new(true);
        let m = r.feed(b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n");
        assert_eq!(m.len(), 2);
        assert!(matches!(m[1], Message::Response { .. }));
    }

    #[test]
    fn gives_up_on_garbage_without_holding_anything() {
        let mut r = ResponseReader::new(false);
        assert!(r.feed(b"<html>").is_empty());
        assert!(r.feed(b"{}").is_empty());
    }
}
