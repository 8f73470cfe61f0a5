//! The accept loop: axum's router behind hyper's connection builder, so a
//! client must send its request headers within `header_timeout` (hyper
//! closes the connection otherwise; `axum::serve` sets no timer, so a client
//! sending half a header held its connection forever). Shutdown stops
//! accepting, asks every open connection to finish its request, and waits.

use std::time::Duration;

use anyhow::Result;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // a failed accept (out of file descriptors, a reset) ends one connection, not the server
                Err(_) => continue,
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(
            app.clone().map_request(|req: hyper::Request<Incoming>| req.map(axum::body::Body::new)),
        );
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    let _ = stop_tx.send(true);
    // every connection task holds a receiver: wait until they have all ended
    drop(stop_rx);
    stop_tx.closed().await;
    Ok(())
}
