//! The webhook sink: each batch is one POST of a JSON array of events; a 2xx answer
//! acknowledges it, anything else (other statuses, connection errors, timeouts) is retried by
//! the runner. Header values read from `header_files` are secrets: they are marked sensitive
//! and go nowhere but the request.

use std::{fs, path::PathBuf, time::Duration};

use bytes::Bytes;
use http::{
    header::{CONTENT_TYPE, USER_AGENT},
    HeaderMap, HeaderName, HeaderValue, Request, Uri,
};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use super::{
    config::WebhookSink,
    connector::{tls_config, Connector},
    error::ExportError,
    event::Event,
    runner::{Deliver, DeliveryError, Pace},
};

/// Most of a 2xx answer's body read (and ignored) so its connection can be reused.
const ACK_BODY_MAX: usize = 64 << 10;

pub(crate) struct Webhook {
    client: Client<Connector, Full<Bytes>>,
    uri: Uri,
    /// The URL without its query, for messages (a query may carry a token).
    endpoint: String,
    headers: HeaderMap,
    header_files: Vec<(HeaderName, PathBuf)>,
}

impl Webhook {
    pub fn new(cfg: &WebhookSink) -> Result<Self, ExportError> {
        let err = |m: String| ExportError::config(&cfg.id, m);
        let uri: Uri = cfg
            .url
            .parse()
            .map_err(|e| err(format!("url {:?}: {e}", cfg.url)))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => {
                return Err(err(format!(
                    "url {:?}: unknown scheme {other:?} (http or https)",
                    cfg.url
                )))
            }
            None => return Err(err(format!("url {:?}: not an absolute URL", cfg.url))),
        };
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| err(format!("url {:?}: no host", cfg.url)))?;
        if authority.as_str().contains('@') {
            return Err(err(
                "url: credentials in the URL are not allowed; use header_files".into(),
            ));
        }
        if cfg.ca_file.is_some() && !https {
            return Err(err("ca_file is set but the url is not https".into()));
        }
        if cfg.batch_max == 0 || cfg.timeout_ms == 0 || cfg.retry_initial_ms == 0 {
            return Err(err(
                "batch_max, timeout_ms and retry_initial_ms must be above 0".into(),
            ));
        }
        let endpoint = format!(
            "{}://{authority}{}",
            if https { "https" } else { "http" },
            uri.path()
        );

        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let name = header_name(name).map_err(err)?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| err(format!("headers.{name}: not a valid header value")))?;
            headers.insert(name, value);
        }
        let header_files = cfg
            .header_files
            .iter()
            .map(|(name, path)| Ok((header_name(name)?, path.clone())))
            .collect::<Result<Vec<_>, String>>()
            .map_err(err)?;
        // Read the secrets once now so a missing file is a start-up error.
        for (name, path) in &header_files {
            secret_header(name, path).map_err(err)?;
        }

        let tls = if https {
            Some(tls_config(cfg.ca_file.as_deref()).map_err(err)?)
        } else {
            None
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(Connector { tls });
        Ok(Self {
            client,
            uri,
            endpoint,
            headers,
            header_files,
        })
    }

    pub fn pace(cfg: &WebhookSink) -> Pace {
        Pace {
            batch_max: cfg.batch_max,
            timeout: Duration::from_millis(cfg.timeout_ms),
            retry_initial: Duration::from_millis(cfg.retry_initial_ms),
            retry_max: Duration::from_millis(cfg.retry_max_ms),
        }
    }

    fn request(&self, events: &[Event]) -> Result<Request<Full<Bytes>>, String> {
        let body = serde_json::to_vec(events).map_err(|e| e.to_string())?;
        let mut req = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, "mcp-enforcer-export/1")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let headers = req.headers_mut();
        for (name, value) in &self.headers {
            headers.insert(name, value.clone());
        }
        // Re-read for every batch: a rotated token takes effect without a restart.
        for (name, path) in &self.header_files {
            headers.insert(name, secret_header(name, path)?);
        }
        Ok(req)
    }
}

impl Deliver for Webhook {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), DeliveryError> {
        let req = self.request(events).map_err(DeliveryError::new)?;
        let resp = self.client.request(req).await.map_err(|e| {
            DeliveryError::new(format!("POST {}: {}", self.endpoint, error_chain(&e)))
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(DeliveryError::new(format!(
                "POST {}: answered {status}",
                self.endpoint
            )));
        }
        let _ = Limited::new(resp.into_body(), ACK_BODY_MAX).collect().await;
        Ok(())
    }
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?}: not a header name"))
}

/// The value of a secret header, from its file (surrounding whitespace and the final newline
/// dropped). Errors name the header and the file, never the content.
fn secret_header(name: &HeaderName, path: &PathBuf) -> Result<HeaderValue, String> {
    let text = fs::read_to_string(path)
        .map_err(|e| format!("header_files.{name} ({}): {e}", path.display()))?;
    let mut value = HeaderValue::from_str(text.trim()).map_err(|_| {
        format!(
            "header_files.{name} ({}): not a valid header value",
            path.display()
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// An error and its causes ("client error (Connect): Connection refused (os error 111)").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}
