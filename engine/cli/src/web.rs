//! Plain HTTP(S) for a live run: the client facts use (a Prometheus query) and the notifier
//! that prints every notify and page step and, when asked, posts it to a webhook.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use http_body_util::BodyExt as _;
use runbook_core::effects::{
    EffectError, EffectResult, Http, HttpResponse, Notification, NotificationKind, Notifier,
};

type Pooled<C> = hyper_util::client::legacy::Client<C, http_body_util::Full<bytes::Bytes>>;

/// Plain HTTP(S) for facts (a Prometheus query) and the notification webhook: one pooled
/// client, TLS by rustls with the system's roots. A machine (or a distroless image) with no
/// CA certificates still gets plain HTTP; an `https://` URL then says why it cannot be used.
#[derive(Clone)]
pub struct WebClient {
    https: Option<
        Pooled<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>>,
    >,
    http: Pooled<hyper_util::client::legacy::connect::HttpConnector>,
    no_tls: Option<String>,
    timeout: Duration,
}

impl WebClient {
    pub fn new() -> Self {
        let builder =
            || hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
        let (https, no_tls) = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(roots) => (
                Some(builder().build(roots.https_or_http().enable_http1().build())),
                None,
            ),
            Err(error) => (None, Some(error.to_string())),
        };
        Self {
            https,
            http: builder().build(hyper_util::client::legacy::connect::HttpConnector::new()),
            no_tls,
            timeout: Duration::from_secs(30),
        }
    }

    async fn send(
        &self,
        request: http::Request<http_body_util::Full<bytes::Bytes>>,
    ) -> EffectResult<HttpResponse> {
        let uri = request.uri().clone();
        let exchange = async {
            let sent = match (&self.https, uri.scheme_str()) {
                (Some(https), _) => https.request(request).await,
                (None, Some("https")) => {
                    return Err(EffectError::Unavailable(format!(
                        "{uri}: no CA certificates to check the server with ({})",
                        self.no_tls.as_deref().unwrap_or("none found")
                    )))
                }
                (None, _) => self.http.request(request).await,
            };
            let response = sent.map_err(|e| {
                EffectError::Unavailable(format!(
                    "{uri}: {}",
                    runbook_kube::transport::root_cause(&e)
                ))
            })?;
            let status = response.status().as_u16();
            let mut headers: BTreeMap<String, String> = BTreeMap::new();
            for (name, value) in response.headers() {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                headers
                    .entry(name.as_str().to_ascii_lowercase())
                    .and_modify(|joined| {
                        joined.push_str(", ");
                        joined.push_str(&value);
                    })
                    .or_insert(value);
            }
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| EffectError::Unavailable(format!("{uri}: {e}")))?
                .to_bytes();
            Ok(HttpResponse {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                EffectError::Unavailable(format!(
                    "{uri}: no answer within {}",
                    humantime::format_duration(self.timeout)
                ))
            })?
    }
}

#[async_trait]
impl Http for WebClient {
    async fn get(
        &self,
        url: &str,
        query: &BTreeMap<String, String>,
        headers: &BTreeMap<String, String>,
    ) -> EffectResult<HttpResponse> {
        let mut full = url.to_owned();
        if !query.is_empty() {
            let mut serializer = form_urlencoded::Serializer::new(String::new());
            for (name, value) in query {
                serializer.append_pair(name, value);
            }
            full.push(if url.contains('?') { '&' } else { '?' });
            full.push_str(&serializer.finish());
        }
        let mut builder = http::Request::builder()
            .method(http::Method::GET)
            .uri(&full);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .map_err(|e| EffectError::Invalid(format!("{url}: {e}")))?;
        self.send(request).await
    }
}

/// Notifications on the terminal (stderr), and to a webhook when one is given.
pub struct PrintedNotifier {
    webhook: Option<String>,
    web: WebClient,
}

impl PrintedNotifier {
    pub fn new(webhook: Option<String>, web: WebClient) -> Self {
        Self { webhook, web }
    }
}

#[async_trait]
impl Notifier for PrintedNotifier {
    async fn send(&self, notification: &Notification) -> EffectResult<()> {
        let label = match notification.kind {
            NotificationKind::Notify => "notify".to_owned(),
            NotificationKind::Page => format!(
                "PAGE{}",
                notification
                    .severity
                    .as_ref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            ),
        };
        let channel = notification
            .channel
            .as_ref()
            .map(|c| format!(" {c}"))
            .unwrap_or_default();
        eprintln!("[{label}{channel}] {}", notification.message);
        let Some(url) = &self.webhook else {
            return Ok(());
        };
        let body = serde_json::to_vec(notification).unwrap_or_default();
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| EffectError::Invalid(format!("--notify-webhook {url}: {e}")))?;
        let response = self.web.send(request).await?;
        if (200..300).contains(&response.status) {
            Ok(())
        } else {
            Err(EffectError::Unavailable(format!(
                "--notify-webhook {url} answered HTTP {}",
                response.status
            )))
        }
    }
}
