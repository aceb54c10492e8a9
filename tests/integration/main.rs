//! Integration tests: the engine over HTTP and the store conformance suite,
//! against the embedded store and real `redis-server` processes that the
//! tests start on free ports.

// Tests fail loudly on anything unexpected: unwrap is the point here.
#![allow(clippy::unwrap_used)]

mod admission;
mod api_admin;
mod api_admin_auth;
mod api_audit;
mod api_bad_input;
mod api_campaigns;
mod api_connections;
mod api_console;
mod api_faults;
mod api_fuzz;
mod api_limits;
mod api_openapi;
mod api_ops;
mod api_orders;
mod api_purchase_tokens;
mod api_race;
mod api_restart;
mod api_retention;
mod api_tokens;
mod api_window;
mod campaign_reminders;
mod conformance;
mod console_browser;
mod fault_harness;
mod faults;
mod inventory_batching;
mod inventory_board;
mod orders_expiry;
mod orders_races;
mod orders_stream;
mod orders_webhook;
mod payments_wechat;
mod payments_wechat_close;
mod payments_wechat_prepay;
mod payments_wechat_refund;
mod payments_wechat_standin;
mod store_campaign_lifecycle;
mod store_campaigns;
mod store_indexes;
mod store_lost_replies;
mod store_model;
mod support;
mod wechat;
