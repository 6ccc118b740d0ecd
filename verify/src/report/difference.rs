//! One difference between the two sides, and its kind: what the judging
//! ([`crate::judge`]) produces and the report lists, the CSV writes and the rounds
//! read again.
//!
//! Plain data; it imports nothing of the crate, and must never hold a connection.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DifferenceKind {
    MissingOnTarget,
    ExtraOnTarget,
    Type,
    Value,
    Ttl,
}

impl DifferenceKind {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            DifferenceKind::MissingOnTarget => "missing_on_target",
            DifferenceKind::ExtraOnTarget => "extra_on_target",
            DifferenceKind::Type => "type",
            DifferenceKind::Value => "value",
            DifferenceKind::Ttl => "ttl",
        }
    }
}

/// One key that differs. TTLs are PTTL as read: -1 persistent, -2 no such key.
#[derive(Clone, Debug)]
pub struct Difference {
    pub db: u32,
    pub key: Vec<u8>,
    pub kind: DifferenceKind,
    /// A short hint (element counts, lengths, expiry times).
    pub detail: String,
    /// TYPE on each side ("none" when absent).
    pub source_type: String,
    pub target_type: String,
    pub source_pttl: i64,
    pub target_pttl: i64,
}
