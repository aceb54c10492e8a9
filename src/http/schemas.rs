//! OpenAPI schemas of the domain types the API reads or shows as they are:
//! the merchant's request bodies (`NewSale`, `SalePatch`), statuses,
//! stats, an audit's recount and differences. `domain` derives only serde
//! and knows nothing of OpenAPI, so their schemas are written here, from
//! the same words the types (de)serialize as; the tests check each schema
//! against what serde reads or writes, so a field added to a type and not
//! here fails.

use std::borrow::Cow;

use serde_json::json;
use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, Object, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::domain::{
    CampaignPatch, Difference, NewCampaign, NewSale, OrderStatus, QueueStats, QueueStatus,
    RecountedUnits, SalePatch, SaleStats, SaleStatus, QUANTITY_MAX,
};

/// Names a schema `$name` in the document.
macro_rules! named_schema {
    ($type:ty, $name:literal, $schema:expr) => {
        impl PartialSchema for $type {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }

        impl ToSchema for $type {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

/// A request body: an object that refuses unknown fields, each field
/// `(name, schema, required)`.
fn body(description: Option<&str>, fields: Vec<(&str, ObjectBuilder, bool)>) -> RefOr<Schema> {
    let mut object = ObjectBuilder::new()
        .description(description)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for (name, field, required) in fields {
        object = object.property(name, field);
        if required {
            object = object.required(name);
        }
    }
    Object::from(object).into()
}

fn text(length_max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(length_max))
}

fn whole(min: i64, max: i64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(min))
        .maximum(Some(max))
}

fn instant() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
}

fn currency() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[A-Z]{3}$"))
        .description(Some("ISO 4217 code; default `CNY`."))
        .examples([json!("CNY")])
}

fn flag(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .description(Some(description))
}

const PAYMENT_TIMEOUT: &str = "How long an order waits for payment, in seconds; default 900. \
                               The shortest accepted is a deployment setting (60 in production).";
const REQUIRE_PURCHASE_TOKEN: &str = "Orders need a purchase token (`POST \
                                      /api/v1/sales/{id}/purchase-token`), issued only once the \
                                      sale is live; default false.";

const ADMISSION: &str = "How shoppers get in: `open` (default: any shopper may order once the \
                         sale is live) or `queue`, the waiting room (`POST`/`GET \
                         /api/v1/sales/{id}/queue`): only admitted shoppers may order, each with \
                         the purchase token admission gives them. Unknown fields are refused.";

fn admission_settings() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(ADMISSION))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .property(
            "mode",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["open", "queue"])),
        )
        .required("mode")
        .property(
            "prequeue_opens_secs",
            whole(0, 86_400).description(Some(
                "The pre-queue opens this many seconds before `starts_at`; default 600.",
            )),
        )
        .property(
            "admit_per_sec",
            whole(1, 100_000)
                .description(Some("Shoppers admitted per second at most; default 500.")),
        )
        .property(
            "token_ttl_secs",
            whole(10, 3600).description(Some(
                "How long an admission (its purchase token) lasts; default 60.",
            )),
        )
}

named_schema!(
    NewSale,
    "NewSale",
    body(
        Some("A sale to schedule. Unknown fields are refused."),
        vec![
            ("sku", text(64).examples([json!("LC-POUCH-RED")]), true),
            (
                "title",
                text(200).examples([json!("Le Pliage pouch, red")]),
                true
            ),
            (
                "price_cents",
                whole(0, 10_000_000_000)
                    .description(Some("Minor units of `currency`."))
                    .examples([json!(19900)]),
                true
            ),
            (
                "stock_total",
                whole(1, 1_000_000_000).examples([json!(500)]),
                true
            ),
            (
                "starts_at",
                instant().examples([json!("2026-11-11T00:00:00Z")]),
                true
            ),
            (
                "ends_at",
                instant()
                    .description(Some("After `starts_at`, and in the future."))
                    .examples([json!("2026-11-11T01:00:00Z")]),
                true
            ),
            ("currency", currency(), false),
            (
                "per_user_limit",
                whole(1, QUANTITY_MAX).description(Some("Units one shopper may hold; default 1.")),
                false
            ),
            (
                "payment_timeout_secs",
                whole(1, 7200).description(Some(PAYMENT_TIMEOUT)),
                false
            ),
            (
                "require_purchase_token",
                flag(REQUIRE_PURCHASE_TOKEN),
                false
            ),
            ("admission", admission_settings(), false),
        ],
    )
);

named_schema!(
    SalePatch,
    "SalePatch",
    body(
        Some(
            "Before the start, any field may change; while live, only `stock_total` (never \
             below what is held or paid), `ends_at` and `status` (`ended` stops the sale now). \
             Field rules are those of `NewSale`; unknown fields are refused."
        ),
        vec![
            ("sku", text(64), false),
            ("title", text(200), false),
            ("price_cents", whole(0, 10_000_000_000), false),
            ("currency", currency(), false),
            ("stock_total", whole(1, 1_000_000_000), false),
            ("per_user_limit", whole(1, QUANTITY_MAX), false),
            ("starts_at", instant(), false),
            ("ends_at", instant(), false),
            ("payment_timeout_secs", whole(1, 7200), false),
            (
                "require_purchase_token",
                flag(REQUIRE_PURCHASE_TOKEN),
                false
            ),
            ("admission", admission_settings(), false),
            (
                "status",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["ended"]))
                    .description(Some("`ended` stops the sale now.")),
                false
            ),
        ],
    )
);

/// A string schema that takes one of `values`.
fn string_enum(values: impl IntoIterator<Item = &'static str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .into()
}

/// An object schema whose every field is required and of `kind`, each
/// `(name, description)`.
fn object_of(kind: Type, fields: &[(&str, &str)]) -> RefOr<Schema> {
    let mut object = ObjectBuilder::new();
    for (name, description) in fields {
        let mut field = ObjectBuilder::new().schema_type(kind.clone());
        if !description.is_empty() {
            field = field.description(Some(*description));
        }
        object = object.property(*name, field).required(*name);
    }
    Object::from(object).into()
}

named_schema!(
    SaleStatus,
    "SaleStatus",
    string_enum(SaleStatus::ALL.map(SaleStatus::as_str))
);

named_schema!(
    QueueStatus,
    "QueueStatus",
    string_enum(QueueStatus::ALL.map(QueueStatus::as_str))
);

named_schema!(
    OrderStatus,
    "OrderStatus",
    string_enum(OrderStatus::ALL.map(OrderStatus::as_str))
);

named_schema!(
    SaleStats,
    "SaleStats",
    object_of(
        Type::Integer,
        &[
            ("stock_total", ""),
            ("remaining", ""),
            ("reserved", "Units held by unpaid orders."),
            ("paid", ""),
            ("cancelled", ""),
            ("expired", ""),
            (
                "refund_required",
                "Units paid after their order had expired or been cancelled: the money goes \
                 back, the stock stays sold to someone else.",
            ),
            (
                "refunded",
                "Units of paid orders the merchant refunds (`refunding` or `refunded`). Always \
                 `remaining + reserved + paid + refunded - restocked == stock_total`.",
            ),
            ("restocked", "Of `refunded`, the units put back on sale."),
            (
                "queued",
                "Units of orders the order service has taken from the sale's stream.",
            ),
            (
                "buyers",
                "Distinct shoppers holding reserved or paid units."
            ),
        ],
    )
);

named_schema!(
    QueueStats,
    "QueueStats",
    object_of(
        Type::Integer,
        &[
            (
                "joined",
                "Places ever taken in the line, the pre-queue included (a shopper who joins \
                 again after a lapsed admission takes another).",
            ),
            ("waiting", "Joined and not yet admitted."),
            ("admitted", "Admissions granted (as polls reach the store)."),
            ("bought", "Admissions whose purchase token bought an order."),
            (
                "expired",
                "Admissions that lapsed unused and were freed (by a poll reaching the store \
                 once the grace after their expiry passed); their shoppers left the line.",
            ),
            (
                "outstanding",
                "Admissions neither used nor freed: who may order now, and lapsed admissions \
                 not freed yet. What admission's stock bound counts against.",
            ),
        ],
    )
);

named_schema!(
    RecountedUnits,
    "RecountedUnits",
    object_of(
        Type::Integer,
        &[
            ("orders", ""),
            ("reserved", ""),
            ("paid", ""),
            (
                "released",
                "Units of cancelled and expired orders, and of those among them that were paid \
                 late (`refund_required`): all went back on sale.",
            ),
            (
                "refund_required",
                "Units paid late: `refund_required` orders and those refunded since.",
            ),
            ("refunded", "Units of paid orders the merchant refunds."),
            ("restocked", "Of `refunded`, the units put back on sale."),
            ("queued", ""),
            (
                "awaiting_order_service",
                "Orders the order service has not yet taken from the stream.",
            ),
        ],
    )
);

named_schema!(
    Difference,
    "Difference",
    object_of(
        Type::String,
        &[
            (
                "check",
                "Which rule: `stock_balance`, `remaining_range`, `reserved_units`, \
                 `paid_units`, `released_units`, `refund_required_units`, `refunded_units`, \
                 `restocked_units`, `refund_unknown`, `queued_units`, \
                 `shopper_units`, `per_user_limit`, `buyers_count`, `order_missing`, \
                 `order_unindexed`, `deadline_missing`, `deadline_stale`, \
                 `reservation_lost`, `stream_unknown_order`.",
            ),
            ("detail", "What differs, for a person."),
        ],
    )
);

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use crate::domain::PatchStatus;
    use serde_json::Value;

    use super::*;

    /// The schema's property names, or its enum values.
    fn words<T: ToSchema>() -> Vec<String> {
        let schema = serde_json::to_value(T::schema()).expect("schema json");
        match (&schema["properties"], &schema["enum"]) {
            (Value::Object(properties), _) => properties.keys().cloned().collect(),
            (_, Value::Array(values)) => values
                .iter()
                .map(|value| value.as_str().expect("a string").to_owned())
                .collect(),
            _ => panic!("{} is neither an object nor an enum", T::name()),
        }
    }

    fn serialized_keys(value: impl Serialize) -> Vec<String> {
        let value = serde_json::to_value(value).expect("json");
        value
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect()
    }

    fn sorted(mut words: Vec<String>) -> Vec<String> {
        words.sort();
        words
    }

    #[test]
    fn object_schemas_name_every_serialized_field() {
        assert_eq!(
            sorted(words::<SaleStats>()),
            sorted(serialized_keys(SaleStats::default()))
        );
        assert_eq!(
            sorted(words::<QueueStats>()),
            sorted(serialized_keys(QueueStats::default()))
        );
        assert_eq!(
            sorted(words::<RecountedUnits>()),
            sorted(serialized_keys(RecountedUnits::default()))
        );
        let difference = Difference {
            check: "stock_balance",
            detail: String::new(),
        };
        assert_eq!(
            sorted(words::<Difference>()),
            sorted(serialized_keys(difference))
        );
    }

    /// The fields serde reads for `T`, from the error an unknown field gets
    /// ("unknown field `..`, expected one of `a`, `b`").
    fn accepted_fields<T: serde::de::DeserializeOwned>() -> Vec<String> {
        let err = match serde_json::from_str::<T>(r#"{"not_a_field": 0}"#) {
            Err(err) => err.to_string(),
            Ok(_) => panic!("an unknown field is refused"),
        };
        let expected = err.split("expected").nth(1).expect("names the fields");
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn request_body_schemas_name_every_field_serde_reads() {
        assert_eq!(
            sorted(words::<NewSale>()),
            sorted(accepted_fields::<NewSale>())
        );
        assert_eq!(
            sorted(words::<SalePatch>()),
            sorted(accepted_fields::<SalePatch>())
        );
        assert_eq!(
            sorted(words::<CampaignPatch>()),
            sorted(accepted_fields::<CampaignPatch>())
        );
        let status: PatchStatus = serde_json::from_value(json!("ended")).expect("ended");
        assert_eq!(status, PatchStatus::Ended);
    }

    #[test]
    fn enum_schemas_list_every_serialized_value() {
        let serialized = |value: Value| value.as_str().expect("a string").to_owned();
        assert_eq!(
            words::<SaleStatus>(),
            SaleStatus::ALL
                .map(|status| serialized(serde_json::to_value(status).expect("json")))
                .to_vec()
        );
        assert_eq!(
            words::<QueueStatus>(),
            QueueStatus::ALL
                .map(|status| serialized(serde_json::to_value(status).expect("json")))
                .to_vec()
        );
        assert_eq!(
            words::<OrderStatus>(),
            OrderStatus::ALL
                .map(|status| serialized(serde_json::to_value(status).expect("json")))
                .to_vec()
        );
    }
}

/// A schema written as JSON (nested arrays of objects, which the builders
/// above do not cover).
fn from_json(schema: serde_json::Value) -> RefOr<Schema> {
    RefOr::T(serde_json::from_value(schema).unwrap_or_else(|_| Schema::Object(Object::new())))
}

named_schema!(
    NewCampaign,
    "NewCampaign",
    from_json(json!({
        "type": "object",
        "description": "A campaign to schedule: every round x item becomes a sale. Rounds in \
            order, not overlapping, the last ending in the future; at most 24 rounds and 50 \
            items. Unknown fields are refused.",
        "additionalProperties": false,
        "required": ["title", "rounds", "items", "per_user_limit_per_round"],
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": 200},
            "rounds": {"type": "array", "minItems": 1, "maxItems": 24, "items": {
                "type": "object", "additionalProperties": false,
                "required": ["starts_at", "ends_at"],
                "properties": {
                    "starts_at": {"type": "string", "format": "date-time"},
                    "ends_at": {"type": "string", "format": "date-time"}
                }
            }},
            "items": {"type": "array", "minItems": 1, "maxItems": 50, "items": new_item()},
            "per_user_limit_per_round": {"type": "integer", "format": "int64", "minimum": 1,
                "maximum": QUANTITY_MAX,
                "description": "Units one shopper may hold across all items of one round."},
            "per_user_limit_total": {"type": "integer", "format": "int64", "minimum": 1,
                "description": "Units one shopper may hold across the whole campaign."},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "payment_timeout_secs": {"type": "integer", "format": "int64", "minimum": 1,
                "maximum": 7200, "description": PAYMENT_TIMEOUT},
            "require_purchase_token": {"type": "boolean", "description": REQUIRE_PURCHASE_TOKEN},
            "remind_before_secs": {"type": "integer", "format": "int64", "minimum": 1,
                "maximum": 604800, "description": "Hand campaign.round_starting to the \
                    merchant's webhook this long before each round starts (at once when the \
                    round starts sooner; none for a round that has started). Needs the \
                    webhook (FLASHSALE_ORDER_WEBHOOK_URL): refused without one."}
        }
    }))
);

/// One item of a campaign as a merchant sends it (`NewItem`).
fn new_item() -> serde_json::Value {
    json!({
        "type": "object", "additionalProperties": false,
        "required": ["sku", "title", "price_cents", "original_price_cents",
            "stock_per_round"],
        "properties": {
            "sku": {"type": "string", "minLength": 1, "maxLength": 64},
            "title": {"type": "string", "minLength": 1, "maxLength": 200},
            "price_cents": {"type": "integer", "format": "int64", "minimum": 0},
            "original_price_cents": {"type": "integer", "format": "int64",
                "description": "The list price; not below price_cents."},
            "stock_per_round": {"type": "integer", "format": "int64", "minimum": 1},
            "stock_by_round": {"type": "array", "items": {"type": "integer"},
                "description": "One stock per round, in place of stock_per_round."},
            "per_user_limit": {"type": "integer", "format": "int64", "minimum": 1,
                "description": "Units one shopper may hold of this item in one \
                    round; default 1."}
        }
    })
}

named_schema!(
    CampaignPatch,
    "CampaignPatch",
    from_json(json!({
        "type": "object",
        "description": "A change to a campaign; every field optional, rounds and items named by \
            their number. Before the first round starts anything may change; after it only \
            items' stock (`stock_per_round`, `stock_by_round`: never below what is reserved or \
            paid), the window of a round not started, `status: ended` of a round, and \
            `remind_before_secs` (else 409 conflict). Field rules are those of `NewCampaign`; \
            unknown fields are refused.",
        "additionalProperties": false,
        "properties": {
            "version": {"type": "integer", "format": "int64", "description": "The campaign's \
                version as read: the change applies only if it is still at it (else 409 \
                conflict)."},
            "title": {"type": "string", "minLength": 1, "maxLength": 200},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "per_user_limit_per_round": {"type": "integer", "format": "int64", "minimum": 1,
                "maximum": QUANTITY_MAX},
            "per_user_limit_total": {"type": ["integer", "null"], "format": "int64",
                "minimum": 1, "description": "null takes the limit off."},
            "payment_timeout_secs": {"type": "integer", "format": "int64", "minimum": 1,
                "maximum": 7200, "description": PAYMENT_TIMEOUT},
            "require_purchase_token": {"type": "boolean", "description": REQUIRE_PURCHASE_TOKEN},
            "remind_before_secs": {"type": ["integer", "null"], "format": "int64", "minimum": 1,
                "maximum": 604800, "description": "null takes the reminders off."},
            "rounds": {"type": "array", "description": "Changes to rounds.", "items": {
                "type": "object", "additionalProperties": false, "required": ["number"],
                "properties": {
                    "number": {"type": "integer", "minimum": 0},
                    "starts_at": {"type": "string", "format": "date-time"},
                    "ends_at": {"type": "string", "format": "date-time"},
                    "status": {"type": "string", "enum": ["ended"],
                        "description": "Stops every item's sale of the round now."}
                }
            }},
            "items": {"type": "array", "description": "Changes to items.", "items": {
                "type": "object", "additionalProperties": false, "required": ["number"],
                "properties": {
                    "number": {"type": "integer", "minimum": 0},
                    "sku": {"type": "string", "minLength": 1, "maxLength": 64},
                    "title": {"type": "string", "minLength": 1, "maxLength": 200},
                    "price_cents": {"type": "integer", "format": "int64", "minimum": 0},
                    "original_price_cents": {"type": "integer", "format": "int64"},
                    "stock_per_round": {"type": "integer", "format": "int64", "minimum": 1,
                        "description": "The item's stock in every round not yet ended."},
                    "stock_by_round": {"type": "array", "items": {"type": "integer"},
                        "description": "One stock per round after the change, in order."},
                    "per_user_limit": {"type": "integer", "format": "int64", "minimum": 1}
                }
            }},
            "add_rounds": {"type": "array", "items": {
                "type": "object", "additionalProperties": false,
                "required": ["starts_at", "ends_at"],
                "properties": {
                    "starts_at": {"type": "string", "format": "date-time"},
                    "ends_at": {"type": "string", "format": "date-time"},
                    "stock_by_item": {"type": "array", "items": {"type": "integer"},
                        "description": "One stock per item the campaign keeps (an item added \
                            by the same change offers its own stock); default: each item's \
                            stock in the last round as read."}
                }
            }},
            "add_items": {"type": "array", "items": new_item()},
            "remove_rounds": {"type": "array", "items": {"type": "integer", "minimum": 0},
                "description": "Their sales are cancelled."},
            "remove_items": {"type": "array", "items": {"type": "integer", "minimum": 0},
                "description": "Their sales are cancelled."}
        }
    }))
);
