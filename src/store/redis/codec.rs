//! How the Redis store's records and replies look, in both directions: the
//! sale's hash fields, the order record (`name=value` pairs, the layout of
//! `lua/common.lua`), the scripts' replies (an outcome word and its items,
//! a reserve reply's answers, a sale snapshot), outbox members, stream
//! entries and stock-return announcements. Pure functions, no I/O, so
//! every format lives in one place and `store` only sends and receives.

use std::collections::HashMap;
use std::time::Duration;

use redis::streams::StreamId;
use redis::{FromRedisValue, Value};
use smol_str::SmolStr;

use crate::domain::{
    Admission, AdmissionMode, Millis, Order, OrderId, OrderStatus, PaymentException,
    PaymentExceptionKind, RefundKind, Rejection, Reservation, ReserveRequest, Sale, SaleId,
    SaleState, SaleStats, SaleView, ShopperId, StockReturn,
};
use crate::store::{DeadLetter, Delivery, DeliveryFailure, Errand, StoreError, StreamEntry};

/// Stock returns as published on
/// [`STOCK_RETURNS_CHANNEL`](crate::store::keys::STOCK_RETURNS_CHANNEL).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Announcement {
    /// The announcing process, so it skips its own.
    pub node: String,
    pub returns: Vec<StockReturn>,
}

/// A payment exception as kept in
/// [`PAYMENT_EXCEPTIONS`](crate::store::keys::PAYMENT_EXCEPTIONS): the
/// script prefixes this JSON with the store's time and a space.
#[derive(serde::Serialize, serde::Deserialize)]
struct ExceptionRecord {
    kind: String,
    out_trade_no: String,
    amount: i64,
    currency: String,
}

/// The record of `exception` as the script takes it (without its time).
pub(super) fn exception_record(exception: &PaymentException) -> String {
    let record = ExceptionRecord {
        kind: exception.kind.as_str().to_owned(),
        out_trade_no: exception.out_trade_no.clone(),
        amount: exception.amount.0,
        currency: exception.amount.1.clone(),
    };
    // A struct of strings and numbers always serializes.
    serde_json::to_string(&record).unwrap_or_default()
}

/// A stored payment exception of `transaction_id`; `None` once the
/// merchant settled it (`lua/settle_payment_exception.lua` marks it).
pub(super) fn open_exception_from_record(
    transaction_id: String,
    stored: &str,
) -> Result<Option<PaymentException>, StoreError> {
    if stored.starts_with(SETTLED) {
        return Ok(None);
    }
    exception_from_record(transaction_id, stored).map(Some)
}

/// How `lua/settle_payment_exception.lua` marks a settled exception's
/// record.
const SETTLED: &str = "settled:";

/// A stored payment exception of `transaction_id`, not settled.
pub(super) fn exception_from_record(
    transaction_id: String,
    stored: &str,
) -> Result<PaymentException, StoreError> {
    let (recorded_at, json) = stored
        .split_once(' ')
        .ok_or_else(|| corrupt(format!("payment exception record {stored}")))?;
    let record: ExceptionRecord = serde_json::from_str(json).map_err(corrupt)?;
    Ok(PaymentException {
        kind: PaymentExceptionKind::parse(&record.kind)
            .ok_or_else(|| corrupt(format!("payment exception kind {}", record.kind)))?,
        transaction_id,
        out_trade_no: record.out_trade_no,
        amount: (record.amount, record.currency),
        recorded_at: recorded_at.parse().map_err(corrupt)?,
    })
}

/// Order ids as Redis keeps them: each item one id, or several separated by
/// spaces (a shopper's entry in the shopper index).
pub(super) fn order_ids<'a, C: FromIterator<OrderId>>(
    items: impl IntoIterator<Item = &'a str>,
) -> Result<C, StoreError> {
    items
        .into_iter()
        .flat_map(|ids| ids.split(' '))
        .filter(|id| !id.is_empty())
        .map(|id| OrderId::parse(id).map_err(corrupt))
        .collect()
}

/// A shopper's entry in a sale's shoppers hash (`units order_id ...`, see
/// `lua/common.lua`): the units they hold and their orders' ids, as
/// [`order_ids`] reads them.
pub(super) fn shopper_entry(entry: &str) -> Result<(i64, &str), StoreError> {
    let (units, ids) = entry.split_once(' ').unwrap_or((entry, ""));
    let units = units.parse().map_err(|_| {
        corrupt(format!(
            "a shopper's entry begins with {units:?}, not units"
        ))
    })?;
    Ok((units, ids))
}

/// Reads stream entries: each names the orders of one reserve call, read
/// as one [`StreamEntry`] per order. An entry whose orders cannot be read
/// (no `order_ids`, none listed, or one that is not an order id) is one
/// `StreamEntry` with no order, logged with its fields, for the order
/// service to drop: failing the whole read would stop the sale's intake at
/// that entry on every read.
pub(super) fn stream_entries(ids: Vec<StreamId>) -> Vec<StreamEntry> {
    let mut entries = Vec::new();
    for entry in ids {
        let id = SmolStr::new(&entry.id);
        let orders = entry
            .get::<String>("order_ids")
            .and_then(|listed| order_ids::<Vec<OrderId>>([listed.as_str()]).ok())
            .filter(|orders| !orders.is_empty());
        match orders {
            Some(orders) => entries.extend(orders.into_iter().map(|order_id| StreamEntry {
                order_id: Some(order_id),
                id: id.clone(),
            })),
            None => {
                tracing::error!(entry = %entry.id, fields = ?entry.map,
                    "a reservation entry names no readable order");
                entries.push(StreamEntry { id, order_id: None });
            }
        }
    }
    entries
}

/// A script's `'1'`/`'0'` flag.
pub(super) fn flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}

/// A duration as the scripts and commands take it: whole milliseconds.
pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// An outbox member: the errand as it names itself ([`Errand`]'s
/// `Display`: `event order_id`, or the reminder's event alone).
pub(super) fn delivery_member(delivery: &Delivery) -> String {
    delivery.errand.to_string()
}

pub(super) fn parse_errand(member: &str) -> Result<Errand, StoreError> {
    member
        .parse()
        .map_err(|()| corrupt(format!("outbox member {member:?}")))
}

/// A dead letter from its member and its record, `attempts at_ms status
/// failure` (status 0: the webhook did not answer; see
/// `lua/dead_letter.lua`).
pub(super) fn dead_letter(member: &str, record: &str) -> Result<DeadLetter, StoreError> {
    let errand = parse_errand(member)?;
    let bad = || corrupt(format!("dead letter {member:?}: {record:?}"));
    let mut parts = record.splitn(4, ' ');
    let attempts = parts.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
    let at = parts.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
    let status: u16 = parts.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
    Ok(DeadLetter {
        errand,
        attempts,
        failure: DeliveryFailure {
            status: (status != 0).then_some(status),
            error: parts.next().unwrap_or_default().to_owned(),
        },
        at,
    })
}

pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// A script's array reply, read item by item.
pub(super) struct Reply {
    items: std::vec::IntoIter<Value>,
}

impl Reply {
    fn from_items(items: Vec<Value>) -> Self {
        Self {
            items: items.into_iter(),
        }
    }

    /// A reply that is a plain array (`what` names it in the error).
    pub(super) fn array(value: Value, what: &str) -> Result<Self, StoreError> {
        let Value::Array(items) = value else {
            return Err(corrupt(format!("{what} reply is not an array")));
        };
        Ok(Self::from_items(items))
    }

    /// A reply whose first item names the outcome: the outcome, and the
    /// reply to read the rest from.
    pub(super) fn new(value: Value) -> Result<(String, Self), StoreError> {
        let Value::Array(items) = value else {
            return Err(corrupt(format!("script reply is not an array: {value:?}")));
        };
        let mut reply = Self::from_items(items);
        let outcome = reply.next()?;
        Ok((outcome, reply))
    }

    /// Items are left to read.
    pub(super) fn has_more(&self) -> bool {
        self.items.len() > 0
    }

    pub(super) fn next<T: FromRedisValue>(&mut self) -> Result<T, StoreError> {
        redis::from_redis_value(self.next_value()?).map_err(corrupt)
    }

    /// The next item as Redis sent it.
    pub(super) fn next_value(&mut self) -> Result<Value, StoreError> {
        self.items
            .next()
            .ok_or_else(|| corrupt("script reply is too short"))
    }
}

/// The head of a `reserve.lua` reply: what every order the call made
/// shares, and the stock the call left.
pub(super) struct OrderTerms {
    created_at: Millis,
    expires_at: Millis,
    price_cents: i64,
    currency: SmolStr,
    /// Units left in the sale after the whole call.
    remaining: i64,
}

/// One request's answer in a `reserve.lua` reply.
pub(super) enum ReserveReply {
    /// A new order: the whole reservation.
    Reserved(Box<Reservation>),
    /// An earlier order answers the request (an idempotent retry, or this
    /// very call resent): its id, to read it with.
    Replay(OrderId),
}

impl OrderTerms {
    /// Reads the head of a reserve reply.
    pub(super) fn from_reply(reply: &mut Reply) -> Result<Self, StoreError> {
        Ok(Self {
            created_at: reply.next()?,
            expires_at: reply.next()?,
            price_cents: reply.next()?,
            currency: SmolStr::from(reply.next::<String>()?),
            remaining: reply.next()?,
        })
    }

    /// Reads the rest of the reply: each request's answer, in order. A new
    /// order is built from its request and these terms, its `remaining` the
    /// call's plus the units of the later requests the script took stock
    /// for (it takes stock for nothing else); a rejection is the request's
    /// error. The outer error means the reply answers a different number
    /// of requests.
    pub(super) fn read_answers(
        &self,
        requests: &[ReserveRequest],
        reply: &mut Reply,
    ) -> Result<Vec<Result<ReserveReply, StoreError>>, StoreError> {
        let mut answers = requests
            .iter()
            .map(|request| self.read(request, reply))
            .collect::<Result<Vec<_>, _>>()?;
        if reply.has_more() {
            return Err(corrupt("reserve answered more requests than were sent"));
        }
        let mut remaining = self.remaining;
        for ((answer, took_stock), request) in answers.iter_mut().zip(requests).rev() {
            if let Ok(ReserveReply::Reserved(reservation)) = answer {
                reservation.remaining = Some(remaining);
            }
            if *took_stock {
                remaining = remaining.saturating_add(request.quantity.get());
            }
        }
        Ok(answers.into_iter().map(|(answer, _)| answer).collect())
    }

    /// Reads one request's answer: the shopper's units `held` after a new
    /// order (one integer: the script took the request's units), `replay`
    /// and the order's id, or an outcome's name alone. With the answer,
    /// whether the script took stock for it (even if the order cannot be
    /// built from the reply). The outer error means the reply ended early.
    fn read(
        &self,
        request: &ReserveRequest,
        reply: &mut Reply,
    ) -> Result<(Result<ReserveReply, StoreError>, bool), StoreError> {
        let outcome = match reply.next_value()? {
            Value::Int(held) => return Ok((self.reserved(request, held), true)),
            Value::BulkString(outcome) => outcome,
            other => return Ok((Err(corrupt(format!("reserve outcome {other:?}"))), false)),
        };
        let answer = match std::str::from_utf8(&outcome) {
            Ok("replay") => redis::from_redis_value::<String>(reply.next_value()?)
                .map_err(corrupt)
                .and_then(|id| OrderId::parse(&id).map_err(corrupt))
                .map(ReserveReply::Replay),
            Ok("not_found") => Err(StoreError::NotFound("sale")),
            Ok(other) => Err(Rejection::from_code(other).map_or_else(
                || corrupt(format!("unknown reserve outcome {other}")),
                StoreError::Rejected,
            )),
            Err(err) => Err(corrupt(err)),
        };
        Ok((answer, false))
    }

    /// A new order, from its request, these terms and the shopper's units
    /// `held` after it; its `remaining` is set once the whole reply is read.
    fn reserved(&self, request: &ReserveRequest, held: i64) -> Result<ReserveReply, StoreError> {
        let quantity = request.quantity.get();
        Ok(ReserveReply::Reserved(Box::new(Reservation {
            order: Order {
                id: request.order_id.clone(),
                sale_id: request.sale_id.clone(),
                shopper_id: request.shopper_id.clone(),
                quantity,
                amount_cents: self
                    .price_cents
                    .checked_mul(quantity)
                    .ok_or_else(|| corrupt("order amount overflows"))?,
                currency: self.currency.clone(),
                status: OrderStatus::PendingPayment,
                created_at: self.created_at,
                expires_at: self.expires_at,
                paid_at: None,
                prepay_id: None,
                transaction_id: None,
                refund: None,
                refund_settled_by_hand_at: None,
            },
            remaining: None,
            held: Some(held),
            replayed: false,
        })))
    }
}

fn text_field(fields: &HashMap<String, String>, name: &str) -> Result<String, StoreError> {
    fields
        .get(name)
        .cloned()
        .ok_or_else(|| corrupt(format!("missing field {name}")))
}

fn int_field(fields: &HashMap<String, String>, name: &str) -> Result<i64, StoreError> {
    text_field(fields, name)?
        .parse()
        .map_err(|_| corrupt(format!("field {name} is not an integer")))
}

pub(super) fn sale_fields(sale: &Sale) -> Vec<(&'static str, String)> {
    vec![
        ("id", sale.id.to_string()),
        ("sku", sale.sku.clone()),
        ("title", sale.title.clone()),
        ("price_cents", sale.price_cents.to_string()),
        ("currency", sale.currency.clone()),
        ("stock_total", sale.stock_total.to_string()),
        ("per_user_limit", sale.per_user_limit.to_string()),
        ("starts_at", sale.starts_at.to_string()),
        ("ends_at", sale.ends_at.to_string()),
        (
            "payment_timeout_secs",
            sale.payment_timeout_secs.to_string(),
        ),
        (
            "require_purchase_token",
            flag(sale.require_purchase_token).to_owned(),
        ),
        ("admission_mode", sale.admission.mode.as_str().to_owned()),
        (
            "prequeue_opens_secs",
            sale.admission.prequeue_opens_secs.to_string(),
        ),
        ("admit_per_sec", sale.admission.admit_per_sec.to_string()),
        ("token_ttl_secs", sale.admission.token_ttl_secs.to_string()),
        ("admission_seed", sale.admission.seed.clone()),
        ("state", sale.state.as_str().to_owned()),
        ("created_at", sale.created_at.to_string()),
    ]
}

pub(super) fn sale_from_fields(fields: &HashMap<String, String>) -> Result<Sale, StoreError> {
    let state = text_field(fields, "state")?;
    Ok(Sale {
        id: SaleId::parse(&text_field(fields, "id")?).map_err(corrupt)?,
        sku: text_field(fields, "sku")?,
        title: text_field(fields, "title")?,
        price_cents: int_field(fields, "price_cents")?,
        currency: text_field(fields, "currency")?,
        stock_total: int_field(fields, "stock_total")?,
        per_user_limit: int_field(fields, "per_user_limit")?,
        starts_at: int_field(fields, "starts_at")?,
        ends_at: int_field(fields, "ends_at")?,
        payment_timeout_secs: int_field(fields, "payment_timeout_secs")?,
        require_purchase_token: fields.get("require_purchase_token").map(String::as_str)
            == Some("1"),
        admission: admission_from_fields(fields)?,
        state: SaleState::parse(&state).ok_or_else(|| corrupt(format!("sale state {state}")))?,
        created_at: int_field(fields, "created_at")?,
    })
}

/// A sale's admission settings; a sale stored without them is open.
fn admission_from_fields(fields: &HashMap<String, String>) -> Result<Admission, StoreError> {
    let Some(mode) = fields.get("admission_mode") else {
        return Ok(Admission::default());
    };
    Ok(Admission {
        mode: AdmissionMode::parse(mode)
            .ok_or_else(|| corrupt(format!("admission mode {mode}")))?,
        prequeue_opens_secs: int_field(fields, "prequeue_opens_secs")?,
        admit_per_sec: int_field(fields, "admit_per_sec")?,
        token_ttl_secs: int_field(fields, "token_ttl_secs")?,
        seed: fields.get("admission_seed").cloned().unwrap_or_default(),
    })
}

/// An order's record as the scripts keep it (`lua/common.lua`): `name=value`
/// pairs joined by single spaces.
pub(super) fn record_fields(record: &str) -> HashMap<String, String> {
    record
        .split(' ')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

pub(super) fn order_from_record(id: &OrderId, record: &str) -> Result<Order, StoreError> {
    order_from_fields(id, &record_fields(record))
}

pub(super) fn order_from_fields(
    id: &OrderId,
    fields: &HashMap<String, String>,
) -> Result<Order, StoreError> {
    let status = text_field(fields, "status")?;
    Ok(Order {
        id: id.clone(),
        sale_id: id.sale_id(),
        shopper_id: ShopperId::parse(&text_field(fields, "user_id")?).map_err(corrupt)?,
        quantity: int_field(fields, "quantity")?,
        amount_cents: int_field(fields, "amount_cents")?,
        currency: SmolStr::from(text_field(fields, "currency")?),
        status: OrderStatus::parse(&status)
            .ok_or_else(|| corrupt(format!("order status {status}")))?,
        created_at: int_field(fields, "created_at")?,
        expires_at: int_field(fields, "expires_at")?,
        paid_at: fields.get("paid_at").and_then(|v| v.parse().ok()),
        prepay_id: fields.get("prepay_id").cloned(),
        transaction_id: fields.get("transaction_id").cloned(),
        refund: match fields.get("refund") {
            None => None,
            Some(kind) => Some(
                RefundKind::parse(kind).ok_or_else(|| corrupt(format!("order refund {kind}")))?,
            ),
        },
        refund_settled_by_hand_at: fields
            .get("refund_settled_by_hand_at")
            .map(|at| at.parse().map_err(corrupt))
            .transpose()?,
    })
}

/// Reads a `snapshot` reply (lua/common.lua): `None` for a missing sale.
pub(super) fn view_from_snapshot(items: Vec<Value>) -> Result<Option<SaleView>, StoreError> {
    if items.is_empty() {
        return Ok(None);
    }
    let mut reply = Reply::from_items(items);
    let now = reply.next()?;
    let fields: HashMap<String, String> = reply.next()?;
    let sale = sale_from_fields(&fields)?;
    let stats = SaleStats {
        stock_total: sale.stock_total,
        remaining: reply.next()?,
        reserved: reply.next()?,
        paid: reply.next()?,
        cancelled: reply.next()?,
        expired: reply.next()?,
        refund_required: reply.next()?,
        queued: reply.next()?,
        buyers: reply.next()?,
        refunded: reply.next()?,
        restocked: reply.next()?,
    };
    let version = int_field(&fields, "version")?;
    Ok(Some(SaleView {
        sale,
        stats,
        now,
        version,
    }))
}

/// Maps the `{'not_found'}` / `{'conflict', reason}` replies shared by the
/// admin scripts.
pub(super) fn admin_outcome(outcome: &str, mut reply: Reply) -> Result<(), StoreError> {
    match outcome {
        "ok" => Ok(()),
        "not_found" => Err(StoreError::NotFound("sale")),
        "conflict" => Err(StoreError::Conflict(reply.next()?)),
        other => Err(corrupt(format!("unknown outcome {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Quantity;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    /// A reserve reply: the terms (the price `price_cents`), 5 units left
    /// after the call, then `answers`.
    fn reply_priced(price_cents: i64, answers: Vec<Value>) -> Reply {
        let mut items = vec![
            Value::Int(1_000),
            Value::Int(901_000),
            Value::Int(price_cents),
            bulk("CNY"),
            Value::Int(5),
        ];
        items.extend(answers);
        Reply::from_items(items)
    }

    fn reply(answers: Vec<Value>) -> Reply {
        reply_priced(250, answers)
    }

    fn requests(quantities: &[i64]) -> Vec<ReserveRequest> {
        let sale = SaleId::generate();
        quantities
            .iter()
            .enumerate()
            .map(|(i, &quantity)| ReserveRequest {
                order_id: OrderId::generate(&sale),
                sale_id: sale.clone(),
                shopper_id: ShopperId::parse(&format!("shopper-{i}")).expect("id"),
                quantity: Quantity::parse(quantity).expect("quantity"),
                idempotency_key: None,
                purchase_token: None,
            })
            .collect()
    }

    /// Each reservation's `remaining` is the stock right after it: the
    /// call's, plus the units of the reservations after it in the call.
    #[test]
    fn reserve_answers_are_read_in_order_with_each_reservations_stock() {
        let requests = requests(&[2, 1, 3, 1, 1]);
        let earlier = OrderId::generate(&requests[0].sale_id);
        let mut reply = reply(vec![
            Value::Int(2),
            bulk("replay"),
            bulk(earlier.as_str()),
            bulk("sold_out"),
            Value::Int(1),
            bulk("limit_exceeded"),
        ]);
        let terms = OrderTerms::from_reply(&mut reply).expect("terms");
        let answers = terms.read_answers(&requests, &mut reply).expect("answers");
        let gist: Vec<String> = answers
            .into_iter()
            .map(|answer| match answer {
                Ok(ReserveReply::Reserved(r)) => format!(
                    "{} x{} remaining {:?} held {:?} {} {}",
                    r.order.shopper_id,
                    r.order.quantity,
                    r.remaining,
                    r.held,
                    r.order.amount_cents,
                    r.order.currency
                ),
                Ok(ReserveReply::Replay(id)) => format!("replay {}", id == earlier),
                Err(err) => err.to_string(),
            })
            .collect();
        assert_eq!(
            gist,
            [
                "shopper-0 x2 remaining Some(6) held Some(2) 500 CNY",
                "replay true",
                "not enough stock left",
                "shopper-3 x1 remaining Some(5) held Some(1) 250 CNY",
                "this order would pass the sale's per-user limit",
            ]
        );
    }

    /// An answer the engine cannot read is that request's error alone.
    #[test]
    fn an_unreadable_answer_is_its_requests_error_alone() {
        let requests = requests(&[1, 1, 1, 1]);
        let mut reply = reply(vec![
            Value::Nil,
            bulk("no_such_outcome"),
            bulk("replay"),
            bulk("not an order id"),
            Value::Int(1),
        ]);
        let terms = OrderTerms::from_reply(&mut reply).expect("terms");
        let answers = terms.read_answers(&requests, &mut reply).expect("answers");
        for answer in &answers[..3] {
            assert!(matches!(answer, Err(StoreError::Corrupt(_))));
        }
        assert!(matches!(&answers[3], Ok(ReserveReply::Reserved(r)) if r.remaining == Some(5)));
    }

    /// A reservation whose order cannot be built from the reply (its amount
    /// overflows) still took its units: the stock after the reservations
    /// before it counts them.
    #[test]
    fn units_taken_for_an_unreadable_order_still_count() {
        let requests = requests(&[1, 2]);
        let mut reply = reply_priced(i64::MAX / 2 + 1, vec![Value::Int(1), Value::Int(3)]);
        let terms = OrderTerms::from_reply(&mut reply).expect("terms");
        let answers = terms.read_answers(&requests, &mut reply).expect("answers");
        assert!(matches!(&answers[0], Ok(ReserveReply::Reserved(r)) if r.remaining == Some(7)));
        assert!(matches!(&answers[1], Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_reserve_reply_answering_another_number_of_requests_is_corrupt() {
        let requests = requests(&[1, 1]);
        let mut short = reply(vec![Value::Int(1)]);
        let terms = OrderTerms::from_reply(&mut short).expect("terms");
        assert!(matches!(
            terms.read_answers(&requests, &mut short),
            Err(StoreError::Corrupt(_))
        ));
        let mut long = reply(vec![Value::Int(1), Value::Int(1), bulk("ended")]);
        let terms = OrderTerms::from_reply(&mut long).expect("terms");
        assert!(matches!(
            terms.read_answers(&requests, &mut long),
            Err(StoreError::Corrupt(_))
        ));
        let mut cut = reply(vec![Value::Int(1), bulk("replay")]);
        let terms = OrderTerms::from_reply(&mut cut).expect("terms");
        assert!(matches!(
            terms.read_answers(&requests, &mut cut),
            Err(StoreError::Corrupt(_))
        ));
        let mut headless = Reply::from_items(vec![Value::Int(1_000)]);
        assert!(OrderTerms::from_reply(&mut headless).is_err());
    }
}
