//! What rollguard notifies, received for real over HTTP on 127.0.0.1:0.
//!
//! [`Fake`]: local stand-ins for the third parties (chat, PagerDuty, Alertmanager, Standard
//! Webhooks): one axum server that checks each request against the shape its service
//! documents (required fields, types, size limits from rollguard's one table of documented
//! limits, escaping) and answers like the service does
//! (400 with the reason when the shape is wrong). Nothing of rollguard is faked: requests come
//! from the real notifier code.
//!
//! [`Recorder`]: a webhook destination that keeps every JSON body, for blocking tests.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rollguard::action::notify::Notifiers;
use rollguard::action::notify::limits::{self, Limit, Unit};
use rollguard::config::{NotifierConfig, NotifierKind};
use rollguard::events::{Notice, NoticeKind, Subject};
use rollguard::store::{OutboxItem, SqliteStore, Store};
use rollguard::telemetry::Telemetry;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: tokio::time::Instant,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A scripted answer (used before the default success answer).
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering (a slow service).
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn body(mut self, b: &str) -> Reply {
        self.body = b.into();
        self
    }

    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
    errors: Mutex<Vec<String>>,
    script: Mutex<VecDeque<Reply>>,
    /// Every answer waits this long (a slow destination).
    slow: Mutex<Duration>,
}

/// The fake services.
#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    state: Arc<State>,
}

/// HMAC secret the webhook fake verifies signatures with.
/// A Standard Webhooks secret (`whsec_` + base64 of the key).
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

impl Fake {
    pub async fn start() -> Fake {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Fake {
        let state = Arc::new(State::default());
        let st = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let st = st.clone();
                async move { handle(st, method, uri, headers, body).await }
            },
        );
        let addr = super::http::serve_at(addr, app).await;
        Fake { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    pub fn set_slow(&self, d: Duration) {
        *self.state.slow.lock().unwrap() = d;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn received_at(&self, prefix: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }

    pub fn errors(&self) -> Vec<String> {
        self.state.errors.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests under `prefix` arrived.
    pub async fn wait_for(&self, prefix: &str, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received_at(prefix);
            if got.len() >= n || tokio::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn handle(
    st: Arc<State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = Received {
        at: tokio::time::Instant::now(),
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        headers,
        body: body.to_vec(),
    };
    let slow = *st.slow.lock().unwrap();
    if !slow.is_zero() {
        tokio::time::sleep(slow).await;
    }
    let verdict = validate(&r);
    st.received.lock().unwrap().push(r.clone());
    if let Err(e) = &verdict {
        st.errors.lock().unwrap().push(format!("{}: {e}", r.path));
        return (StatusCode::BAD_REQUEST, e.clone()).into_response();
    }
    let scripted = st.script.lock().unwrap().pop_front();
    if let Some(reply) = scripted {
        tokio::time::sleep(reply.delay).await;
        let mut resp = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
        for (k, v) in reply.headers {
            resp.headers_mut().insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        return resp;
    }
    success(&r)
}

/// What each service answers when it accepts a message.
fn success(r: &Received) -> Response {
    let seg = r.path.split('/').nth(1).unwrap_or("");
    match seg {
        "slack" | "mattermost" => (StatusCode::OK, "ok").into_response(),
        "teams" => StatusCode::ACCEPTED.into_response(),
        // With `?wait=true` Discord answers the created message (without it, 204 and no
        // error even for a message it did not keep).
        "discord" => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"id": "1234567890", "type": 0, "content": ""})),
        )
            .into_response(),
        "gchat" => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"name": "spaces/AAA/messages/BBB"})),
        )
            .into_response(),
        "pd" => {
            let dedup = r.json()["dedup_key"].clone();
            (StatusCode::ACCEPTED, axum::Json(serde_json::json!({"status": "success", "message": "Event processed", "dedup_key": dedup}))).into_response()
        }
        "am" => StatusCode::OK.into_response(),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

/// Checks a request against its service's documented payload.
pub fn validate(r: &Received) -> Result<(), String> {
    if r.path.starts_with("/hook") {
        // HTTP hooks: any method, any JSON the hook's template produced.
        return serde_json::from_slice::<Value>(&r.body)
            .map(drop)
            .map_err(|e| format!("body is not JSON: {e}"));
    }
    if r.method != "POST" {
        return Err(format!("expected POST, got {}", r.method));
    }
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(format!("Content-Type must be application/json, got `{ct}`"));
    }
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("body is not JSON: {e}"))?;
    let seg = r.path.split('/').nth(1).unwrap_or("");
    match seg {
        "slack" => slack(&v),
        "mattermost" => mattermost(&v),
        "teams" => teams(&v, r.body.len()),
        "discord" if !r.query.split('&').any(|p| p == "wait=true") => {
            Err("Discord webhooks must be posted with ?wait=true (else a dropped message is not an error)".into())
        }
        "discord" => discord(&v),
        "gchat" => google_chat(&v, &r.query),
        "pd" if r.path.ends_with("/v2/change/enqueue") => pagerduty_change(&v),
        "pd" if r.path.ends_with("/v2/enqueue") => pagerduty_event(&v),
        "am" if r.path.ends_with("/api/v2/alerts") => alertmanager(&v),
        "webhook" => webhook(&v, r),
        _ => Err(format!("no such endpoint {}", r.path)),
    }
}

fn s<'a>(v: &'a Value, field: &str) -> Result<&'a str, String> {
    v.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{field}` must be a string"))
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Rows of rollguard's table of documented limits that some request was checked against.
static CHECKED: Mutex<BTreeSet<(&str, &str)>> = Mutex::new(BTreeSet::new());

/// The documented limit of `field` in `service`'s payloads, from rollguard's one table
/// (`rollguard::action::notify::limits`), recorded as checked.
fn limit(service: &'static str, field: &'static str) -> &'static Limit {
    let l = limits::limit(service, field)
        .unwrap_or_else(|| panic!("`{service}` `{field}` is not in the table of limits"));
    CHECKED.lock().unwrap().insert((service, field));
    l
}

/// The rows of the table of limits that requests have been checked against so far.
pub fn limits_checked() -> BTreeSet<(&'static str, &'static str)> {
    CHECKED.lock().unwrap().clone()
}

/// `text` within the documented limit of `field`, counted in the limit's unit.
fn max(service: &'static str, field: &'static str, text: &str) -> Result<(), String> {
    let n = match limit(service, field).unit {
        Unit::Bytes => text.len(),
        _ => chars(text),
    };
    count(service, field, n)
}

/// `n` (characters, bytes or elements, as the limit counts) within the documented limit of
/// `field`.
fn count(service: &'static str, field: &'static str, n: usize) -> Result<(), String> {
    let l = limit(service, field);
    if n > l.max {
        Err(format!(
            "`{field}` has {n} {}, {service}'s limit is {} ({})",
            l.unit.as_str(),
            l.max,
            l.source
        ))
    } else {
        Ok(())
    }
}

/// Slack mrkdwn: the only `<` allowed opens a link `<https://…|text>`; `&` only as an
/// entity. Anything else (`<!channel>`, `<@U123>`) would ping people.
fn slack_escaped(field: &str, t: &str) -> Result<(), String> {
    let link = regex::Regex::new(r"<https?://[^|<>\s]+\|[^<>]*>").unwrap();
    let rest = link.replace_all(t, "");
    if rest.contains('<') || rest.contains('>') {
        return Err(format!("`{field}` has an unescaped `<` or `>`: {t:?}"));
    }
    let amp = regex::Regex::new(r"&(amp|lt|gt);").unwrap();
    if amp.replace_all(&rest, "").contains('&') {
        return Err(format!("`{field}` has an unescaped `&`: {t:?}"));
    }
    Ok(())
}

/// The array at `key`, or the error `missing`.
fn array<'a>(v: &'a Value, key: &str, missing: &str) -> Result<&'a Vec<Value>, String> {
    v.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| missing.to_string())
}

/// The array at `key`, which must be there (else the error `missing`) and not be empty (else
/// the error `empty`).
fn nonempty<'a>(
    v: &'a Value,
    key: &str,
    missing: &str,
    empty: &str,
) -> Result<&'a Vec<Value>, String> {
    let a = array(v, key, missing)?;
    if a.is_empty() {
        return Err(empty.to_string());
    }
    Ok(a)
}

fn slack(v: &Value) -> Result<(), String> {
    let text = s(v, "text")?;
    if text.is_empty() {
        return Err(
            "`text` (the notification fallback) must not be empty when sending blocks".into(),
        );
    }
    slack_escaped("text", text)?;
    let blocks = nonempty(v, "blocks", "`blocks` must be an array", "no blocks")?;
    count("slack", "blocks", blocks.len())?;
    for b in blocks {
        match s(b, "type")? {
            "header" => {
                if s(&b["text"], "type")? != "plain_text" {
                    return Err("header text must be plain_text".into());
                }
                max("slack", "header.text", s(&b["text"], "text")?)?;
                if s(&b["text"], "text")?.contains("<!") {
                    return Err("header looks like a broadcast mention".into());
                }
            }
            "section" => {
                if let Some(t) = b.get("text") {
                    max("slack", "section.text", s(t, "text")?)?;
                    if s(t, "type")? == "mrkdwn" {
                        slack_escaped("section.text", s(t, "text")?)?;
                    }
                } else {
                    let fields = array(b, "fields", "section needs text or fields")?;
                    count("slack", "section.fields", fields.len())?;
                    for f in fields {
                        max("slack", "section.fields.text", s(f, "text")?)?;
                        slack_escaped("field", s(f, "text")?)?;
                    }
                }
            }
            "context" => {
                let els = nonempty(
                    b,
                    "elements",
                    "context needs elements",
                    "context needs elements",
                )?;
                count("slack", "context.elements", els.len())?;
                for e in els {
                    slack_escaped("context", s(e, "text")?)?;
                }
            }
            other => return Err(format!("unexpected block type {other}")),
        }
    }
    Ok(())
}

fn mattermost(v: &Value) -> Result<(), String> {
    let text = s(v, "text")?;
    max("mattermost", "text", text)?;
    let atts = array(v, "attachments", "`attachments` must be an array")?;
    for a in atts {
        s(a, "fallback")?;
        let colour = s(a, "color")?;
        if !colour.starts_with('#') || colour.len() != 7 {
            return Err(format!("color must be #RRGGBB, got {colour}"));
        }
        max("mattermost", "attachments.text", s(a, "text")?)?;
        for f in a
            .get("fields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            s(f, "title")?;
            s(f, "value")?;
            f.get("short")
                .and_then(Value::as_bool)
                .ok_or("field.short must be a boolean")?;
        }
    }
    let all = v.to_string();
    for m in ["@channel", "@all", "@here", "@everyone"] {
        if all.contains(m) {
            return Err(format!("`{m}` would notify the whole channel"));
        }
    }
    Ok(())
}

fn teams(v: &Value, size: usize) -> Result<(), String> {
    count("teams", "body", size)?;
    if s(v, "type")? != "message" {
        return Err("envelope `type` must be `message`".into());
    }
    let atts = array(v, "attachments", "`attachments` must be an array")?;
    if atts.len() != 1 {
        return Err("exactly one attachment (the card) expected".into());
    }
    if s(&atts[0], "contentType")? != "application/vnd.microsoft.card.adaptive" {
        return Err("contentType must be application/vnd.microsoft.card.adaptive".into());
    }
    let card = &atts[0]["content"];
    if s(card, "type")? != "AdaptiveCard" {
        return Err("content.type must be AdaptiveCard".into());
    }
    let version = s(card, "version")?;
    if !["1.2", "1.3", "1.4", "1.5"].contains(&version) {
        return Err(format!("card version {version} is not one Teams renders"));
    }
    let body = nonempty(
        card,
        "body",
        "card body must be an array",
        "card body is empty",
    )?;
    fn element(e: &Value) -> Result<(), String> {
        match s(e, "type")? {
            "TextBlock" => s(e, "text").map(drop),
            "FactSet" => {
                for f in array(e, "facts", "facts must be an array")? {
                    s(f, "title")?;
                    s(f, "value")?;
                }
                Ok(())
            }
            "Container" => array(e, "items", "container items")?
                .iter()
                .try_for_each(element),
            other => Err(format!("unexpected element {other}")),
        }
    }
    body.iter().try_for_each(element)?;
    if card.get("$data").is_some() {
        return Err(
            "Workflows do not evaluate Adaptive Card templating ($data); render server-side".into(),
        );
    }
    for a in card
        .get("actions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if s(a, "type")? != "Action.OpenUrl" || !s(a, "url")?.starts_with("http") {
            return Err("actions must be Action.OpenUrl with an http(s) url".into());
        }
    }
    Ok(())
}

fn discord(v: &Value) -> Result<(), String> {
    if v["allowed_mentions"]["parse"] != serde_json::json!([]) {
        return Err("allowed_mentions.parse must be [] so no text can ping".into());
    }
    if let Some(c) = v.get("content") {
        max(
            "discord",
            "content",
            c.as_str().ok_or("content must be a string")?,
        )?;
    }
    let embeds = array(v, "embeds", "`embeds` must be an array")?;
    count("discord", "embeds", embeds.len())?;
    for e in embeds {
        let mut total = 0;
        let title = s(e, "title")?;
        max("discord", "embed.title", title)?;
        total += chars(title);
        let d = s(e, "description")?;
        max("discord", "embed.description", d)?;
        total += chars(d);
        e.get("color")
            .and_then(Value::as_u64)
            .ok_or("color must be an integer")?;
        let fields = array(e, "fields", "fields must be an array")?;
        count("discord", "embed.fields", fields.len())?;
        for f in fields {
            let (n, val) = (s(f, "name")?, s(f, "value")?);
            if n.is_empty() || val.is_empty() {
                return Err("field name and value must not be empty".into());
            }
            max("discord", "embed.fields.name", n)?;
            max("discord", "embed.fields.value", val)?;
            total += chars(n) + chars(val);
        }
        if let Some(f) = e.get("footer") {
            total += chars(s(f, "text")?);
        }
        count("discord", "embed (all text)", total)?;
        if let Some(ts) = e.get("timestamp") {
            humantime::parse_rfc3339_weak(ts.as_str().ok_or("timestamp must be a string")?)
                .map_err(|e| format!("timestamp: {e}"))?;
        }
    }
    Ok(())
}

fn google_chat(v: &Value, query: &str) -> Result<(), String> {
    if !query
        .split('&')
        .any(|p| p == "messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD")
    {
        return Err(format!(
            "threadKey needs messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD in the URL, query was `{query}`"
        ));
    }
    let text = s(v, "text")?;
    max("google_chat", "text", text)?;
    if text.contains("<users/") {
        return Err("text would mention users".into());
    }
    let key = s(&v["thread"], "threadKey")?;
    if key.is_empty() {
        return Err("thread.threadKey is empty".into());
    }
    Ok(())
}

fn pagerduty_event(v: &Value) -> Result<(), String> {
    if s(v, "routing_key")?.len() != 32 {
        return Err("routing_key must be the 32-character integration key".into());
    }
    let action = s(v, "event_action")?;
    let dedup = v.get("dedup_key").and_then(Value::as_str);
    if let Some(d) = dedup {
        max("pagerduty", "dedup_key", d)?;
    }
    match action {
        "trigger" => {
            let p = &v["payload"];
            let summary = s(p, "summary")?;
            if summary.is_empty() {
                return Err("payload.summary is empty".into());
            }
            max("pagerduty", "payload.summary", summary)?;
            if s(p, "source")?.is_empty() {
                return Err("payload.source is empty".into());
            }
            let sev = s(p, "severity")?;
            if !["critical", "error", "warning", "info"].contains(&sev) {
                return Err(format!(
                    "payload.severity `{sev}` is not critical|error|warning|info"
                ));
            }
            Ok(())
        }
        "acknowledge" | "resolve" => dedup
            .map(drop)
            .ok_or_else(|| format!("{action} needs the dedup_key of the trigger")),
        other => Err(format!("event_action `{other}`")),
    }
}

fn pagerduty_change(v: &Value) -> Result<(), String> {
    if s(v, "routing_key")?.len() != 32 {
        return Err("routing_key must be the 32-character integration key".into());
    }
    let p = &v["payload"];
    let summary = s(p, "summary")?;
    if summary.is_empty() {
        return Err("payload.summary is empty".into());
    }
    max("pagerduty", "payload.summary", summary)?;
    if v.get("event_action").is_some() {
        return Err("change events have no event_action".into());
    }
    Ok(())
}

fn alertmanager(v: &Value) -> Result<(), String> {
    let alerts = v.as_array().ok_or("body must be a JSON array of alerts")?;
    if alerts.is_empty() {
        return Err("no alerts".into());
    }
    let name = regex::Regex::new(r"^[a-zA-Z_][a-zA-Z0-9_]*$").unwrap();
    for a in alerts {
        let labels = a
            .get("labels")
            .and_then(Value::as_object)
            .ok_or("labels must be an object")?;
        if labels
            .get("alertname")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err("labels.alertname is required".into());
        }
        for (k, val) in labels {
            if !name.is_match(k) {
                return Err(format!("label name `{k}` is invalid"));
            }
            if val.as_str().is_none_or(str::is_empty) {
                return Err(format!("label `{k}` must be a non-empty string"));
            }
        }
        for (k, val) in a
            .get("annotations")
            .and_then(Value::as_object)
            .ok_or("annotations must be an object")?
        {
            val.as_str()
                .ok_or_else(|| format!("annotation `{k}` must be a string"))?;
        }
        let starts = humantime::parse_rfc3339_weak(s(a, "startsAt")?)
            .map_err(|e| format!("startsAt: {e}"))?;
        let ends =
            humantime::parse_rfc3339_weak(s(a, "endsAt")?).map_err(|e| format!("endsAt: {e}"))?;
        if ends < starts {
            return Err("endsAt before startsAt".into());
        }
        if let Some(g) = a.get("generatorURL") {
            url::Url::parse(g.as_str().ok_or("generatorURL must be a string")?)
                .map_err(|e| format!("generatorURL: {e}"))?;
        }
    }
    Ok(())
}

/// Standard Webhooks: `webhook-id` equal to `X-Rollguard-Delivery` (a UUIDv7), a fresh
/// `webhook-timestamp`, and a `v1,` signature over `id.timestamp.body` with the test secret.
fn webhook(v: &Value, r: &Received) -> Result<(), String> {
    use rollguard::standard_webhooks::{keys, verify};
    let h = |name: &str| {
        r.headers
            .get(name)
            .and_then(|h| h.to_str().ok())
            .ok_or(format!("missing {name}"))
    };
    let id = h("webhook-id")?;
    if h("x-rollguard-delivery")? != id {
        return Err("X-Rollguard-Delivery differs from webhook-id".into());
    }
    let uuid = uuid::Uuid::parse_str(id).map_err(|e| format!("webhook-id {id}: {e}"))?;
    if uuid.get_version_num() != 7 {
        return Err(format!("webhook-id {id} is not a UUIDv7"));
    }
    let ts: i64 = h("webhook-timestamp")?
        .parse()
        .map_err(|e| format!("webhook-timestamp: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let keys = keys(WEBHOOK_SECRET).map_err(|e| e.to_string())?;
    verify(&keys, id, ts, h("webhook-signature")?, &r.body, now, 300)
        .map_err(|e| format!("signature: {e}"))?;
    s(v, "kind")?;
    s(v, "title")?;
    Ok(())
}

/// When an alert's lease ends, as seconds from now (negative: already ended).
pub fn ends_in(alert: &Value) -> f64 {
    let ends = humantime::parse_rfc3339_weak(alert["endsAt"].as_str().unwrap()).unwrap();
    match ends.duration_since(std::time::SystemTime::now()) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Records the JSON bodies POSTed to it (a webhook notifier's destination), on its own runtime
/// thread so blocking tests can use it. Waiting is on a condition variable signalled by each
/// delivery, not a sleep loop.
pub struct Recorder {
    pub url: String,
    inbox: Arc<(Mutex<Vec<serde_json::Value>>, Condvar)>,
    _rt: tokio::runtime::Runtime,
}

impl Recorder {
    pub fn start() -> Recorder {
        let rt = super::http::runtime();
        let inbox: Arc<(Mutex<Vec<serde_json::Value>>, Condvar)> = Arc::default();
        let b = inbox.clone();
        let addr = rt.block_on(async move {
            let app = axum::Router::new().route(
                "/hook",
                axum::routing::post(move |body: String| {
                    let b = b.clone();
                    async move {
                        let v =
                            serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
                        b.0.lock().unwrap().push(v);
                        b.1.notify_all();
                        "ok"
                    }
                }),
            );
            super::http::serve(app).await
        });
        Recorder {
            url: format!("http://{addr}/hook"),
            inbox,
            _rt: rt,
        }
    }

    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.inbox.0.lock().unwrap().clone()
    }

    /// The notices received of one kind (`backend_down`, `held`, ...).
    pub fn of_kind(&self, kind: &str) -> Vec<serde_json::Value> {
        self.bodies()
            .into_iter()
            .filter(|b| b["kind"] == kind)
            .collect()
    }

    /// Waits until a notice of `kind` arrives.
    pub fn wait_kind(&self, kind: &str, timeout: Duration) -> Option<serde_json::Value> {
        let deadline = std::time::Instant::now() + timeout;
        let mut got = self.inbox.0.lock().unwrap();
        loop {
            if let Some(v) = got.iter().find(|b| b["kind"] == kind) {
                return Some(v.clone());
            }
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            got = self.inbox.1.wait_timeout(got, left).unwrap().0;
        }
    }
}

/// A daemon across a restart, seen from a Standard Webhooks destination `chat` on
/// 127.0.0.1:`port`: the ratio rule also tells `chat`, and a deployment registered on targets
/// nothing serves has its `deployment_started` notice queued for `chat` at once.
pub struct WebhookRestart {
    pub port: u16,
    rule: String,
    extra: String,
}

impl WebhookRestart {
    /// Starts the daemon with `options` (YAML lines of the destination's delivery options)
    /// and registers deployment `id`.
    pub fn start(port: u16, options: &str, id: &str) -> (WebhookRestart, super::Daemon) {
        let extra = format!(
            "notifiers:\n  chat:\n    webhook:\n      url: http://127.0.0.1:{port}/webhook\n      secret: {WEBHOOK_SECRET}\n{options}"
        );
        let rule = super::RATIO_RULE.replace("on_fail: [rollback]", "on_fail: [rollback, chat]");
        let d = super::Daemon::start(&[("errors.yaml", &rule)], &extra);
        let (code, v) = d.post(
            "/api/v1/deployments",
            &serde_json::json!({"id": id, "service": "checkout", "analysis": "errors",
                "baseline": {"targets": ["http://127.0.0.1:9/metrics"], "version": "v1"},
                "canary": {"targets": ["http://127.0.0.1:9/metrics"], "version": "v2"}}),
        );
        assert_eq!(code, 201, "{v}");
        (WebhookRestart { port, rule, extra }, d)
    }

    /// Starts a receiving [`Fake`] on the port and the daemon again in `dir`; returns the
    /// `deployment_started` requests the destination got, once one has arrived (the fake
    /// stops serving then; what it saw stays readable).
    pub fn restart(&self, dir: tempfile::TempDir) -> (super::Daemon, Fake, Vec<Received>) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let fake = rt.block_on(Fake::start_on(&format!("127.0.0.1:{}", self.port)));
        let d = super::Daemon::start_in(dir, &[("errors.yaml", &self.rule)], &self.extra);
        let got = rt.block_on(fake.wait_for("/webhook", 1, Duration::from_secs(20)));
        let started = got
            .into_iter()
            .filter(|r| r.json()["kind"] == "deployment_started")
            .collect();
        (d, fake, started)
    }
}

/// A destination with the test pace: no pacing, retries 50 ms apart.
pub fn fast(kind: NotifierKind) -> NotifierConfig {
    let mut c = NotifierConfig::new(kind);
    c.pace = Duration::ZERO;
    c.retry_backoff = Duration::from_millis(50);
    c
}

/// rollguard's real notifier workers on a real SQLite store, in this process (no daemon);
/// stopped when dropped. Start it inside a Tokio runtime.
pub struct Notifying {
    pub store: Arc<dyn Store>,
    pub notifiers: Arc<Notifiers>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Notifying {
    pub fn start(dests: BTreeMap<String, NotifierConfig>) -> Notifying {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqliteStore::open(dir.path()).expect("store"));
        let notifiers = Arc::new(
            Notifiers::new(store.clone(), dests, Arc::new(Telemetry::new())).expect("notifiers"),
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(notifiers.clone().run(shutdown.clone()));
        Notifying {
            store,
            notifiers,
            shutdown,
            _dir: dir,
        }
    }

    /// One destination, `name`.
    pub fn one(name: &str, cfg: NotifierConfig) -> Notifying {
        Self::start(BTreeMap::from([(name.to_string(), cfg)]))
    }

    pub fn send(&self, name: &str, n: &Notice) {
        self.notifiers.enqueue(&[name.to_string()], n);
    }

    /// Waits until `f` holds for the outbox of `name` (every destination: `None`); polled,
    /// because the workers announce nothing.
    pub async fn until(
        &self,
        name: Option<&str>,
        f: impl Fn(&[OutboxItem]) -> bool,
    ) -> Vec<OutboxItem> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let items = self.store.outbox(name).expect("outbox");
            if f(&items) {
                return items;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "outbox of {name:?} never got there: {items:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until nothing in the outbox is pending.
    pub async fn settled(&self) -> Vec<OutboxItem> {
        self.until(None, |items| items.iter().all(|i| i.status != "pending"))
            .await
    }
}

impl Drop for Notifying {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A notice about deployment `dep` of service `checkout` (v2 against v1), for the delivery
/// tests.
pub fn notice(kind: NoticeKind, dep: &str) -> Notice {
    Notice {
        kind,
        at: rollguard::store::now(),
        subject: Some(Subject {
            deployment: dep.into(),
            service: "checkout".into(),
            analysis: "errors".into(),
            version: "v2".into(),
            baseline_version: "v1".into(),
        }),
        title: format!("{} {dep}", kind.as_str()),
        text: "what happened and what rollguard did".into(),
        checks: Vec::new(),
        link: None,
        key: format!("rollguard/{dep}"),
    }
}
