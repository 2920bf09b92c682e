//! The webhook sink against a real hyper server on 127.0.0.1: batches, an outage with backlog
//! alarm and in-order catch-up, retried 500s, secret headers kept secret, HTTPS with a CA file.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Arc, Mutex,
    },
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_rustls::TlsAcceptor;

use super::support::*;
use crate::export::{event::SCHEMA, ExportConfig, Exporter};

const TOKEN: &str = "Bearer s3cr3t-token-XYZ";

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    events: Mutex<Vec<Value>>,
    authorization: Mutex<Vec<String>>,
    requests: AtomicUsize,
    batch_sizes: Mutex<Vec<usize>>,
    /// Answer this many requests with 500 before accepting again.
    fail_next: AtomicUsize,
}

impl Seen {
    fn seqs(&self, kind: &str) -> Vec<u64> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    }
}

/// A webhook receiver; `stop` closes its listener and every open connection.
struct Receiver {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(addr: &str, seen: Arc<Seen>, tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it closes every connection too.
            let mut conns = JoinSet::new();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (seen, tls) = (seen.clone(), tls.clone());
                conns.spawn(async move {
                    let service = service_fn(move |req| handle(req, seen.clone()));
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        None => http.serve_connection(TokioIo::new(tcp), service).await,
                        Some(tls) => {
                            let Ok(stream) = tls.accept(tcp).await else {
                                return;
                            };
                            http.serve_connection(TokioIo::new(stream), service).await
                        }
                    };
                });
            }
        });
        Self { addr, task }
    }

    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    seen: Arc<Seen>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    seen.requests.fetch_add(1, SeqCst);
    assert_eq!(req.headers()["content-type"], "application/json");
    if let Some(v) = req.headers().get("authorization") {
        seen.authorization
            .lock()
            .unwrap()
            .push(v.to_str().unwrap().to_string());
    }
    let body = req.into_body().collect().await?.to_bytes();
    let reply = |status| {
        Ok(Response::builder()
            .status(status)
            .body(Full::default())
            .unwrap())
    };
    if seen
        .fail_next
        .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return reply(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let batch: Vec<Value> = serde_json::from_slice(&body).unwrap();
    seen.batch_sizes.lock().unwrap().push(batch.len());
    seen.events.lock().unwrap().extend(batch);
    reply(StatusCode::OK)
}

fn config(dir: &TempDir, url: &str, extra: &str) -> ExportConfig {
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    toml::from_str(&format!(
        "[[webhook]]\nid = \"siem\"\nurl = {url:?}\nfrom = \"beginning\"\n\
         header_files = {{ Authorization = {token:?} }}\nheaders = {{ X-Source = \"test\" }}\n\
         batch_max = 5\ntimeout_ms = 2000\nretry_initial_ms = 20\nretry_max_ms = 200\n{extra}"
    ))
    .unwrap()
}

#[tokio::test]
async fn outage_alarm_and_catch_up_in_order() {
    let (logs, _guard) = Logs::capture();
    let dir = TempDir::new("webhook");
    let seen = Arc::new(Seen::default());
    let receiver = Receiver::start("127.0.0.1:0", seen.clone(), None).await;
    let addr = receiver.addr;
    let config = config(
        &dir,
        &format!("http://{addr}/ingest?token=q"),
        "max_backlog = 10",
    );
    let (receipts, admin) = (MemSource::new("receipt"), MemSource::new("admin"));
    let exporter = Exporter::start(&config, dir.path(), sources(&receipts, &admin)).unwrap();

    // Under max_backlog even if none is delivered before the last is written.
    for _ in 0..8 {
        receipts.receipt("ok");
        exporter.notify();
    }
    admin.admin("revoke");
    exporter.notify();
    wait_for("9 events received", 5, || {
        seen.events.lock().unwrap().len() == 9
    })
    .await;
    assert!(seen
        .batch_sizes
        .lock()
        .unwrap()
        .iter()
        .all(|&n| (1..=5).contains(&n)));
    let event = seen.events.lock().unwrap()[0].clone();
    assert_eq!(event["schema"], SCHEMA);
    assert_eq!(event["record"]["id"], "R000000000001");

    // The receiver goes down while 20 receipts and an admin record are written.
    receiver.stop().await;
    for _ in 0..20 {
        receipts.receipt("denied");
        exporter.notify();
    }
    admin.admin("reinstate");
    exporter.notify();
    wait_for("the backlog alarm", 5, || exporter.status()[0].alarm).await;
    wait_for("failures", 5, || exporter.status()[0].failures >= 2).await;
    let status = exporter.status().remove(0);
    assert_eq!(status.sources[0].backlog, 20);
    assert_eq!(status.sources[1].backlog, 1);
    assert_eq!(status.alarms_raised, 1);
    let error = status.last_error.clone().unwrap();
    assert!(
        error.contains(&format!("POST http://{addr}/ingest")),
        "{error}"
    );
    assert!(!error.contains("token=q"), "{error}");

    // Back on the same port: every missing event arrives, in order.
    let receiver = Receiver::start(&addr.to_string(), seen.clone(), None).await;
    wait_for("catch-up", 10, || seen.seqs("receipt").last() == Some(&28)).await;
    wait_for("admin catch-up", 5, || {
        seen.seqs("admin").last() == Some(&2)
    })
    .await;
    assert_no_gaps(&seen.seqs("receipt"), 28);
    assert_no_gaps(&seen.seqs("admin"), 2);
    wait_for("alarm cleared", 5, || !exporter.status()[0].alarm).await;
    // The receiver has the last batch a moment before the exporter reads its answer and
    // moves the cursor.
    wait_for("cursor at the end", 5, || {
        exporter.status()[0].sources[0].cursor == 28
    })
    .await;
    let status = exporter.status().remove(0);
    assert_eq!(status.alarms_raised, 1);
    assert_eq!(
        (status.sources[0].backlog, status.sources[0].cursor),
        (0, 28)
    );

    // The secret reached the receiver on every request and nowhere else.
    let auth = seen.authorization.lock().unwrap().clone();
    assert_eq!(auth.len(), seen.requests.load(SeqCst));
    assert!(auth.iter().all(|a| a == TOKEN));
    let status_json = serde_json::to_string(&exporter.status()).unwrap();
    let debug = format!("{config:?} {:?}", exporter.status());
    exporter.shutdown().await;
    receiver.stop().await;
    let logs = logs.text();
    assert_eq!(logs.matches("export backlog alarm").count(), 1, "{logs}");
    assert!(logs.contains("sink=siem kind=\"webhook\""), "{logs}");
    for output in [&logs, &status_json, &debug] {
        assert!(!output.contains("s3cr3t"), "secret leaked: {output}");
    }
}

#[tokio::test]
async fn server_errors_are_retried() {
    let (logs, _guard) = Logs::capture();
    let dir = TempDir::new("webhook500");
    let seen = Arc::new(Seen::default());
    seen.fail_next.store(2, SeqCst);
    let receiver = Receiver::start("127.0.0.1:0", seen.clone(), None).await;
    let config = config(&dir, &format!("http://{}/", receiver.addr), "");
    let (receipts, admin) = (MemSource::new("receipt"), MemSource::new("admin"));
    let exporter = Exporter::start(&config, dir.path(), sources(&receipts, &admin)).unwrap();
    for _ in 0..3 {
        receipts.receipt("ok");
    }
    exporter.notify();
    wait_for("3 events", 5, || seen.events.lock().unwrap().len() == 3).await;
    assert_eq!(seen.seqs("receipt"), vec![1, 2, 3]);
    assert_eq!(seen.requests.load(SeqCst), 3);
    let status = exporter.status().remove(0);
    assert_eq!((status.delivered, status.failures), (3, 2));
    let error = status.last_error.clone().unwrap();
    assert!(error.contains("500 Internal Server Error"), "{error}");
    let debug = format!("{status:?}");
    exporter.shutdown().await;
    receiver.stop().await;
    let logs = logs.text();
    assert!(logs.contains("500 Internal Server Error"), "{logs}");
    assert!(!logs.contains("s3cr3t") && !debug.contains("s3cr3t"));
}

#[tokio::test]
async fn https_with_a_ca_file() {
    let dir = TempDir::new("https");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, cert.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let seen = Arc::new(Seen::default());
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let receiver = Receiver::start("127.0.0.1:0", seen.clone(), Some(acceptor)).await;
    let url = format!("https://localhost:{}/in", receiver.addr.port());
    let (receipts, admin) = (MemSource::new("receipt"), MemSource::new("admin"));

    // Without the CA file the certificate is not trusted: failures, nothing delivered.
    let untrusted = TempDir::new("https-untrusted");
    let exporter = Exporter::start(
        &config(&untrusted, &url, ""),
        untrusted.path(),
        sources(&receipts, &admin),
    )
    .unwrap();
    receipts.receipt("ok");
    exporter.notify();
    wait_for("a TLS failure", 5, || exporter.status()[0].failures > 0).await;
    let error = exporter.status()[0].last_error.clone().unwrap();
    assert!(error.contains("certificate"), "{error}");
    exporter.shutdown().await;

    let config = config(&dir, &url, &format!("ca_file = {ca_file:?}"));
    let exporter = Exporter::start(&config, dir.path(), sources(&receipts, &admin)).unwrap();
    wait_for("delivery over TLS", 5, || seen.seqs("receipt") == vec![1]).await;
    exporter.shutdown().await;
    receiver.stop().await;
}
