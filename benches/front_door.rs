//! What the front door's checks cost per order request, in one run:
//!
//! - `shopper_token`: verifying the shopper's JWT (the baseline: every
//!   order request pays it);
//! - `rate_limits`: the per-address, per-shopper and overall limiters,
//!   with limits high enough never to refuse (the cost of checking), over
//!   10,000 shoppers and addresses;
//! - `purchase_token`: verifying an `X-Purchase-Token`.
//!
//! Run: `cargo bench --bench front_door`.

use std::net::IpAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flashsale::domain::{SaleId, ShopperId};
use flashsale::http::{
    mint_shopper_token, AuthKeys, Rate, RateLimitSettings, RateLimits, ShopperTokenRules,
};

const SECRET: &[u8] = b"bench-secret";
const KEYS: u32 = 10_000;

fn front_door(c: &mut Criterion) {
    let auth = AuthKeys::new(
        "bench-admin-token-of-at-least-32-bytes",
        SECRET,
        &ShopperTokenRules::default(),
    )
    .expect("keys");
    let shoppers: Vec<ShopperId> = (0..KEYS)
        .map(|i| ShopperId::parse(&format!("shopper-{i}")).expect("user"))
        .collect();
    let tokens: Vec<String> = shoppers
        .iter()
        .map(|shopper| mint_shopper_token(SECRET, shopper.as_str(), 3600).expect("token"))
        .collect();
    let never = Rate {
        per_sec: u32::MAX,
        burst: u32::MAX,
    };
    let limits = RateLimits::new(&RateLimitSettings {
        global: never,
        shopper: never,
        ip: never,
        trust_forwarded_for: false,
        admin_failures_per_min: std::num::NonZeroU32::MIN,
    });
    let sale = SaleId::generate();
    let (purchase, _) = auth
        .mint_purchase_token(&shoppers[0], &sale, 3600)
        .expect("purchase token");

    let mut group = c.benchmark_group("front_door");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    let mut i = 0usize;
    group.bench_function("shopper_token", |b| {
        b.iter(|| {
            i = (i + 1) % tokens.len();
            auth.shopper_of(&tokens[i]).expect("valid")
        })
    });
    group.bench_function("rate_limits", |b| {
        b.iter(|| {
            i = (i + 1) % shoppers.len();
            let ip = IpAddr::from(u32::try_from(i).expect("fits").to_be_bytes());
            limits.check_ip(ip).expect("never refused");
            limits.check_shopper(&shoppers[i]).expect("never refused");
        })
    });
    group.bench_function("purchase_token", |b| {
        b.iter(|| {
            auth.purchase_token(&purchase, &shoppers[0], &sale)
                .expect("valid")
        })
    });
    group.finish();
}

criterion_group!(benches, front_door);
criterion_main!(benches);
