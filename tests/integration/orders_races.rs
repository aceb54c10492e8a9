//! Goal: a payment, a cancel and an expiry of the same order are decided
//! once: every order ends in exactly one final state and its stock comes
//! back at most once.
//! Method: 1,000 orders whose payment deadline has just passed; at the same
//! time one task pays every order, one cancels every third (from the other
//! end), and the expiry sweeper runs. Then every order's state, every
//! answer and the exact stats must agree. Store level, on both stores.

use std::sync::Arc;
use std::time::Duration;

use flashsale::domain::{system_now, Order, OrderStatus};
use flashsale::domain::{Payment, PaymentOutcome};
use flashsale::store::{FollowUps, Store, StoreError};
use futures::future::join_all;

use crate::conformance::{request, sale, subject, Subject};
use crate::on_every_store;
use crate::support::Backend;

const ORDERS: usize = 1_000;

/// Pays every order, first to last; returns how many payments found the
/// order pending (paid) and how many came too late (refund required).
async fn pay_all(store: Arc<dyn Store>, orders: Arc<Vec<Order>>) -> (i64, i64) {
    let (mut paid, mut late) = (0, 0);
    for order in orders.iter() {
        let payment = Payment {
            amount: Some((order.amount_cents, order.currency.to_string())),
            transaction_id: format!("tx-{}", order.id),
        };
        match store
            .pay_order(&order.id, &payment, FollowUps::default())
            .await
            .unwrap()
        {
            PaymentOutcome::Paid(_) => paid += 1,
            PaymentOutcome::RefundRequired(_) => late += 1,
            other => panic!("a first payment of {} was {other:?}", order.id),
        }
    }
    (paid, late)
}

/// Cancels every third order, last to first; returns how many cancels won.
async fn cancel_some(store: Arc<dyn Store>, orders: Arc<Vec<Order>>) -> i64 {
    let mut cancelled = 0;
    for order in orders.iter().rev().step_by(3) {
        match store.cancel_order(&order.id, &order.shopper_id).await {
            Ok(_) => cancelled += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(err) => panic!("cancel of {} failed: {err}", order.id),
        }
    }
    cancelled
}

/// Sweeps until nothing is due; returns how many orders it expired.
async fn sweep(store: Arc<dyn Store>, sale: flashsale::domain::SaleId) -> i64 {
    let mut expired = 0;
    loop {
        let expiry = store
            .expire_due(&sale, 2, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(expiry.held.is_empty(), "no order has a prepay id");
        let batch = expiry.expired;
        // A step that only passed over settled orders is not the last.
        if batch.is_empty() && expiry.passed_over == 0 {
            return expired;
        }
        expired += i64::try_from(batch.len()).unwrap();
    }
}

async fn pay_cancel_and_expiry_decide_each_order_once(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let mut live = sale(i64::try_from(ORDERS).unwrap(), 1, -1_000);
    live.payment_timeout_secs = 1;
    store.create_sale(&live).await.unwrap();
    let reservations = join_all((0..ORDERS).map(|i| {
        let (store, request) = (&store, request(&live, &format!("racer-{i}"), 1, None));
        async move { store.reserve(&request).await }
    }))
    .await;
    let orders: Arc<Vec<Order>> = Arc::new(
        reservations
            .into_iter()
            .map(|reservation| reservation.unwrap().order)
            .collect(),
    );
    let last_deadline = orders.iter().map(|order| order.expires_at).max().unwrap();
    let wait = u64::try_from(last_deadline - system_now() + 20).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(wait)).await;

    let payments = tokio::spawn(pay_all(Arc::clone(&store), Arc::clone(&orders)));
    let cancels = tokio::spawn(cancel_some(Arc::clone(&store), Arc::clone(&orders)));
    let sweeper = tokio::spawn(sweep(Arc::clone(&store), live.id.clone()));
    let (paid, late) = payments.await.unwrap();
    let cancelled = cancels.await.unwrap();
    let expired = sweeper.await.unwrap() + sweep(Arc::clone(&store), live.id.clone()).await;

    let total = i64::try_from(ORDERS).unwrap();
    assert_eq!(paid + late, total, "every payment answered once");
    assert_eq!(
        cancelled + expired,
        late,
        "every order not paid in time was returned exactly once"
    );
    let mut states = (0, 0);
    for order in orders.iter() {
        match store.order(&order.id).await.unwrap().unwrap().status {
            OrderStatus::Paid => states.0 += 1,
            OrderStatus::RefundRequired => states.1 += 1,
            other => panic!("{} ended {other:?} after a payment", order.id),
        }
    }
    assert_eq!(states, (paid, late), "final states match the answers");

    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(stats.paid, paid, "{stats:?}");
    assert_eq!(stats.reserved, 0, "{stats:?}");
    assert_eq!(stats.remaining, total - paid, "stock back once: {stats:?}");
    assert_eq!(stats.cancelled, cancelled, "{stats:?}");
    assert_eq!(stats.expired, expired, "{stats:?}");
    assert_eq!(stats.refund_required, late, "{stats:?}");
    assert_eq!(stats.buyers, paid, "{stats:?}");
    eprintln!(
        "{ORDERS} races: {paid} paid in time, {cancelled} cancelled and {expired} expired \
         first (then refund required)"
    );
}

on_every_store!(pay_cancel_and_expiry_decide_each_order_once);
