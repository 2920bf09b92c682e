//! Responses the proxy writes itself: bodies, and JSON-RPC errors as HTTP responses.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use serde_json::Value;

use super::upstream::ProxyBody;
use crate::mcp::jsonrpc;

/// The message of a refusal, kept on the response for its receipt.
#[derive(Clone)]
pub struct Reason(pub String);

/// A JSON-RPC error as an HTTP response (SDKs relabel bodiless errors, so there is always a body).
pub fn rpc_error(
    status: StatusCode,
    id: &Value,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Response<ProxyBody> {
    let mut resp = Response::new(full(jsonrpc::error_body(id, code, message, data)));
    *resp.status_mut() = status;
    resp.extensions_mut().insert(Reason(message.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub fn full(b: Bytes) -> ProxyBody {
    Full::new(b).map_err(|never| match never {}).boxed()
}
