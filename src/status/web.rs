//! The status pages on the daemon's listener: the thin HTTP layer over the pure pages of
//! this module. `/` and `/deployments/<id>` are HTML; `/status.css` and `/status.js` are the
//! embedded assets; `/login` sets the page cookie when an API token is configured (see
//! [`super::auth`]). The daemon merges these routes with the API's on one listener. They are
//! pages for people, not API: docs/openapi.yaml does not list them (docs/status.md does).
//!
//! Every page is sent with [`super::CSP`], `nosniff`, `no-referrer` and `no-store`, so
//! nothing untrusted can run, and a page behind a login never sits in a shared cache.

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, middleware};
use serde::Deserialize;

use super::{DeploymentView, auth, deployment_page, esc, list_page, plain_page};
use crate::api::Api;
use crate::deploy::DeploymentRecord;

/// Finished deployments the list page shows after the running ones.
pub const RECENT: usize = 100;
/// Timeline entries a deployment page shows (the API's own page size).
pub const EVENTS: usize = 500;

/// The page routes, the token check in front of the pages, and the public assets.
pub fn routes(api: Api) -> Router<Api> {
    let pages = Router::new()
        .route("/", get(list))
        .route("/deployments/{id}", get(deployment))
        .layer(middleware::from_fn_with_state(api, gate));
    Router::new()
        .merge(pages)
        .route("/status.css", get(css))
        .route("/status.js", get(js))
        .route("/login", get(login_form).post(login))
}

/// An HTML answer with the page headers.
fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(h);
    r
}

fn secure(h: &mut HeaderMap) {
    set_static(
        h,
        &[
            (header::CONTENT_SECURITY_POLICY, super::CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
    );
}

/// Sets each header to its fixed value.
fn set_static(h: &mut HeaderMap, headers: &[(HeaderName, &'static str)]) {
    for (name, value) in headers {
        h.insert(name, HeaderValue::from_static(value));
    }
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    set_static(
        r.headers_mut(),
        &[
            (header::CONTENT_TYPE, kind),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
    );
    r
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", super::STYLE)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", super::SCRIPT)
}

/// Lets a request through to a page when no token is configured, or it carries the token
/// (bearer header) or the page cookie. A `?token=` link that matches is answered with the
/// cookie and a redirect to the same page without the query; anything else gets the login
/// form (401) at the page's own address.
async fn gate(State(api): State<Api>, req: Request, next: middleware::Next) -> Response {
    let Some(token) = api.token.clone() else {
        return next.run(req).await;
    };
    let h = req.headers();
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|g| auth::same(g.trim().as_bytes(), token.as_bytes()));
    let cookie = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|c| auth::cookie_ok(c, &token));
    if bearer || cookie {
        return next.run(req).await;
    }
    let uri = req.uri().clone();
    let path = uri.path().to_string();
    let (given, rest) = split_token(&uri);
    match given {
        Some(t) if auth::same(t.as_bytes(), token.as_bytes()) => {
            let to = if rest.is_empty() {
                path
            } else {
                format!("{path}?{rest}")
            };
            redirect_with_cookie(&to, &token)
        }
        Some(_) => html(StatusCode::UNAUTHORIZED, auth::login_page(&path, true)),
        None => html(StatusCode::UNAUTHORIZED, auth::login_page(&path, false)),
    }
}

/// The `token` query parameter (decoded) and the rest of the query as it came.
fn split_token(uri: &Uri) -> (Option<String>, String) {
    #[derive(Deserialize)]
    struct TokenQuery {
        token: Option<String>,
    }
    let token = Query::<TokenQuery>::try_from_uri(uri)
        .ok()
        .and_then(|Query(q)| q.token);
    let rest: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty() && *kv != "token" && !kv.starts_with("token="))
        .collect();
    (token, rest.join("&"))
}

fn redirect_with_cookie(to: &str, token: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(auth::local_path(to)) {
        h.insert(header::LOCATION, v);
    } else {
        h.insert(header::LOCATION, HeaderValue::from_static("/"));
    }
    if let Ok(v) = HeaderValue::from_str(&auth::set_cookie(token)) {
        h.insert(header::SET_COOKIE, v);
    }
    secure(h);
    r
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_form(Query(q): Query<NextQuery>) -> Response {
    html(
        StatusCode::OK,
        auth::login_page(q.next.as_deref().unwrap_or("/"), false),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

async fn login(State(api): State<Api>, Form(f): Form<LoginForm>) -> Response {
    let next = auth::local_path(&f.next).to_string();
    match &api.token {
        None => redirect_with_cookie(&next, ""),
        Some(t) if auth::same(f.token.trim().as_bytes(), t.as_bytes()) => {
            redirect_with_cookie(&next, t)
        }
        Some(_) => html(StatusCode::UNAUTHORIZED, auth::login_page(&next, true)),
    }
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        plain_page(
            "unavailable",
            &format!(
                "<h1>State store unavailable</h1><p>{}</p>",
                esc(&e.to_string())
            ),
        ),
    )
}

/// The running deployments (newest first) and the latest finished ones.
pub fn list_records(
    store: &dyn crate::store::Store,
) -> Result<(Vec<DeploymentRecord>, Vec<DeploymentRecord>), crate::store::StoreError> {
    let mut running = store.unfinished()?;
    running.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
    let mut recent = store.list(None, None, running.len() + RECENT)?;
    recent.retain(|r| r.state.is_terminal());
    recent.truncate(RECENT);
    Ok((running, recent))
}

async fn list(State(api): State<Api>) -> Response {
    match list_records(api.engine.store.as_ref()) {
        Ok((running, recent)) => html(
            StatusCode::OK,
            list_page(&running, &recent, crate::store::now()),
        ),
        Err(e) => unavailable(e),
    }
}

async fn deployment(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let store = api.engine.store.as_ref();
    let rec = match store.get(&id) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return html(
                StatusCode::NOT_FOUND,
                plain_page(
                    "not found",
                    &format!(
                        "<h1>Not found</h1><p>No deployment <code>{}</code>. <a href=\"/\">All deployments</a></p>",
                        esc(&id)
                    ),
                ),
            );
        }
        Err(e) => return unavailable(e),
    };
    // The timeline is worth showing even when a part of it cannot be read.
    let events = store.events(&id, 0, EVENTS).unwrap_or_default();
    let actions = store.actions_of(&id).unwrap_or_default();
    let notifications = store.outbox_of(&id).unwrap_or_default();
    html(
        StatusCode::OK,
        deployment_page(&DeploymentView {
            rec: &rec,
            events: &events,
            actions: &actions,
            notifications: &notifications,
            now: crate::store::now(),
        }),
    )
}
