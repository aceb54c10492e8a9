//! How shoppers get in to a sale: `open` (whoever's order lands first) or
//! `queue`, the waiting room. Holds a sale's admission settings and their
//! rules, the fair shuffle of the pre-queue (its seed, the seed's public
//! commitment, and the order it gives), and a shopper's place in the line
//! as the store answers it. No I/O: the stores keep the line, this module
//! says what it means.
//!
//! The shuffle: every shopper who joins before the opening gets the key
//! `hex(SHA-256(seed ‖ shopper id))` (the seed's 32 bytes, then the
//! shopper id's UTF-8 bytes); at the opening they stand in the ascending
//! order of their keys. The seed stays secret until the opening; its
//! SHA-256 is public from the moment the sale is queued (before its
//! pre-queue opens), the seed itself from the opening, so anyone can check
//! that it was fixed in advance and recompute the order ([`shuffled`]).

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{InvalidField, Millis};

const PREQUEUE_OPENS_SECS_DEFAULT: i64 = 600;
const PREQUEUE_OPENS_SECS_MAX: i64 = 86_400;
const ADMIT_PER_SEC_DEFAULT: i64 = 500;
const ADMIT_PER_SEC_MAX: i64 = 100_000;
const TOKEN_TTL_SECS_DEFAULT: i64 = 60;
const TOKEN_TTL_SECS_MIN: i64 = 10;
const TOKEN_TTL_SECS_MAX: i64 = 3_600;
const SEED_BYTES: usize = 32;

/// How shoppers get in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdmissionMode {
    /// Today's race: any shopper may order once the sale is live.
    #[default]
    Open,
    /// The waiting room: only admitted shoppers may order.
    Queue,
}

impl AdmissionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Queue => "queue",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(Self::Open),
            "queue" => Some(Self::Queue),
            _ => None,
        }
    }
}

/// A sale's admission settings, with the shuffle's seed of a queued sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub mode: AdmissionMode,
    /// The pre-queue opens this many seconds before `starts_at`.
    pub prequeue_opens_secs: i64,
    /// Shoppers admitted per second at most.
    pub admit_per_sec: i64,
    /// How long an admission (its purchase token) lasts.
    pub token_ttl_secs: i64,
    /// The shuffle's seed, hex (64 digits); empty until the sale is first
    /// queued.
    pub seed: String,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            mode: AdmissionMode::Open,
            prequeue_opens_secs: PREQUEUE_OPENS_SECS_DEFAULT,
            admit_per_sec: ADMIT_PER_SEC_DEFAULT,
            token_ttl_secs: TOKEN_TTL_SECS_DEFAULT,
            seed: String::new(),
        }
    }
}

impl Admission {
    pub fn is_queue(&self) -> bool {
        self.mode == AdmissionMode::Queue
    }

    /// When the pre-queue opens for a sale starting at `starts_at`.
    pub fn prequeue_opens_at(&self, starts_at: Millis) -> Millis {
        starts_at.saturating_sub(self.prequeue_opens_secs.saturating_mul(1000))
    }

    /// The public commitment to the seed: hex SHA-256 of its bytes (none
    /// on an open sale).
    pub fn seed_sha256(&self) -> Option<String> {
        if !self.is_queue() {
            return None;
        }
        let seed = hex::decode(&self.seed).ok().filter(|s| !s.is_empty())?;
        Some(hex::encode(Sha256::digest(seed)))
    }

    /// The settings a merchant asked for, keeping this sale's seed (a
    /// queued sale without one gets a fresh one).
    pub fn apply(&self, settings: &AdmissionSettings) -> Result<Self, InvalidField> {
        let defaults = Self::default();
        let admission = Self {
            mode: settings.mode,
            prequeue_opens_secs: settings
                .prequeue_opens_secs
                .unwrap_or(defaults.prequeue_opens_secs),
            admit_per_sec: settings.admit_per_sec.unwrap_or(defaults.admit_per_sec),
            token_ttl_secs: settings.token_ttl_secs.unwrap_or(defaults.token_ttl_secs),
            // Once made, a sale's seed never changes, even across a switch
            // to `open` and back: the commitment shown stays the one used.
            seed: match settings.mode {
                AdmissionMode::Queue if self.seed.is_empty() => new_seed(),
                _ => self.seed.clone(),
            },
        };
        admission.validate()?;
        Ok(admission)
    }

    fn validate(&self) -> Result<(), InvalidField> {
        let check = |field, value: i64, min: i64, max: i64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(InvalidField::new(
                    field,
                    format!("must be between {min} and {max}"),
                ))
            }
        };
        check(
            "admission.prequeue_opens_secs",
            self.prequeue_opens_secs,
            0,
            PREQUEUE_OPENS_SECS_MAX,
        )?;
        check(
            "admission.admit_per_sec",
            self.admit_per_sec,
            1,
            ADMIT_PER_SEC_MAX,
        )?;
        check(
            "admission.token_ttl_secs",
            self.token_ttl_secs,
            TOKEN_TTL_SECS_MIN,
            TOKEN_TTL_SECS_MAX,
        )
    }
}

/// What a merchant sends as `admission` (defaults not yet applied).
/// Unknown fields are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionSettings {
    pub mode: AdmissionMode,
    #[serde(default)]
    pub prequeue_opens_secs: Option<i64>,
    #[serde(default)]
    pub admit_per_sec: Option<i64>,
    #[serde(default)]
    pub token_ttl_secs: Option<i64>,
}

/// A fresh secret seed, hex.
fn new_seed() -> String {
    let mut seed = [0u8; SEED_BYTES];
    rand::rng().fill_bytes(&mut seed);
    hex::encode(seed)
}

/// A pre-queue joiner's shuffle key: hex SHA-256 of the seed's bytes then
/// the shopper id's. `None` when the seed is not hex.
pub fn shuffle_key(seed: &str, shopper: &str) -> Option<String> {
    let mut hash = Sha256::new();
    hash.update(hex::decode(seed).ok()?);
    hash.update(shopper.as_bytes());
    Some(hex::encode(hash.finalize()))
}

/// The pre-queue joiners in their places after the shuffle (ascending
/// shuffle key): what anyone can recompute from the revealed seed.
pub fn shuffled<'a>(seed: &str, shoppers: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut keyed: Vec<(String, &str)> = shoppers
        .into_iter()
        .map(|shopper| (shuffle_key(seed, shopper).unwrap_or_default(), shopper))
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, shopper)| shopper).collect()
}

/// A shopper's standing in a sale's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueStatus {
    Waiting,
    Admitted,
    SoldOut,
    Ended,
}

impl QueueStatus {
    pub const ALL: [Self; 4] = [Self::Waiting, Self::Admitted, Self::SoldOut, Self::Ended];

    /// The status as it is serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Admitted => "admitted",
            Self::SoldOut => "sold_out",
            Self::Ended => "ended",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

/// An admission: the purchase token's id and when it expires (store clock,
/// a whole second).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub token_id: String,
    pub expires_at: Millis,
}

/// A shopper's place in the line, read in one atomic step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePlace {
    pub status: QueueStatus,
    /// 1-based place in the whole line; `None` before the opening (the
    /// shuffle has not placed the pre-queue yet).
    pub position: Option<u64>,
    /// Shoppers still waiting ahead; `None` before the opening.
    pub ahead: Option<u64>,
    /// The admission, when admitted.
    pub admitted: Option<Admitted>,
    /// The store's clock at the read.
    pub now: Millis,
    /// The sale's opening.
    pub starts_at: Millis,
    pub admit_per_sec: i64,
}

/// A queued sale's line in counts, for its merchant. Admissions are
/// granted, and lapsed ones freed, only as polls reach the store (an
/// admission that lapsed unused is freed by the first such poll once
/// `QueueRules::expiry_grace_ms` has passed, never after the sale ends),
/// so these counts move with the shoppers' polls, not with the clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Places ever taken in the line (the pre-queue included; a shopper
    /// who joins again after a lapsed admission takes another).
    pub joined: u64,
    /// Joined and not yet admitted.
    pub waiting: u64,
    /// Admissions granted.
    pub admitted: u64,
    /// Admissions whose purchase token bought an order.
    pub bought: u64,
    /// Admissions that lapsed unused and were freed (their shoppers left
    /// the line).
    pub expired: u64,
    /// Admissions granted, neither used nor freed: the shoppers who may
    /// order now, and those whose admission lapsed but is not freed yet.
    /// What the stock bound of admission counts against.
    pub outstanding: u64,
}

impl QueueStats {
    /// From the store's counters: members of the line, admissions
    /// granted, tokens that bought, admissions that expired unused.
    pub fn from_counters(joined: u64, granted: u64, bought: u64, expired: u64) -> Self {
        Self {
            joined,
            waiting: joined.saturating_sub(granted),
            admitted: granted,
            bought,
            expired,
            outstanding: granted.saturating_sub(bought).saturating_sub(expired),
        }
    }
}

/// The id of the purchase token of the shopper admitted at `position`:
/// unique in the sale, and never one the purchase-token route makes.
pub fn admission_token_id(position: u64) -> String {
    format!("q{position}")
}

/// The most digits of a position an admission's token id names, as
/// `lua/reserve.lua` reads them (a line holds far fewer places).
const ADMISSION_POSITION_DIGITS_MAX: usize = 15;

/// The position an admission's purchase token id names (the inverse of
/// [`admission_token_id`]); `None` for any other id.
pub fn admission_position(token_id: &str) -> Option<u64> {
    let digits = token_id.strip_prefix('q')?;
    if !(1..=ADMISSION_POSITION_DIGITS_MAX).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    digits.parse().ok().filter(|&position| position > 0)
}

/// When to poll again and the estimated wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollAdvice {
    pub eta_secs: u64,
    pub poll_after_ms: u64,
}

impl QueuePlace {
    /// The advice for this place: poll at half the estimated wait, between
    /// `poll_ms_min` and `poll_ms_max`; a final answer (admitted, sold out,
    /// ended) at `poll_ms_max`.
    pub fn advice(&self, poll_ms_min: u64, poll_ms_max: u64) -> PollAdvice {
        let rate = u64::try_from(self.admit_per_sec.max(1)).unwrap_or(1);
        let to_opening = u64::try_from(self.starts_at.saturating_sub(self.now)).unwrap_or(0);
        let wait_ms = match (self.status, self.ahead) {
            (QueueStatus::Waiting, Some(ahead)) => (ahead + 1).saturating_mul(1000) / rate,
            (QueueStatus::Waiting, None) => to_opening,
            _ => 0,
        };
        let poll_after_ms = if self.status == QueueStatus::Waiting {
            (wait_ms / 2).clamp(poll_ms_min, poll_ms_max.max(poll_ms_min))
        } else {
            poll_ms_max.max(poll_ms_min)
        };
        PollAdvice {
            eta_secs: wait_ms.div_ceil(1000),
            poll_after_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::domain::ShopperId;

    #[test]
    fn an_admission_token_id_names_its_position_and_nothing_else_does() {
        assert_eq!(admission_position(&admission_token_id(1)), Some(1));
        assert_eq!(
            admission_position(&admission_token_id(999_999)),
            Some(999_999)
        );
        let longest = format!("q{}", "9".repeat(15));
        assert_eq!(admission_position(&longest), Some(999_999_999_999_999));
        for other in [
            "q",
            "q0",
            "q-1",
            "q1x",
            "Q1",
            "x1",
            "q1234567890123456",
            "aB3dE",
        ] {
            assert_eq!(admission_position(other), None, "{other}");
        }
    }

    fn queue(seed: &str) -> Admission {
        Admission {
            mode: AdmissionMode::Queue,
            seed: seed.to_owned(),
            ..Admission::default()
        }
    }

    #[test]
    fn the_shuffle_is_a_permutation_that_replays_from_its_seed() {
        // Goal: the order is a permutation of the joiners, the same for the
        // same seed whatever order they joined in, and another for another
        // seed. Method: shuffle 1,000 ids, then the reversed list.
        let ids: Vec<String> = (0..1000).map(|i| format!("shopper-{i}")).collect();
        let seed = new_seed();
        let order = shuffled(&seed, ids.iter().map(String::as_str));
        assert_eq!(order.len(), ids.len());
        let distinct: HashSet<&str> = order.iter().copied().collect();
        assert_eq!(distinct.len(), ids.len(), "every joiner exactly once");
        let again = shuffled(&seed, ids.iter().rev().map(String::as_str));
        assert_eq!(order, again, "the seed alone decides the order");
        let other = shuffled(&new_seed(), ids.iter().map(String::as_str));
        assert_ne!(order, other);
        let joined: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_ne!(order, joined, "not the join order");
    }

    #[test]
    fn the_commitment_is_the_seeds_sha256() {
        let admission = queue("00ff");
        assert_eq!(
            admission.seed_sha256().as_deref(),
            Some(hex::encode(Sha256::digest([0x00, 0xff])).as_str())
        );
        assert_eq!(Admission::default().seed_sha256(), None);
        // The documented key: SHA-256 of the seed's bytes, then the id's.
        let key = shuffle_key("00ff", "ab").unwrap();
        assert_eq!(key, hex::encode(Sha256::digest([0x00, 0xff, b'a', b'b'])));
    }

    #[test]
    fn settings_keep_the_seed_and_check_their_ranges() {
        let settings = AdmissionSettings {
            mode: AdmissionMode::Queue,
            prequeue_opens_secs: None,
            admit_per_sec: Some(20),
            token_ttl_secs: None,
        };
        let fresh = Admission::default().apply(&settings).unwrap();
        assert_eq!(fresh.seed.len(), 2 * SEED_BYTES);
        assert_eq!(fresh.admit_per_sec, 20);
        let again = fresh.apply(&settings).unwrap();
        assert_eq!(again.seed, fresh.seed, "a queued sale keeps its seed");
        let bad = AdmissionSettings {
            token_ttl_secs: Some(1),
            ..settings
        };
        assert_eq!(
            fresh.apply(&bad).unwrap_err().field,
            "admission.token_ttl_secs"
        );
    }

    #[test]
    fn advice_polls_at_half_the_wait_within_bounds() {
        let place = QueuePlace {
            status: QueueStatus::Waiting,
            position: Some(5_001),
            ahead: Some(4_999),
            admitted: None,
            now: 0,
            starts_at: 0,
            admit_per_sec: 500,
        };
        let advice = place.advice(1_000, 10_000);
        assert_eq!(advice.eta_secs, 10);
        assert_eq!(advice.poll_after_ms, 5_000);
        let near = QueuePlace {
            ahead: Some(0),
            ..place.clone()
        };
        assert_eq!(near.advice(1_000, 10_000).poll_after_ms, 1_000);
        let done = QueuePlace {
            status: QueueStatus::SoldOut,
            ..place
        };
        assert_eq!(done.advice(1_000, 10_000).poll_after_ms, 10_000);
    }

    #[test]
    fn shopper_ids_key_the_shuffle_as_text() {
        let shopper = ShopperId::parse("oX3abc").unwrap();
        assert!(shuffle_key(&new_seed(), shopper.as_str()).is_some());
        assert_eq!(shuffle_key("not hex", "a"), None);
    }
}
