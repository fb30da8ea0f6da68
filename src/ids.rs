//! Identifiers that leave the daemon (notification delivery ids): UUIDv7, so they are unique
//! across daemons and state directories (a receiver shared by two daemons, or fed by a rebuilt
//! one, never drops a real message as a repeat) and still sort by creation time. Each is
//! generated once, when its row is written, and read back from the row after that: retries
//! and restarts reuse it.

/// A new UUIDv7 in its hyphenated text form (`0190163d-8694-739b-aea5-966c26f8ad91`).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        let u = uuid::Uuid::parse_str(&a).expect("a UUID");
        assert_eq!(u.get_version_num(), 7);
    }
}
