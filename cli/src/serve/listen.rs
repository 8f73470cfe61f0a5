//! The accept loop: axum's router behind hyper's connection builder, with
//! the limits `axum::serve` does not set. A client must send its request
//! headers within `header_timeout`; a write that stays blocked for
//! `write_timeout` (a client that stopped reading) ends its connection; past
//! `max_connections` a connection gets a 503 and is closed. Shutdown stops
//! accepting, lets open requests finish for `shutdown_timeout`, then tells
//! the handlers to end what is still running (`ending`) and waits briefly.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use anyhow::Result;
use axum::Router;
use axum::response::IntoResponse;
use ferrum_engine::serving::Metrics;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Sleep;
use tower::ServiceExt;

use ferrum_api::ApiError;

pub struct Limits {
    pub header_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
}

/// How long the handlers get to end their requests once told to.
const ENDING_GRACE: Duration = Duration::from_secs(5);

pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    ending: watch::Sender<bool>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // a failed accept (out of file descriptors, a reset) ends one
                // connection, not the server; the pause keeps it from spinning
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let io = TokioIo::new(WriteTimeout::new(stream, limits.write_timeout));
        let builder = {
            let mut b = http1::Builder::new();
            b.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
            b
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(builder, io));
            continue;
        };
        let service = TowerToHyperService::new(
            app.clone().map_request(|req: hyper::Request<Incoming>| req.map(axum::body::Body::new)),
        );
        let mut stop = stop_rx.clone();
        let metrics = metrics.clone();
        Metrics::add(&metrics.open_connections, 1);
        tokio::spawn(async move {
            let conn = builder.serve_connection(io, service).with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(slot);
            metrics.open_connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
    let _ = stop_tx.send(true);
    // every connection task holds a receiver: wait until they have all ended
    drop(stop_rx);
    if tokio::time::timeout(limits.shutdown_timeout, stop_tx.closed()).await.is_err() {
        eprintln!("ending the requests still open after {:?}", limits.shutdown_timeout);
        let _ = ending.send(true);
        let _ = tokio::time::timeout(ENDING_GRACE, stop_tx.closed()).await;
    }
    Ok(())
}

/// A connection beyond the cap: its request gets a 503 and it is closed.
async fn refuse(mut builder: http1::Builder, io: TokioIo<WriteTimeout<TcpStream>>) {
    let service = hyper::service::service_fn(|_req: hyper::Request<Incoming>| async {
        let mut response = ApiError::too_many_connections().into_response();
        response.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
        Ok::<_, std::convert::Infallible>(response)
    });
    let _ = builder.keep_alive(false).serve_connection(io, service).await;
}

/// A stream whose writes fail with `TimedOut` once one has been blocked for
/// `timeout`: the peer stopped reading. Reads pass through untouched.
struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    blocked: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteTimeout<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        WriteTimeout { inner, timeout, blocked: None }
    }

    /// `Ready` results pass and reset the clock; `Pending` starts it, and an
    /// error once it runs out.
    fn watch<T>(&mut self, cx: &mut Context<'_>, polled: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.blocked = None;
            return polled;
        }
        let timeout = self.timeout;
        let sleep = self.blocked.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the client read nothing for {timeout:?}"),
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A peer that never reads: the writes fill the socket buffers, block,
    /// and fail after the timeout instead of waiting forever.
    #[tokio::test]
    async fn a_blocked_write_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut w = WriteTimeout::new(stream, Duration::from_millis(200));
        let chunk = vec![0u8; 1 << 16];
        let started = std::time::Instant::now();
        let err = loop {
            if let Err(e) = w.write_all(&chunk).await {
                break e;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the writes never blocked");
        };
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }
}
