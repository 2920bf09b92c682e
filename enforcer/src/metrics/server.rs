//! The scrape endpoint: `GET /metrics`, HTTP/1.1, nothing else.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{HeaderValue, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, task::JoinSet};

use super::recorder::Metrics;

pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A client that sends no complete request head in this time is dropped, so idle or
/// slow connections cannot pile up.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Back-off after a failed accept (e.g. out of file descriptors) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves scrapes on `listener` until `shutdown` completes, then drops open connections.
/// Accept errors are logged and retried, never fatal: metrics must not take the daemon down.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connection tasks so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let metrics = metrics.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| {
                            std::future::ready(Ok::<_, Infallible>(respond(&metrics, &req)))
                        });
                        let served = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        if let Err(e) = served {
                            tracing::debug!(error = %e, "metrics connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    connections.shutdown().await;
}

fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"not found\n")));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    }
    let mut resp = Response::new(Full::new(Bytes::from(metrics.render())));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_OPENMETRICS),
    );
    resp
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Empty};
    use tokio::{net::TcpStream, sync::oneshot};

    use super::*;
    use crate::metrics::{config::MetricsConfig, testutil};

    /// One request over a fresh HTTP/1.1 connection: (status, content type, body).
    async fn request(
        addr: std::net::SocketAddr,
        method: Method,
        path: &str,
    ) -> (u16, String, String) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn serves_metrics_and_404s_the_rest() {
        let metrics = Metrics::new("9.9.9", &MetricsConfig::default());
        metrics.session_started();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, metrics, async {
            let _ = stopped.await;
        }));

        let (status, content_type, body) = request(addr, Method::GET, "/metrics").await;
        assert_eq!(status, 200);
        assert_eq!(content_type, CONTENT_TYPE_OPENMETRICS);
        let samples = testutil::parse(&body);
        assert_eq!(
            testutil::value(&samples, "enforcer_sessions_live", &[]),
            Some(1.0)
        );

        assert_eq!(request(addr, Method::GET, "/other").await.0, 404);
        assert_eq!(request(addr, Method::POST, "/metrics").await.0, 404);

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve stops on shutdown")
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    }
}
