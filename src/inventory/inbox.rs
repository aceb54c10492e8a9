//! What reaches a sale's actor, and how: reservations from the
//! [`Inventory`](super::Inventory) and the news that may change what the
//! actor believes (its registration, a merchant's change, returned stock)
//! all go through the actor's [`Inbox`], in the order they were posted, so
//! a reservation posted after a top-up is decided knowing it.
//!
//! The inbox is the actor's mailbox, kept outside actix's so that a
//! reservation does not wake the actor's thread when the actor could do
//! nothing with it yet. The actor takes in everything waiting at once
//! whenever it can act: when told to ([`TakeIn`], the one actix message
//! senders send) and whenever a store call returns. A sender tells it only
//! when it is not going to look anyway, so while every store call slot of
//! the actor is busy, reservations gather here without waking its thread
//! and are batched when the call returns; unless they would take the
//! actor past its bound of reservations waiting for or in store calls
//! (`in_flight_max`): then it is told at once, and answers each from memory
//! or `overloaded` without waiting for the call. News is rare and always
//! tells it: the sold-out board refuses nothing until the news is taken in.
//! A wake per reservation would put the actor's thread to sleep and back
//! about nine times per store call in a race (`benches/http.sh`;
//! `docs/performance.md`, the fourth pass).
//!
//! The inbox holds at most `capacity` reservations (news is never refused):
//! past it, `overloaded` at once. Once the actor has stopped, the inbox is
//! closed: what it held is dropped (each waiting caller sees its reply
//! channel closed and asks the actor that replaces it) and later posts are
//! refused.

use std::sync::Mutex;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::InventoryError;
use crate::domain::{Reservation, ReserveRequest, SaleView, ShopperId};

/// Where a reservation's answer goes.
pub type ReserveReply = oneshot::Sender<Result<Reservation, InventoryError>>;

/// One piece of mail for a sale's actor.
pub enum Mail {
    Reserve {
        request: ReserveRequest,
        reply: ReserveReply,
    },
    /// Posted once by the registry right after it registered the actor:
    /// from now on every stock return and change reaches this actor.
    Registered,
    /// The store's view of the sale right after a merchant's change.
    SaleUpdated(SaleView),
    /// An order gave units back (cancelled, expired, refunded with
    /// restock): stock is on sale again, the shopper free.
    StockReturned { shopper: ShopperId, quantity: i64 },
}

/// Tells the actor to take in its inbox.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TakeIn;

/// Why a post did not go in (the mail is dropped).
#[derive(Debug)]
pub enum Refused {
    /// `capacity` reservations wait already.
    Full,
    /// The actor has stopped.
    Closed,
}

pub struct Inbox {
    state: Mutex<State>,
    capacity: usize,
    in_flight_max: usize,
}

struct State {
    mail: Vec<Mail>,
    /// Reservations in `mail`.
    reservations: usize,
    /// The actor will take in the inbox without being told: it is taking
    /// it in now, or a store call of its will return with every slot busy.
    actor_will_look: bool,
    /// Reservations waiting for or in the actor's store calls when it last
    /// settled.
    held_by_actor: usize,
    closed: bool,
}

impl Inbox {
    /// An open, empty inbox for at most `capacity` reservations, of an
    /// actor that holds at most `in_flight_max` waiting for or in store
    /// calls.
    pub fn new(capacity: usize, in_flight_max: usize) -> Self {
        Self {
            state: Mutex::new(State {
                mail: Vec::new(),
                reservations: 0,
                actor_will_look: false,
                held_by_actor: 0,
                closed: false,
            }),
            capacity,
            in_flight_max,
        }
    }

    /// Posts `mail`. `Ok(true)`: the actor must be told ([`TakeIn`]): it is
    /// not going to look by itself, the reservations waiting here would
    /// take it past `in_flight_max` (it answers them at once), or the mail
    /// is news.
    pub fn post(&self, mail: Mail) -> Result<bool, Refused> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        let news = !matches!(mail, Mail::Reserve { .. });
        if !news {
            if state.reservations >= self.capacity {
                return Err(Refused::Full);
            }
            state.reservations += 1;
        }
        state.mail.push(mail);
        let past_bound = state.reservations + state.held_by_actor > self.in_flight_max;
        Ok(!std::mem::replace(&mut state.actor_will_look, true) || past_bound || news)
    }

    /// Everything posted so far, oldest first; the actor then acts on it
    /// and calls [`settle`](Self::settle).
    pub fn take(&self) -> Vec<Mail> {
        let mut state = self.lock();
        state.reservations = 0;
        std::mem::take(&mut state.mail)
    }

    /// After the actor acted on what it took: `true` when more mail came in
    /// meanwhile (take it in now). Otherwise the inbox remembers whether
    /// the actor will look by itself (`will_look`: a store call will
    /// return and no slot is free to send what comes) and how many
    /// reservations it `held` (waiting for or in store calls), so that
    /// senders tell it only when it will not look or must refuse.
    pub fn settle(&self, will_look: bool, held: usize) -> bool {
        let mut state = self.lock();
        if !state.mail.is_empty() {
            return true;
        }
        state.actor_will_look = will_look;
        state.held_by_actor = held;
        false
    }

    /// Whether nothing waits to be taken in.
    pub fn is_empty(&self) -> bool {
        self.lock().mail.is_empty()
    }

    /// Closes the inbox for good (its actor stopped): later posts are
    /// refused; what waited is given back to be dropped.
    pub fn close(&self) -> Vec<Mail> {
        let mut state = self.lock();
        state.closed = true;
        state.reservations = 0;
        std::mem::take(&mut state.mail)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding the lock; recover the state if so.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::memory::tests::{ask, view};

    fn reservation(shopper: &str) -> Mail {
        Mail::Reserve {
            request: ask(&view(-1_000, 10).sale, shopper, 1, None),
            reply: oneshot::channel().0,
        }
    }

    fn news() -> Mail {
        Mail::Registered
    }

    #[test]
    fn the_actor_is_told_once_until_it_has_taken_in() {
        let inbox = Inbox::new(8, 100);
        assert!(
            matches!(inbox.post(reservation("a")), Ok(true)),
            "an idle actor is told"
        );
        assert!(
            matches!(inbox.post(reservation("b")), Ok(false)),
            "told already"
        );
        assert!(
            matches!(inbox.post(news()), Ok(true)),
            "news always tells it"
        );
        assert_eq!(inbox.take().len(), 3, "everything, at once");
        assert!(!inbox.settle(false, 0), "nothing came meanwhile");
        assert!(
            matches!(inbox.post(reservation("c")), Ok(true)),
            "idle again: told"
        );
    }

    #[test]
    fn while_the_actor_will_look_by_itself_nobody_tells_it() {
        let inbox = Inbox::new(8, 100);
        assert!(matches!(inbox.post(reservation("a")), Ok(true)));
        inbox.take();
        assert!(
            !inbox.settle(true, 1),
            "a store call is in flight, every slot busy"
        );
        for shopper in ["b", "c", "d"] {
            assert!(matches!(inbox.post(reservation(shopper)), Ok(false)));
        }
        assert_eq!(inbox.take().len(), 3, "taken in when the call returns");
        assert!(!inbox.settle(false, 0));
        assert!(matches!(inbox.post(news()), Ok(true)));
    }

    #[test]
    fn mail_that_came_while_the_actor_acted_is_taken_in_before_it_settles() {
        let inbox = Inbox::new(8, 100);
        inbox.post(reservation("a")).ok();
        inbox.take();
        assert!(
            matches!(inbox.post(reservation("b")), Ok(false)),
            "it is looking"
        );
        assert!(inbox.settle(false, 0), "take again");
        assert_eq!(inbox.take().len(), 1);
        assert!(!inbox.settle(false, 0));
        assert!(inbox.is_empty());
    }

    #[test]
    fn news_always_tells_the_actor() {
        let inbox = Inbox::new(8, 100);
        inbox.post(reservation("a")).ok();
        inbox.take();
        assert!(!inbox.settle(true, 1), "a store call is in flight");
        assert!(matches!(inbox.post(reservation("b")), Ok(false)));
        assert!(
            matches!(inbox.post(news()), Ok(true)),
            "news is taken in without waiting for the call"
        );
    }

    #[test]
    fn past_the_in_flight_bound_the_actor_is_told_at_once() {
        let inbox = Inbox::new(8, 3);
        inbox.post(reservation("a")).ok();
        inbox.take();
        assert!(!inbox.settle(true, 2), "two held, a call in flight");
        assert!(
            matches!(inbox.post(reservation("b")), Ok(false)),
            "three: within the bound"
        );
        assert!(
            matches!(inbox.post(reservation("c")), Ok(true)),
            "four: past it, the actor answers now"
        );
    }

    #[test]
    fn past_capacity_reservations_are_refused_and_news_is_not() {
        let inbox = Inbox::new(2, 100);
        inbox.post(reservation("a")).ok();
        inbox.post(reservation("b")).ok();
        assert!(matches!(inbox.post(reservation("c")), Err(Refused::Full)));
        assert!(inbox.post(news()).is_ok(), "news always goes in");
        inbox.take();
        assert!(inbox.post(reservation("c")).is_ok(), "taken in: room again");
    }

    #[test]
    fn a_closed_inbox_gives_back_what_waited_and_refuses_later_posts() {
        let inbox = Inbox::new(8, 100);
        inbox.post(reservation("a")).ok();
        assert_eq!(inbox.close().len(), 1);
        assert!(matches!(inbox.post(reservation("b")), Err(Refused::Closed)));
        assert!(matches!(inbox.post(news()), Err(Refused::Closed)));
    }
}
