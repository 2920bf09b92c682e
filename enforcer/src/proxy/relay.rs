//! One redirected connection: identify it, relay it, unregister its legs when done.

use std::{net::SocketAddr, sync::Arc};

use enforcer_common::{LEG_CLIENT, LEG_UPSTREAM};
use tokio::net::TcpStream;
use tracing::{info, info_span, warn, Instrument as _};

use super::ProxyContext;
use crate::kernel::addr::{canonical, from_words};

pub async fn handle(client: TcpStream, peer: SocketAddr, ctx: Arc<ProxyContext>) {
    let Ok(local) = client.local_addr() else {
        return;
    };
    let Some(rec) = ctx.flows.lookup(peer, local) else {
        // Not an agent connection the kernel redirected: no identity, no service.
        warn!(%peer, %local, "refused: no kernel record for this connection");
        return;
    };
    let actor = ctx.identity.resolve(&rec);
    let dest = SocketAddr::new(from_words(rec.orig_ip), rec.orig_port);
    let span = info_span!(
        "flow",
        agent = %actor.agent,
        instance = %actor.instance,
        user = %actor.user,
        pid = actor.pid,
        exe = %actor.exe,
        dest = %dest,
    );
    async move {
        if ctx
            .own_addrs
            .iter()
            .any(|a| canonical(*a) == canonical(dest))
        {
            warn!("refused: agent dialled the proxy directly");
            return;
        }
        let _client_leg = match ctx.legs.register(&client, &rec, LEG_CLIENT) {
            Ok(g) => g,
            Err(e) => {
                warn!(error = %e, "refused: cannot register the client leg for kill");
                return;
            }
        };
        let upstream =
            match tokio::time::timeout(ctx.connect_timeout, TcpStream::connect(dest)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    warn!(error = %e, "upstream connect failed");
                    return;
                }
                Err(_) => {
                    warn!(timeout = ?ctx.connect_timeout, "upstream connect timed out");
                    return;
                }
            };
        let _upstream_leg = match ctx.legs.register(&upstream, &rec, LEG_UPSTREAM) {
            Ok(g) => g,
            Err(e) => {
                warn!(error = %e, "refused: cannot register the upstream leg for kill");
                return;
            }
        };
        info!("relaying");
        let (mut client, mut upstream) = (client, upstream);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((to_upstream, to_client)) => info!(to_upstream, to_client, "flow closed"),
            Err(e) => info!(error = %e, "flow ended"),
        }
    }
    .instrument(span)
    .await
}
