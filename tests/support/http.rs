//! Small blocking HTTP clients: tests and benches stay synchronous, so each client brings a
//! runtime of its own. A call that gets no answer gives status 0 and the error as the body.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

/// How long a call waits for its answer unless told otherwise.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A client on its own one-thread runtime; it keeps its connections between calls.
pub struct Client {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Default for Client {
    fn default() -> Client {
        Client::new()
    }
}

impl Client {
    /// A client that follows redirects.
    pub fn new() -> Client {
        rollguard::net::install_crypto_provider();
        Self::with(reqwest::Client::new())
    }

    /// A client that answers redirects instead of following them (login pages, cookies).
    pub fn no_redirects() -> Client {
        rollguard::net::install_crypto_provider();
        Self::with(
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        )
    }

    fn with(client: reqwest::Client) -> Client {
        let rt = runtime();
        Client { rt, client }
    }

    /// Sends the request `build` makes: status, headers and body text.
    pub fn send(
        &self,
        build: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> (u16, HeaderMap, String) {
        let request = build(&self.client);
        self.rt.block_on(async {
            match request.send().await {
                Ok(resp) => {
                    let code = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    (code, headers, resp.text().await.unwrap_or_default())
                }
                Err(e) => (0, HeaderMap::new(), e.to_string()),
            }
        })
    }

    /// A call with an optional JSON body and bearer token: status and body text.
    pub fn text(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
        token: Option<&str>,
        timeout: Duration,
    ) -> (u16, String) {
        let (code, _, text) = self.send(|c| {
            let mut r = c
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                    url,
                )
                .timeout(timeout);
            if let Some(b) = body {
                r = r.json(b);
            }
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r
        });
        (code, text)
    }
}

/// A body as JSON, or as a JSON string when it is not JSON.
pub fn json_or_string(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// One call on a client of its own: status and the body as JSON.
pub fn http(method: &str, url: &str, body: Option<&Value>, token: Option<&str>) -> (u16, Value) {
    let (code, text) = Client::new().text(method, url, body, token, TIMEOUT);
    (code, json_or_string(text))
}

/// The same with a timeout of the caller's (status 0: no answer within it).
pub fn http_within(
    method: &str,
    url: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> (u16, Value) {
    let (code, text) = Client::new().text(method, url, body, None, timeout);
    (code, json_or_string(text))
}

pub fn get(url: &str) -> (u16, Value) {
    http("GET", url, None, None)
}

pub fn post(url: &str, body: &Value) -> (u16, Value) {
    http("POST", url, Some(body), None)
}

/// A GET with a short timeout on a thread of its own, so it can be called from synchronous
/// code and from inside a test's runtime alike; `None` when nothing answered.
pub fn blocking_get(url: &str) -> Option<(u16, String)> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let (code, text) = Client::new().text("GET", url, None, None, Duration::from_secs(5));
            (code != 0).then_some((code, text))
        })
        .join()
        .ok()
        .flatten()
    })
}

/// Serves `app` on `addr` (`127.0.0.1:0`: any free port) from the current runtime; the
/// address it listens on.
pub async fn serve_at(addr: &str, app: axum::Router) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    addr
}

/// Serves `app` on a free loopback port from the current runtime.
pub async fn serve(app: axum::Router) -> std::net::SocketAddr {
    serve_at("127.0.0.1:0", app).await
}

/// A runtime of its own (one worker thread), for servers that blocking tests talk to.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}
