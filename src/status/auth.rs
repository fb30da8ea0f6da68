//! Who may see the status pages when an API token is configured.
//!
//! A browser cannot send `Authorization: Bearer`, so the pages also take a cookie. The
//! cookie does not hold the token: it holds an HMAC-SHA256 of a fixed label keyed with the
//! token, so it opens the pages and nothing else (the API still wants the token itself),
//! and changing the token logs every browser out. People get the cookie from the login
//! form (`POST /login`, the token in the body) or from a link with `?token=`, which is
//! answered with a redirect to the same page without the query, so the token does not stay
//! in the address bar, the history or a `Referer`. rollguard logs no request lines; a proxy
//! in front of it may, which is why the form is the documented way.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The cookie's name.
pub const COOKIE: &str = "rollguard_status";

/// The cookie value that the token grants (hex).
pub fn session_value(token: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(token.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(b"rollguard status page v1");
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares without stopping at the first difference.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a `Cookie:` header carries a valid session for `token`.
pub fn cookie_ok(cookie_header: &str, token: &str) -> bool {
    let want = session_value(token);
    cookie_header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .any(|(k, v)| k == COOKIE && same(v.as_bytes(), want.as_bytes()))
}

/// The `Set-Cookie` header value for a browser that proved it knows `token`.
pub fn set_cookie(token: &str) -> String {
    format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        session_value(token)
    )
}

/// Where to go after logging in: a path on this server only, never another origin.
pub fn local_path(next: &str) -> &str {
    let ok = next.starts_with('/') && !next.starts_with("//") && !next.contains('\\');
    if ok { next } else { "/" }
}

/// The login page (a form posting the token to `/login`).
pub fn login_page(next: &str, failed: bool) -> String {
    let msg = if failed {
        "<p class=\"error\">That token is not the one configured.</p>"
    } else {
        ""
    };
    let body = format!(
        "<h1>Log in</h1><p>This rollguard has an API token (<code>api_token_file</code>). Enter it to see the status pages; \
         your browser keeps a cookie derived from it, not the token.</p>{msg}\
         <form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label>token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required></label> \
         <button type=\"submit\">Log in</button></form>",
        super::esc(local_path(next))
    );
    super::plain_page("log in", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_not_the_token_and_checks_out() {
        let v = session_value("s3cret");
        assert_eq!(v.len(), 64);
        assert!(!v.contains("s3cret"));
        assert!(cookie_ok(&format!("a=b; {COOKIE}={v}"), "s3cret"));
        assert!(!cookie_ok(&format!("{COOKIE}={v}"), "other"));
        assert!(!cookie_ok(&format!("{COOKIE}=s3cret"), "s3cret"));
    }

    #[test]
    fn only_local_paths_after_login() {
        assert_eq!(local_path("/deployments/x"), "/deployments/x");
        assert_eq!(local_path("//evil.example/"), "/");
        assert_eq!(local_path("https://evil.example/"), "/");
        assert_eq!(local_path("/\\evil.example"), "/");
    }
}
