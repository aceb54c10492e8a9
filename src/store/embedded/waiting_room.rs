//! The embedded store's waiting room of one sale: the twin of
//! `lua/queue_join.lua` and `lua/queue_poll.lua` (read their headers for
//! the rules), kept in the sale's record so each call is one critical
//! section with the sale's stock and purchase tokens.
//!
//! Before the opening the pre-queue is a set ordered by member
//! (`<shuffle key>:<shopper>`), as Redis orders a sorted set's equal
//! scores; at the first call from the opening on it becomes the front of
//! the line, and later joiners are appended behind it.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::domain::{
    admission_position, admission_token_id, Admitted, Millis, QueuePlace, QueueStats, QueueStatus,
    Rejection, Sale, SaleState, SaleStats, ShopperId,
};
use crate::store::{not_queued, QueueRules, StoreError, QUEUE_FREED_PER_POLL_MAX};

#[derive(Default)]
pub(super) struct WaitingRoom {
    /// The pre-queue's members until the opening.
    prequeue: BTreeSet<String>,
    /// The line from the opening: members in place order.
    line: Vec<String>,
    /// Member -> its 1-based position in `line`.
    positions: HashMap<String, u64>,
    /// Shopper -> their member.
    members: HashMap<ShopperId, String>,
    /// Admitted shopper -> when the admission expires.
    admitted: HashMap<ShopperId, Millis>,
    /// Admitted members by expiry, until freed or kept.
    expiries: BTreeSet<(Millis, String)>,
    seq: u64,
    /// Positions up to here are admitted.
    cursor: u64,
    granted: u64,
    expired: u64,
    /// Up to where admissions were counted, in microseconds of the
    /// store's clock (see `lua/queue_poll.lua`).
    tick_us: Option<i64>,
}

/// The shopper of a member: what follows its first ':'.
fn shopper_of(member: &str) -> Option<ShopperId> {
    let (_, shopper) = member.split_once(':')?;
    ShopperId::parse(shopper).ok()
}

/// Nothing remaining and nothing reserved unpaid, which could still come
/// back: a joiner is refused and a waiting shopper told so.
fn sold_out(stats: &SaleStats) -> bool {
    stats.remaining <= 0 && stats.reserved <= 0
}

fn is_ended(sale: &Sale, now: Millis) -> bool {
    sale.state != SaleState::Scheduled || now >= sale.ends_at
}

impl WaitingRoom {
    fn len(&self) -> u64 {
        (self.prequeue.len() + self.line.len()) as u64
    }

    /// From the opening on, the pre-queue stands at the front of the line.
    fn place_prequeue(&mut self, sale: &Sale, now: Millis) {
        if now < sale.starts_at || self.prequeue.is_empty() {
            return;
        }
        let mut line = std::mem::take(&mut self.prequeue)
            .into_iter()
            .collect::<Vec<_>>();
        line.append(&mut self.line);
        self.line = line;
        self.positions = self
            .line
            .iter()
            .zip(1..)
            .map(|(member, position)| (member.clone(), position))
            .collect();
    }

    /// The twin of `lua/queue_join.lua`.
    pub fn join(
        &mut self,
        sale: &Sale,
        stats: &SaleStats,
        shopper: &ShopperId,
        shuffle_key: &str,
        rules: &QueueRules,
        now: Millis,
    ) -> Result<(), StoreError> {
        if !sale.admission.is_queue() {
            return Err(not_queued());
        }
        if is_ended(sale, now) {
            return Err(Rejection::Ended.into());
        }
        if now < sale.admission.prequeue_opens_at(sale.starts_at) {
            return Err(Rejection::NotStarted.into());
        }
        self.place_prequeue(sale, now);
        if self.members.contains_key(shopper) {
            return Ok(());
        }
        if sold_out(stats) {
            return Err(Rejection::SoldOut.into());
        }
        if self.len() >= rules.size_max {
            return Err(StoreError::QueueFull);
        }
        let member = if now < sale.starts_at {
            let member = format!("{shuffle_key}:{shopper}");
            self.prequeue.insert(member.clone());
            member
        } else {
            self.seq += 1;
            let member = format!("{}:{shopper}", self.seq);
            self.line.push(member.clone());
            self.positions
                .insert(member.clone(), self.line.len() as u64);
            member
        };
        self.members.insert(shopper.clone(), member);
        Ok(())
    }

    /// The line's counts; `bought` is the sale's used purchase tokens (on
    /// a queued sale, only admissions' tokens buy).
    pub fn stats(&self, sale: &Sale, bought: u64) -> Result<QueueStats, StoreError> {
        if !sale.admission.is_queue() {
            return Err(not_queued());
        }
        Ok(QueueStats::from_counters(
            self.len(),
            self.granted,
            bought,
            self.expired,
        ))
    }

    /// The twin of `lua/queue_poll.lua`.
    pub fn poll(
        &mut self,
        sale: &Sale,
        stats: &SaleStats,
        used_tokens: &HashSet<String>,
        shopper: &ShopperId,
        rules: &QueueRules,
        now: Millis,
    ) -> Result<Option<QueuePlace>, StoreError> {
        if !sale.admission.is_queue() {
            return Err(not_queued());
        }
        let ended = is_ended(sale, now);
        if !ended && now >= sale.starts_at {
            self.place_prequeue(sale, now);
            self.free_expired(used_tokens, rules, now);
            self.admit(sale, stats.remaining, used_tokens, rules, now);
        }
        let Some(member) = self.members.get(shopper) else {
            return Ok(None);
        };
        let answer = |status, position: Option<u64>, ahead: Option<u64>, admitted| QueuePlace {
            status,
            position,
            ahead,
            admitted,
            now,
            starts_at: sale.starts_at,
            admit_per_sec: sale.admission.admit_per_sec,
        };
        if ended {
            return Ok(Some(answer(QueueStatus::Ended, None, None, None)));
        }
        let Some(&position) = self.positions.get(member).filter(|_| now >= sale.starts_at) else {
            return Ok(Some(answer(QueueStatus::Waiting, None, None, None)));
        };
        if position <= self.cursor {
            let admitted = Admitted {
                token_id: admission_token_id(position),
                expires_at: self.admitted.get(shopper).copied().unwrap_or(0),
            };
            return Ok(Some(answer(
                QueueStatus::Admitted,
                Some(position),
                Some(0),
                Some(admitted),
            )));
        }
        let ahead = position - 1 - self.cursor;
        let status = if sold_out(stats) {
            QueueStatus::SoldOut
        } else {
            QueueStatus::Waiting
        };
        Ok(Some(answer(status, Some(position), Some(ahead), None)))
    }

    /// Whether purchase token `token_id` names a live admission of
    /// `shopper`'s: their place, admitted and not freed (a bought one is
    /// asked no more). The twin of `admission_live` in `lua/reserve.lua`.
    pub fn admits(&self, token_id: &str, shopper: &ShopperId) -> bool {
        let Some(position) = admission_position(token_id) else {
            return false;
        };
        let Some(member) = usize::try_from(position - 1)
            .ok()
            .and_then(|index| self.line.get(index))
        else {
            return false;
        };
        shopper_of(member).as_ref() == Some(shopper)
            && self
                .admitted
                .get(shopper)
                .is_some_and(|&expires_at| self.expiries.contains(&(expires_at, member.clone())))
    }

    fn free_expired(&mut self, used_tokens: &HashSet<String>, rules: &QueueRules, now: Millis) {
        let due_before = now.saturating_sub(rules.expiry_grace_ms);
        for _ in 0..QUEUE_FREED_PER_POLL_MAX {
            let Some((expires_at, member)) = self.expiries.first().cloned() else {
                break;
            };
            if expires_at > due_before {
                break;
            }
            self.expiries.pop_first();
            let position = self.positions.get(&member).copied().unwrap_or(0);
            if used_tokens.contains(&admission_token_id(position)) {
                continue;
            }
            self.expired += 1;
            if let Some(shopper) = shopper_of(&member) {
                if self.members.get(&shopper) == Some(&member) {
                    self.members.remove(&shopper);
                    self.admitted.remove(&shopper);
                }
            }
        }
    }

    fn admit(
        &mut self,
        sale: &Sale,
        remaining: i64,
        used_tokens: &HashSet<String>,
        rules: &QueueRules,
        now: Millis,
    ) {
        let rate = sale.admission.admit_per_sec.max(1);
        let now_us = now * 1000;
        let last = self
            .tick_us
            .unwrap_or(sale.starts_at * 1000)
            .max(now_us - 1_000_000);
        let allowance = (now_us - last) * rate / 1_000_000;
        if allowance < 1 {
            return;
        }
        let outstanding = self.granted as i64 - used_tokens.len() as i64 - self.expired as i64;
        let capacity = if remaining > 0 {
            // Rounded up, as `math.ceil` in the script.
            let per = 100 * sale.per_user_limit.max(1);
            (remaining * rules.headroom_pct as i64 + per - 1) / per
        } else {
            0
        };
        let waiting = self.line.len() as i64 - self.cursor as i64;
        let n = allowance.min(capacity - outstanding).min(waiting).max(0);
        let expires_at = (now + sale.admission.token_ttl_secs * 1000) / 1000 * 1000;
        let from = usize::try_from(self.cursor).unwrap_or(usize::MAX);
        for member in self.line.iter().skip(from).take(n as usize) {
            self.expiries.insert((expires_at, member.clone()));
            if let Some(shopper) = shopper_of(member) {
                self.admitted.insert(shopper, expires_at);
            }
        }
        self.cursor += n as u64;
        self.granted += n as u64;
        // One admission is 1,000,000 / rate microseconds; a step moves the
        // tick on by its admissions' rounded up, never ahead of the rate.
        self.tick_us = Some(if n == allowance {
            last + (n * 1_000_000 + rate - 1) / rate
        } else {
            now_us
        });
    }
}
