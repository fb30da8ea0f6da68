//! Standard Webhooks (<https://www.standardwebhooks.com/>) signing: what receivers' own
//! libraries already verify. A request carries `webhook-id` (the delivery id, the same on
//! every retry), `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256>` over `<id>.<timestamp>.<body>`). Signing the id and timestamp
//! with the body is what stops a captured request from being replayed: receivers reject old
//! timestamps and ids they have seen.
//!
//! Secrets are `whsec_` followed by base64 of the key bytes (the prefix is optional). A secret
//! value may hold several keys separated by spaces: each gives one `v1,` signature and any one
//! verifies. That is how a key is rotated with no window where receivers reject messages.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};

/// The prefix Standard Webhooks puts before the base64 key.
pub const SECRET_PREFIX: &str = "whsec_";

/// A secret that is not `whsec_<base64>`.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "a webhook secret must be `whsec_` followed by base64 (e.g. from `openssl rand -base64 32`): {0}"
)]
pub struct BadSecret(String);

/// Every key of a secret value (`whsec_old whsec_new` while rotating).
pub fn keys(secret: &str) -> Result<Vec<Vec<u8>>, BadSecret> {
    let keys = secret
        .split_whitespace()
        .map(decode_secret)
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(BadSecret("the secret is empty".into()));
    }
    Ok(keys)
}

/// Decodes a `whsec_<base64>` secret into its key bytes.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, BadSecret> {
    let b64 = secret.trim();
    let b64 = b64.strip_prefix(SECRET_PREFIX).unwrap_or(b64);
    let key = STANDARD.decode(b64).map_err(|e| BadSecret(e.to_string()))?;
    if key.is_empty() {
        return Err(BadSecret("the key is empty".into()));
    }
    Ok(key)
}

/// The headers of one signed attempt: `webhook-id`, `webhook-timestamp`, `webhook-signature`
/// (one `v1,` signature per key, space-separated).
pub fn headers(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
    let sigs: Vec<String> = keys
        .iter()
        .map(|k| format!("v1,{}", STANDARD.encode(mac(k, id, timestamp, body))))
        .collect();
    let mut h = vec![
        ("webhook-id".to_string(), id.to_string()),
        ("webhook-timestamp".to_string(), timestamp.to_string()),
    ];
    if !sigs.is_empty() {
        h.push(("webhook-signature".to_string(), sigs.join(" ")));
    }
    h
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    hmac_of(key, id, timestamp, body)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// HMAC-SHA256 over `id.timestamp.body`, the signed content of the specification.
fn hmac_of(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Hmac<sha2::Sha256> {
    // HMAC takes keys of any length: `new_from_slice` has no error case for it.
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// Why a request does not verify.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VerifyError {
    #[error("timestamp is {0} s away from now (more than the tolerance)")]
    Stale(i64),
    #[error("no signature matches")]
    NoMatch,
}

/// Receiver-side check (what the docs' example does; used by tests): the timestamp is within
/// `tolerance_s` of `now` and one of the `v1` signatures matches one of the keys.
pub fn verify(
    keys: &[Vec<u8>],
    id: &str,
    timestamp: i64,
    signature: &str,
    body: &[u8],
    now: i64,
    tolerance_s: i64,
) -> Result<(), VerifyError> {
    if (now - timestamp).abs() > tolerance_s {
        return Err(VerifyError::Stale(now - timestamp));
    }
    for sig in signature.split_whitespace() {
        let Some(b64) = sig.strip_prefix("v1,") else {
            continue;
        };
        let Ok(got) = STANDARD.decode(b64) else {
            continue;
        };
        // Constant-time comparison.
        if keys
            .iter()
            .any(|k| hmac_of(k, id, timestamp, body).verify_slice(&got).is_ok())
        {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification's reference tests.
    #[test]
    fn matches_the_specification_example() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let h = headers(
            &[key],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(h[2].1, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rotation_signs_with_every_key_and_either_verifies() {
        let old = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let new = decode_secret("whsec_c2VjcmV0LWJ5dGVzLWZvci1yb3RhdGlvbg==").unwrap();
        let h = headers(&[old.clone(), new.clone()], "id1", 100, b"{}");
        assert_eq!(h[2].1.split(' ').count(), 2);
        for k in [old, new] {
            assert_eq!(verify(&[k], "id1", 100, &h[2].1, b"{}", 100, 300), Ok(()));
        }
        let other = decode_secret("whsec_b3RoZXI=").unwrap();
        assert_eq!(
            verify(&[other], "id1", 100, &h[2].1, b"{}", 100, 300),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn replays_and_tampering_fail() {
        let k = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let h = headers(std::slice::from_ref(&k), "id1", 100, b"{}");
        let ks = std::slice::from_ref(&k);
        assert_eq!(
            verify(ks, "id1", 100, &h[2].1, b"{}", 1000, 300),
            Err(VerifyError::Stale(900))
        );
        assert!(verify(ks, "id2", 100, &h[2].1, b"{}", 100, 300).is_err());
        assert!(verify(ks, "id1", 101, &h[2].1, b"{}", 101, 300).is_err());
        assert!(verify(ks, "id1", 100, &h[2].1, b"{ }", 100, 300).is_err());
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert!(decode_secret("whsec_not base64!").is_err());
        assert!(decode_secret("whsec_").is_err());
        assert!(decode_secret("c2VjcmV0").is_ok());
    }
}
