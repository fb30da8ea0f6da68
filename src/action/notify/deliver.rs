//! Sending one rendered request and classifying the answer: sent, retry later (429, 5xx,
//! timeouts, connection errors; with the delay the destination asked for, from
//! `Retry-After` or Discord's JSON `retry_after`), or permanent (any other 4xx: the message
//! itself is wrong and will never be accepted).

use std::time::Duration;

use super::render::{Rendered, retry_after_from_body};

/// Longest wait between two attempts of one message.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What a destination answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    /// Accepted. `pause`: the destination's rate-limit headers say its bucket is empty.
    Sent { pause: Option<Duration> },
    /// Try again later, after at least `after` when the destination said.
    Retry {
        after: Option<Duration>,
        error: String,
    },
    /// Will never succeed as is.
    Permanent(String),
}

/// Sends one request.
pub async fn send(client: &reqwest::Client, req: &Rendered, timeout: Duration) -> Delivery {
    let mut b = client
        .post(&req.url)
        .timeout(timeout)
        .body(req.body.clone());
    for (k, v) in &req.headers {
        b = b.header(k, v);
    }
    match b.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let after = crate::net::retry_after(resp.headers());
            let pause = bucket_empty(resp.headers());
            let body = crate::net::read_text_capped(resp, 2048).await;
            let body = body.trim();
            match status {
                200..=299 => Delivery::Sent { pause },
                429 => Delivery::Retry {
                    after: retry_after_from_body(body).or(after),
                    error: format!("HTTP 429 {body}"),
                },
                408 | 425 | 500..=599 => Delivery::Retry {
                    after,
                    error: format!("HTTP {status} {body}"),
                },
                _ => Delivery::Permanent(format!("HTTP {status} {body}")),
            }
        }
        Err(e) => Delivery::Retry {
            after: None,
            error: crate::net::redact_error(&e),
        },
    }
}

/// Discord's `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset-After: <seconds>`: wait that
/// long before the next message instead of running into a 429.
fn bucket_empty(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let number = |name: &str| h.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    if number("x-ratelimit-remaining")? > 0.0 {
        return None;
    }
    let reset = number("x-ratelimit-reset-after")?;
    reset
        .is_finite()
        .then(|| Duration::from_secs_f64(reset.clamp(0.0, 60.0)))
}

/// Backoff before attempt `attempts + 1`: `base` doubled per attempt, capped, with a
/// spread of ±20 % derived from `seed` so destinations that failed together do not retry in
/// lockstep.
pub fn backoff(base: Duration, attempts: u32, seed: i64) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let frac = ((seed as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(attempts))
        >> 11) as f64
        / (1u64 << 53) as f64;
    exp.mul_f64(0.8 + 0.4 * frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = |n| backoff(Duration::from_secs(1), n, 7);
        assert!(b(1) >= Duration::from_millis(800) && b(1) <= Duration::from_millis(1200));
        assert!(b(3) >= Duration::from_millis(3200) && b(3) <= Duration::from_millis(4800));
        assert!(b(30) <= MAX_BACKOFF.mul_f64(1.2));
    }
}
