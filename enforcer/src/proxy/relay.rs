//! Uninspected tunnel for destinations no connector matches, when configured to tunnel.

use std::net::SocketAddr;

use enforcer_common::{ConnectRecord, LEG_UPSTREAM};
use tokio::net::TcpStream;
use tracing::{info, warn};

use super::ProxyContext;

pub async fn tunnel(
    mut client: TcpStream,
    dest: SocketAddr,
    rec: &ConnectRecord,
    ctx: &ProxyContext,
) {
    let mut upstream =
        match tokio::time::timeout(ctx.connect_timeout, TcpStream::connect(dest)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return warn!(error = %e, "tunnel: upstream connect failed"),
            Err(_) => {
                return warn!(timeout = ?ctx.connect_timeout, "tunnel: upstream connect timed out")
            }
        };
    let _leg = match ctx.legs.register(&upstream, rec, LEG_UPSTREAM) {
        Ok(g) => g,
        Err(e) => return warn!(error = %e, "refused: cannot register the upstream leg for kill"),
    };
    info!(
        event = "tunnel",
        "connection tunnelled without inspection (unknown destination)"
    );
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((to_upstream, to_client)) => info!(to_upstream, to_client, "tunnel closed"),
        Err(e) => info!(error = %e, "tunnel ended"),
    }
}
