//! The upstream leg: TCP (from the connector's route source address) plus TLS verified by
//! rustls. An HTTP/1 client flow has a backend connection of its own ([`FlowUpstream`]);
//! HTTP/2 client flows and the admin's upstream DELETEs share the enforcer session's pool
//! (hyper-util's client). Each upstream socket is registered as a proxy leg of the agent it
//! serves, so a revocation destroys it too.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use enforcer_common::{ConnectRecord, LEG_UPSTREAM};
use http::{uri::PathAndQuery, Request, Response, Version};
use http_body_util::combinators::BoxBody;
use hyper::{body::Incoming, client::conn as hyper_conn, Uri};
use hyper_util::{
    client::legacy::{
        connect::{Connected, Connection},
        Client,
    },
    rt::{TokioExecutor, TokioIo},
};
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::{client::TlsStream, TlsConnector};
use tokio_util::either::Either;

use super::legs::{LegGuard, LegRegistry};
use crate::connectors::Connector;

pub type ProxyBody = BoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type UpstreamClient = Client<UpstreamConnector, ProxyBody>;

/// The backend flow a response came over ("local addr -> peer addr"), for receipts: hyper-util
/// copies it from the connection into each response's extensions.
#[derive(Clone, Debug)]
pub struct BackendFlow(pub crate::text::Text);

/// Where and how to reach one session's backend.
#[derive(Clone)]
pub struct UpstreamConnector {
    pub host: String,
    pub port: u16,
    /// TLS toward the backend, with the name to send as SNI and verify.
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    pub connector: Arc<Connector>,
    pub legs: LegRegistry,
    pub record: ConnectRecord,
    pub connect_timeout: Duration,
}

pub fn client(c: UpstreamConnector) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(c)
}

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = UpstreamIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<UpstreamIo>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.open().await })
    }
}

impl UpstreamConnector {
    /// A new backend connection within the connect timeout; the connector's route status
    /// records the outcome.
    async fn open(&self) -> io::Result<UpstreamIo> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.connect_timeout, self.connect()).await;
        let result = result.unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "upstream connect timed out",
            ))
        });
        match &result {
            Ok(_) => self.connector.record_ok(started.elapsed()),
            Err(e) => self.connector.record_error(&e.to_string()),
        }
        result
    }

    /// A backend connection driven by a task of its own, for one client flow.
    async fn open_dedicated(&self) -> Result<Dedicated, BoxError> {
        let io = self.open().await?;
        let flow_id = io.flow_id.clone();
        let sender = if io.h2 {
            let (send, conn) = hyper_conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Sender::Http2(send)
        } else {
            let (send, conn) = hyper_conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            Sender::Http1(send)
        };
        Ok(Dedicated { sender, flow_id })
    }

    async fn connect(&self) -> io::Result<UpstreamIo> {
        let addr = resolve(&self.host, self.port).await?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(bind) = self.connector.bind {
            socket.bind(SocketAddr::new(bind, 0))?;
        }
        let tcp = socket.connect(addr).await?;
        tcp.set_nodelay(true)?;
        let flow_id = match tcp.local_addr() {
            Ok(local) => format!("{local}->{addr}"),
            Err(_) => format!("?->{addr}"),
        };
        let leg = self.legs.register(&tcp, &self.record, LEG_UPSTREAM)?;
        let io = match &self.tls {
            None => Either::Left(tcp),
            Some((config, name)) => {
                let tls = TlsConnector::from(config.clone())
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| {
                        io::Error::other(format!("upstream TLS with {}: {e}", name.to_str()))
                    })?;
                Either::Right(Box::new(tls))
            }
        };
        let h2 = matches!(&io, Either::Right(t) if t.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_H2));
        Ok(UpstreamIo {
            io: TokioIo::new(io),
            h2,
            flow_id: BackendFlow(flow_id.into()),
            _leg: leg,
        })
    }
}

async fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    if let Ok(ip) = host.parse() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} does not resolve")))
}

/// Plain TCP or TLS toward the backend.
type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// One upstream connection; its PROXY_LEGS entry is removed when it closes.
pub struct UpstreamIo {
    io: TokioIo<Stream>,
    h2: bool,
    flow_id: BackendFlow,
    _leg: LegGuard,
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        let c = Connected::new().extra(self.flow_id.clone());
        if self.h2 {
            c.negotiated_h2()
        } else {
            c
        }
    }
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The backend connection of one HTTP/1 client flow. Its requests come one at a time, so one
/// upstream connection carries them all, without the pool's checkout and return per call
/// (measured: about 4% of the proxy's CPU per call). Opened on first use and again once it
/// closes; closed when the client flow ends (its leg goes with it).
#[derive(Default)]
pub struct FlowUpstream {
    conn: std::sync::Mutex<Option<Dedicated>>,
}

struct Dedicated {
    sender: Sender,
    flow_id: BackendFlow,
}

enum Sender {
    Http1(hyper_conn::http1::SendRequest<ProxyBody>),
    Http2(hyper_conn::http2::SendRequest<ProxyBody>),
}

/// A request that failed, and the request itself when none of it was sent.
type Unsent = (hyper::Error, Option<Request<ProxyBody>>);

impl FlowUpstream {
    /// Send `req` (absolute URI) over this flow's connection. A kept connection the server
    /// closed while it sat idle fails before any byte of the request left: the request then
    /// goes once more over a fresh connection (as the pool does).
    pub async fn request(
        &self,
        upstream: &UpstreamConnector,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, BoxError> {
        let kept = self.conn.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut fresh = kept.is_none();
        // Opening (connect, TLS handshake) is rare and its future large: boxed, so the future
        // of every request does not carry (and move) its state.
        let mut conn = match kept {
            Some(c) => c,
            None => Box::pin(upstream.open_dedicated()).await?,
        };
        loop {
            match conn.send(req).await {
                Ok(mut resp) => {
                    resp.extensions_mut().insert(conn.flow_id.clone());
                    *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
                    return Ok(resp);
                }
                Err((_, Some(unsent))) if !fresh => {
                    req = unsent;
                    conn = Box::pin(upstream.open_dedicated()).await?;
                    fresh = true;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
}

impl Dedicated {
    async fn send(&mut self, mut req: Request<ProxyBody>) -> Result<Response<Incoming>, Unsent> {
        match &mut self.sender {
            Sender::Http1(send) => {
                if let Err(e) = send.ready().await {
                    return Err((e, Some(req)));
                }
                // HTTP/1 request lines carry the path (origin form); Host names the server.
                let path = req
                    .uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/"));
                *req.uri_mut() = Uri::from(path);
                send.try_send_request(req).await.map_err(unsent)
            }
            Sender::Http2(send) => {
                if let Err(e) = send.ready().await {
                    return Err((e, Some(req)));
                }
                *req.version_mut() = Version::HTTP_2;
                send.try_send_request(req).await.map_err(unsent)
            }
        }
    }
}

fn unsent(mut e: hyper_conn::TrySendError<Request<ProxyBody>>) -> Unsent {
    let req = e.take_message();
    (e.into_error(), req)
}
