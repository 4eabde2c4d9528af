//! The upstream client for plain-HTTP upstreams without TLS settings: hyper-util's pooled
//! HTTP/1.1 client (keep-alive to each upstream), used by the request path instead of reqwest.
//!
//! Why: the gateway benchmark's callgrind profile showed reqwest's own layers (three URL parses
//! per request, the redirect and retry policies, proxy matching, header copies) costing about as
//! much as the hyper client underneath. Upstreams with TLS settings (a CA, the device
//! certificate) keep their reqwest clients (`crate::translate`). Behaviour kept from reqwest:
//! `Host` from the upstream URL, the timeout covers the whole exchange (headers and body), and
//! the answer is a [`reqwest::Body`] so the rest of the response path is unchanged.
//!
//! One pool per thread: hyper drives each upstream connection in a task of the runtime that
//! opened it, so a pool shared by the published listener's per-core runtimes
//! (`crate::listener::ConnectionThreads`) would hand a request on one core a connection driven
//! on the other, and every exchange would cross threads twice.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::{Instant, Sleep};

/// Why an upstream exchange failed.
#[derive(Debug)]
pub enum UpstreamFailure {
    /// No answer (headers) within the upstream timeout.
    Timeout,
    /// Anything else: refused connection, malformed URL or answer.
    Unavailable(String),
}

impl std::fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamFailure::Timeout => f.write_str("upstream timeout"),
            UpstreamFailure::Unavailable(why) => f.write_str(why),
        }
    }
}

type PooledClient = Client<HttpConnector, Full<Bytes>>;

thread_local! {
    /// This thread's pool (see the module documentation).
    static POOL: PooledClient = pooled_client();
}

/// A client keeping idle connections for 60 s (as the reqwest client did).
fn pooled_client() -> PooledClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// The client for `http://` upstreams: each thread sends through a pool of its own (the
/// thread-local `POOL`), so the handle itself holds nothing.
#[derive(Clone, Copy, Default)]
pub struct PlainHttp;

impl PlainHttp {
    /// The client (its pools are made per thread on first use).
    pub fn new() -> PlainHttp {
        PlainHttp
    }

    /// Whether `url` is one this client serves (`http://`).
    pub fn serves(url: &str) -> bool {
        url.get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
    }

    /// Sends one request; `timeout` bounds the whole exchange, the response body included.
    ///
    /// # Errors
    /// Timeout before the response headers, or the upstream could not be reached.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response<reqwest::Body>, UpstreamFailure> {
        let uri: Uri = url
            .parse()
            .map_err(|e| UpstreamFailure::Unavailable(format!("upstream URL: {e}")))?;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let deadline = Instant::now() + timeout;
        let client = POOL.with(PooledClient::clone);
        let response = match tokio::time::timeout_at(deadline, client.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return Err(UpstreamFailure::Unavailable(err.to_string())),
            Err(_) => return Err(UpstreamFailure::Timeout),
        };
        let (head, body) = response.into_parts();
        let body = reqwest::Body::wrap(Deadline {
            inner: body,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
        });
        Ok(Response::from_parts(head, body))
    }
}

/// A response body that fails once the exchange's deadline has passed.
struct Deadline {
    inner: Incoming,
    sleep: Pin<Box<Sleep>>,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {}
            Poll::Ready(frame) => return Poll::Ready(frame.map(|f| f.map_err(Into::into))),
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err("upstream timeout reading the body".into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_are_served() {
        assert!(PlainHttp::serves("http://127.0.0.1:8080/a"));
        assert!(PlainHttp::serves("HTTP://app.internal/a"));
        assert!(!PlainHttp::serves("https://app.internal/a"));
        assert!(!PlainHttp::serves("http:/"));
    }

    #[tokio::test]
    async fn a_slow_body_fails_at_the_deadline_and_a_quick_one_arrives_whole() {
        use http_body_util::BodyExt as _;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            for slow in [false, true] {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                if slow {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                let _ = sock.write_all(b"!!").await;
            }
        });
        let client = PlainHttp::new();
        let url = format!("http://{addr}/x");
        let quick = client
            .send(
                Method::GET,
                &url,
                HeaderMap::new(),
                Bytes::new(),
                Duration::from_secs(5),
            )
            .await
            .expect("answer");
        let bytes = quick.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&bytes[..], b"ok!!");
        let slow = client
            .send(
                Method::GET,
                &url,
                HeaderMap::new(),
                Bytes::new(),
                Duration::from_millis(300),
            )
            .await
            .expect("headers in time");
        assert!(slow.into_body().collect().await.is_err());
    }
}
