//! The `/metrics` listener: HTTP/1.1 with the same connection limits as the
//! gRPC listeners, and a timeout on reading each request's headers, so a
//! slow or silent client cannot hold the scrape endpoint.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use super::listener::{accept_with_backoff, Accept as _, ConnectionTable};

/// Longest a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    table: Arc<ConnectionTable>,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let io = tokio::select! {
            io = accept_with_backoff(|| listener.accept_io(), "metrics") => io,
            () = &mut shutdown => return,
        };
        let Ok(guarded) = table.admit(io) else {
            continue;
        };
        let activity = tonic::transport::server::Connected::connect_info(&guarded);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let busy = activity.begin();
                let app = app.clone();
                async move {
                    let response = app.oneshot(req).await;
                    drop(busy);
                    response
                }
            });
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(guarded), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "metrics connection closed");
            }
        });
    }
}
