//! Goal: a merchant can run a sale from the console in a real browser.
//! Method: the engine (embedded store, a feed tick every 250 ms) and
//! Debian's Chromium, headless, driven through chromedriver (WebDriver,
//! fantoccini): a wrong token is refused at sign-in; the right one signs
//! in; a bad value in the schedule form shows the API's own message at its
//! field; the fixed form schedules a sale that is listed; 50 orders sent
//! through the API show in the sale's counts and move its live chart; a
//! top-up below what is held is refused at its field and a real one taken;
//! "End now" ends it; an upcoming sale is cancelled from its page; the
//! list of sales pages with "More"; campaigns are listed with their phase
//! and counts, a campaign's page shows each round's items and totals, its
//! live round is ended and an upcoming campaign cancelled from there; a
//! sale's orders are listed, and a paid order is refunded (back on sale)
//! from its page, then found again by its id; a late payment is recorded
//! as paid back by hand from its page; a campaign of two rounds
//! and two items is scheduled from its form (a list price below the
//! seckill price refused first); a sale with a waiting room is scheduled
//! from the sale form (a rate of 0 refused at its field) and its page
//! shows the line as shoppers join; before its start, its terms change
//! from its page and it switches to the race and back; a campaign's sale
//! shows its place and no form of its own.
//! Screenshots of each step go to `target/console/`.
//! `.ci/run` installs `chromium` and `chromium-driver`; without them this
//! test fails, it does not skip.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{error_code, free_port, test_config, TestApp, ADMIN_TOKEN};

/// Longest the page may take to show what a step waits for.
const PATIENCE: Duration = Duration::from_secs(30);

/// `chromedriver` on a free port, killed on drop.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    async fn start() -> Self {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install -y chromium chromium-driver)");
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let ready = client.get(&status).send().await;
            if let Ok(response) = ready {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if body["value"]["ready"] == true {
                    return driver;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver never got ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A headless Chromium session.
    async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,1100", "--lang=en-US",
                ],
            }),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session through chromedriver")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser, and where its screenshots go.
struct Page {
    browser: Client,
    shots: PathBuf,
}

impl Page {
    async fn screenshot(&self, name: &str) {
        let png = self.browser.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Waits until `script` (a function body returning a value) returns
    /// something other than null or false, and returns it.
    async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let value = self.browser.execute(script, vec![]).await.unwrap();
            if !value.is_null() && value != false {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                self.screenshot("failed").await;
                panic!("the page never showed {what} (screenshot: failed.png)");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of the first element matching `css`, once it has some.
    async fn text_of(&self, css: &str) -> String {
        let script = format!(
            "const e = document.querySelector({}); return e && e.textContent.trim() || null;",
            json!(css)
        );
        let text = self.until(css, &script).await;
        text.as_str().unwrap().to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let input = self.browser.find(Locator::Css(css)).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    /// Sets an input's value directly (a `datetime-local`, whose typing
    /// rules depend on the browser's locale).
    async fn set_value(&self, css: &str, value: &str) {
        let script = format!(
            "document.querySelector({}).value = arguments[0];",
            json!(css)
        );
        self.browser
            .execute(&script, vec![json!(value)])
            .await
            .unwrap();
    }

    /// Picks `value` in a `select`, as the merchant would: its `change`
    /// event fires.
    async fn choose(&self, css: &str, value: &str) {
        let script = format!(
            "const select = document.querySelector({}); select.value = arguments[0]; \
             select.dispatchEvent(new Event('change'));",
            json!(css)
        );
        self.browser
            .execute(&script, vec![json!(value)])
            .await
            .unwrap();
    }

    /// Types `value` into the field `name` of the form `form`, submits it,
    /// and returns the refusal shown at that field.
    async fn refused(&self, form: &str, name: &str, value: &str) -> String {
        self.type_into(&format!("{form} [name='{name}']"), value)
            .await;
        self.click(&format!("{form} button[type=submit]")).await;
        self.text_of(&format!("{form} [data-error-for~='{name}']"))
            .await
    }

    async fn scroll_to(&self, css: &str) {
        let script = format!(
            "document.querySelector({}).scrollIntoView({{block: 'center'}});",
            json!(css)
        );
        self.browser.execute(&script, vec![]).await.unwrap();
    }

    async fn click(&self, css: &str) {
        let element = self.browser.find(Locator::Css(css)).await.unwrap();
        element.click().await.unwrap();
    }

    async fn go(&self, address: &str, fragment: &str) {
        self.browser
            .goto(&format!("{address}/console/{fragment}"))
            .await
            .unwrap();
    }
}

/// A wall-clock time in Asia/Shanghai (UTC+8, no daylight saving), as a
/// `datetime-local` value, `minutes` from now.
fn shanghai_wall(minutes: i64) -> String {
    let at = Utc::now() + chrono::Duration::hours(8) + chrono::Duration::minutes(minutes);
    at.format("%Y-%m-%dT%H:%M").to_string()
}

impl Page {
    /// A headless Chromium page of `driver`'s, its screenshots saved in
    /// `target/console/`.
    async fn open(driver: &ChromeDriver) -> Self {
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console");
        std::fs::create_dir_all(&shots).unwrap();
        Self {
            browser: driver.browser().await,
            shots,
        }
    }
}

#[tokio::test]
async fn a_merchant_runs_a_sale_from_the_console_in_chromium() {
    let mut config = test_config();
    config.console_events_ms = 250;
    let app = TestApp::spawn_with(config).await;
    let driver = ChromeDriver::start().await;
    let page = Page::open(&driver).await;

    // Sign in: a wrong token is refused with the API's message.
    page.go(&app.address, "").await;
    page.until(
        "the sign-in form",
        "return !document.getElementById('sign-in').hidden;",
    )
    .await;
    page.screenshot("01-sign-in").await;
    page.type_into("#token", "a-wrong-token-of-at-least-32-bytes-long")
        .await;
    page.click("#sign-in-form button[type=submit]").await;
    let refusal = page.text_of("[data-error-for=token]").await;
    assert_eq!(refusal, "token: invalid admin token");
    page.screenshot("02-wrong-token").await;
    page.type_into("#token", ADMIN_TOKEN).await;
    page.click("#sign-in-form button[type=submit]").await;
    let listed = page.text_of("#view .muted").await;
    assert_eq!(listed, "No sales yet.");
    let stored = page
        .browser
        .execute(
            "return sessionStorage.getItem('flashsale.admin_token');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(stored, ADMIN_TOKEN, "the token is kept in sessionStorage");

    // Schedule a sale through the form; a bad stock shows the API's
    // message at the stock field.
    page.click("a[href='#/new']").await;
    page.until(
        "the schedule form",
        "return document.getElementById('new-sale-form');",
    )
    .await;
    page.type_into("#field-sku", "LC-POUCH-RED").await;
    page.type_into("#field-title", "Le Pliage pouch, red").await;
    page.type_into("#field-price_cents", "19900").await;
    page.type_into("#field-stock_total", "0").await;
    page.set_value("#field-starts_at", &shanghai_wall(-1)).await;
    page.set_value("#field-ends_at", &shanghai_wall(60)).await;
    page.click("#new-sale-form button[type=submit]").await;
    let shown = page.text_of("[data-error-for=stock_total]").await;
    let mut refused_body = crate::support::live_sale(0, 1);
    refused_body["title"] = json!("Le Pliage pouch, red");
    let api = app
        .admin(reqwest::Method::POST, "/admin/v1/sales", Some(refused_body))
        .await;
    assert_eq!(api.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let api: Value = api.json().await.unwrap();
    assert_eq!(
        shown, api["error"]["message"],
        "the API's message, at its field"
    );
    page.screenshot("03-bad-stock").await;

    page.type_into("#field-stock_total", "100").await;
    page.click("#new-sale-form button[type=submit]").await;
    let sale = page
        .until(
            "the new sale's page",
            "const m = /^#\\/sales\\/(.+)$/.exec(location.hash); \
             return m && document.querySelector('#sale-status [data-status=live]') ? m[1] : null;",
        )
        .await;
    let sale = sale.as_str().unwrap().to_owned();
    assert_eq!(app.sale(&sale).await["stock_total"], 100, "scheduled");

    // Listed, with its status and counts.
    page.click("a[href='#/sales']").await;
    let row = format!("#sales-table tr[data-sale-id='{sale}']");
    let listed = page.text_of(&row).await;
    assert!(listed.contains("Le Pliage pouch, red"), "{listed}");
    assert!(listed.contains("100 / 100"), "{listed}");
    page.screenshot("04-listed").await;

    // 50 orders through the API: the counts and the chart follow.
    page.click(&format!("{row} a")).await;
    page.until(
        "the live feed",
        "return document.querySelector('#chart svg[data-points]')?.dataset.points > 0;",
    )
    .await;
    let clock = page.text_of("#sale-clock").await;
    assert!(
        clock.starts_with("ends in "),
        "by the store's clock: {clock}"
    );
    let terms_hidden = page
        .browser
        .execute(
            "return document.getElementById('sale-terms-form').hidden;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(terms_hidden, true, "a live sale's terms do not change");
    for shopper in 0..50 {
        app.buy(&sale, &format!("console-shopper-{shopper}")).await;
    }
    page.until(
        "the counts after 50 orders",
        "const stat = (n) => document.querySelector(`[data-stat=${n}]`).textContent; \
         return stat('remaining') === '50' && stat('reserved') === '50';",
    )
    .await;
    let chart = page
        .until(
            "the chart moving",
            "const svg = document.querySelector('#chart svg'); \
             return svg.dataset.soldMax > 0 && svg.dataset.remainingLast === '50' \
               ? {sold_max: Number(svg.dataset.soldMax), points: Number(svg.dataset.points)} : null;",
        )
        .await;
    assert!(chart["sold_max"].as_f64().unwrap() > 0.0, "{chart}");
    page.screenshot("05-fifty-sold").await;

    // Top up the stock from the form: below what is held is refused at the
    // field; more is taken at once.
    let refused = page.refused("#stock-form", "stock_total", "10").await;
    assert!(
        refused.starts_with("stock_total cannot go below the 50 units"),
        "{refused}"
    );
    page.type_into("#stock-form [name=stock_total]", "120")
        .await;
    page.click("#stock-form button[type=submit]").await;
    page.until(
        "the topped-up stock",
        "return document.querySelector('[data-stat=remaining]').textContent === '70';",
    )
    .await;
    assert_eq!(app.sale(&sale).await["stock_total"], 120);

    // End it now (a second press confirms): its status changes.
    page.click("#end-now").await;
    page.click("#end-now").await;
    page.until(
        "the ended status",
        "return document.querySelector('#sale-status [data-status=ended]');",
    )
    .await;
    assert_eq!(app.sale(&sale).await["status"], "ended");
    let order = app.order(&sale, "console-latecomer", None, None).await;
    assert_eq!(
        error_code(order).await,
        (StatusCode::CONFLICT, "ended".to_owned())
    );
    page.scroll_to("#sale-status").await;
    page.screenshot("06-ended").await;

    // Audit from the console: the 50 orders add up.
    page.click("#run-audit").await;
    page.until(
        "the audit",
        "return document.querySelector('[data-audit-ok=true]');",
    )
    .await;
    page.scroll_to("#audit-result").await;
    page.screenshot("07-audit").await;

    // An upcoming sale can be cancelled from its page.
    let mut upcoming = crate::support::live_sale(10, 1);
    upcoming["starts_at"] = json!(crate::support::rfc3339_in(Duration::from_secs(600), false));
    let upcoming = app.create_sale(upcoming).await;
    page.go(&app.address, &format!("#/sales/{upcoming}")).await;
    let clock = page.text_of("#sale-clock").await;
    assert!(clock.starts_with("opens in "), "{clock}");
    page.click("#cancel-sale").await;
    page.click("#cancel-sale").await;
    page.until(
        "the cancelled status",
        "return document.querySelector('#sale-status [data-status=cancelled]');",
    )
    .await;
    assert_eq!(app.sale(&upcoming).await["status"], "cancelled");
    page.scroll_to("#sale-status").await;
    page.screenshot("08-cancelled").await;

    // The list is read a page at a time: 52 sales are a full page, then
    // "More" adds the last two (the oldest: the two above) and goes.
    for n in 0..50 {
        let mut more = crate::support::live_sale(1, 1);
        more["title"] = json!(format!("Filler {n:02}"));
        app.create_sale(more).await;
    }
    page.go(&app.address, "#/sales").await;
    let rows = "const n = document.querySelectorAll('#sales-table tbody tr').length; \
                return n > 0 ? n : null;";
    let first_page = page.until("the first page of sales", rows).await;
    assert_eq!(first_page, 50);
    page.click("#view button.more").await;
    page.until(
        "every sale after More",
        "return document.querySelectorAll('#sales-table tbody tr').length === 52 \
           && document.querySelector('#view button.more').hidden;",
    )
    .await;
    let oldest = page.text_of("#sales-table tbody tr:last-child").await;
    assert!(oldest.contains("Le Pliage pouch, red"), "{oldest}");
    page.screenshot("09-every-sale").await;

    // Campaigns: listed with their phase and counts; one campaign's rounds
    // × items with each item's counts and the round's total; the live
    // round ended from its page; an upcoming campaign cancelled.
    let at = |minutes: i64| {
        json!(crate::support::rfc3339_in(
            Duration::from_secs(minutes.unsigned_abs() * 60),
            minutes < 0
        ))
    };
    let campaign_body = |title: &str, first_starts: i64| {
        json!({
            "title": title,
            "per_user_limit_per_round": 1,
            "rounds": [
                {"starts_at": at(first_starts), "ends_at": at(first_starts + 60)},
                {"starts_at": at(first_starts + 120), "ends_at": at(first_starts + 180)},
            ],
            "items": [
                {"sku": "CP-A", "title": "Pouch", "price_cents": 9900,
                 "original_price_cents": 19900, "stock_per_round": 5},
                {"sku": "CP-B", "title": "Tote", "price_cents": 29900,
                 "original_price_cents": 59900, "stock_per_round": 5},
            ],
        })
    };
    let created = |body: Value| {
        let app = &app;
        async move {
            let answer = app
                .admin(reqwest::Method::POST, "/admin/v1/campaigns", Some(body))
                .await;
            assert_eq!(answer.status(), StatusCode::CREATED);
            answer.json::<Value>().await.unwrap()
        }
    };
    let live = created(campaign_body("11.11 seckill", -1)).await;
    let live_id = live["id"].as_str().unwrap().to_owned();
    let first_item = live["rounds"][0]["items"][0]["sale_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.buy(&first_item, "console-campaign-shopper").await;
    let upcoming = created(campaign_body("12.12 seckill", 60)).await;
    let upcoming_id = upcoming["id"].as_str().unwrap().to_owned();

    page.click("a[href='#/campaigns']").await;
    let listed = page
        .text_of(&format!(
            "#campaigns-table tr[data-campaign-id='{live_id}']"
        ))
        .await;
    assert!(listed.contains("11.11 seckill"), "{listed}");
    assert!(listed.contains("round 0 live"), "{listed}");
    assert!(listed.contains("19 / 20"), "the campaign's total: {listed}");
    let later = page
        .text_of(&format!(
            "#campaigns-table tr[data-campaign-id='{upcoming_id}']"
        ))
        .await;
    assert!(later.contains("upcoming"), "{later}");
    page.screenshot("10-campaigns").await;

    page.click(&format!(
        "#campaigns-table tr[data-campaign-id='{live_id}'] a"
    ))
    .await;
    let item = page
        .text_of(&format!("tr[data-sale-id='{first_item}']"))
        .await;
    assert!(item.contains("Pouch"), "{item}");
    assert!(item.contains("99.00 CNY / 199.00 CNY"), "{item}");
    assert!(item.contains("4 / 5"), "{item}");
    let total = page.text_of("tr[data-round-totals='0']").await;
    assert!(total.contains("9 / 10"), "{total}");
    page.click("#end-round-0").await;
    page.click("#end-round-0").await;
    page.until(
        "round 0 ended",
        "return document.querySelector(\"[data-round='0'] .status[data-status=ended]\");",
    )
    .await;
    let ended = app.campaign(&live_id).await;
    assert_eq!(ended["rounds"][0]["status"], "ended", "{ended}");
    assert_eq!(app.sale(&first_item).await["status"], "ended");
    page.screenshot("11-round-ended").await;

    page.go(&app.address, &format!("#/campaigns/{upcoming_id}"))
        .await;
    page.until(
        "the upcoming campaign",
        "return document.querySelector('#campaign-status[data-status=upcoming]');",
    )
    .await;
    page.click("#cancel-campaign").await;
    page.click("#cancel-campaign").await;
    page.until(
        "the cancelled campaign",
        "return document.querySelector('#campaign-status[data-status=ended]');",
    )
    .await;
    let item = upcoming["rounds"][0]["items"][0]["sale_id"]
        .as_str()
        .unwrap();
    assert_eq!(app.sale(item).await["status"], "cancelled");
    page.screenshot("12-campaign-cancelled").await;

    // Orders: a sale's orders are listed on its page; a paid one is
    // refunded and put back on sale from its own page, found again by id.
    let shop = app.create_sale(crate::support::live_sale(3, 1)).await;
    let bought = app.buy(&shop, "console-refunded-shopper").await;
    let order_id = bought["id"].as_str().unwrap().to_owned();
    let paid = app
        .shopper_post(
            "console-refunded-shopper",
            &format!("/api/v1/orders/{order_id}/pay"),
        )
        .await;
    assert_eq!(paid.status(), StatusCode::OK);
    page.go(&app.address, &format!("#/sales/{shop}")).await;
    page.text_of("#sale-title").await;
    page.click("#show-orders").await;
    let row = format!("tr[data-order-id='{order_id}']");
    let listed = page.text_of(&row).await;
    assert!(listed.contains("console-refunded-shopper"), "{listed}");
    assert!(listed.contains("paid"), "{listed}");
    page.click(&format!("{row} a")).await;
    page.until(
        "the paid order",
        "return document.querySelector('#order-status [data-status=paid]');",
    )
    .await;
    let facts = page.text_of("dl.facts").await;
    assert!(facts.contains("console-refunded-shopper"), "{facts}");
    assert!(facts.contains("sim_"), "the transaction id: {facts}");
    page.click("#refund-restocked").await;
    page.click("#refund-restocked").await;
    page.until(
        "the refunded order",
        "return document.querySelector('#order-status [data-status=refunded]');",
    )
    .await;
    assert_eq!(app.sale(&shop).await["stats"]["restocked"], 1);
    page.go(&app.address, "#/sales").await;
    page.type_into("#find-order [name=order_id]", &order_id)
        .await;
    page.click("#find-order button[type=submit]").await;
    let facts = page
        .until(
            "the order found by its id",
            "const f = document.querySelector('dl.facts');              return f && location.hash.startsWith('#/orders/') ? f.textContent : null;",
        )
        .await;
    assert!(facts.as_str().unwrap().contains("restocked"), "{facts}");
    page.screenshot("13-order-refunded").await;

    // A late payment (paid after its cancel) the merchant paid back by
    // hand is recorded from its page: refunded, and when.
    let late = app.buy(&shop, "console-late-shopper").await;
    let late_id = late["id"].as_str().unwrap().to_owned();
    for action in ["cancel", "pay"] {
        let answer = app
            .shopper_post(
                "console-late-shopper",
                &format!("/api/v1/orders/{late_id}/{action}"),
            )
            .await;
        assert_eq!(answer.status(), StatusCode::OK, "{action}");
    }
    page.go(&app.address, &format!("#/orders/{late_id}")).await;
    page.until(
        "the order owed a refund",
        "return document.querySelector('#order-status [data-status=refund_required]');",
    )
    .await;
    page.click("#refund-settled-by-hand").await;
    page.click("#refund-settled-by-hand").await;
    page.until(
        "the order paid back by hand",
        "return document.querySelector('#order-status [data-status=refunded]');",
    )
    .await;
    let settled = app
        .admin(
            reqwest::Method::GET,
            &format!("/admin/v1/orders/{late_id}"),
            None,
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert!(
        settled["refund_settled_by_hand_at"].is_string(),
        "{settled}"
    );
    let facts = page.text_of("dl.facts").await;
    assert!(facts.contains("Refund paid back by hand"), "{facts}");
    page.until(
        "no button once paid back",
        "return document.querySelector('#refund-settled-by-hand') ? null : true;",
    )
    .await;

    // A campaign scheduled from the console: two rounds (the second
    // filled in after the first), two items; a list price below the
    // seckill price is refused under the items with the API's message.
    page.go(&app.address, "#/campaigns").await;
    page.click("a[href='#/campaigns/new']").await;
    page.until(
        "the campaign form",
        "return document.getElementById('new-campaign-form');",
    )
    .await;
    page.type_into("#field-title", "12.12 from the console")
        .await;
    page.click("#add-rounds").await;
    let item = |row: u8, label: &str| {
        format!("#items-table tbody tr:nth-child({row}) input[aria-label='{label}']")
    };
    for (label, value) in [
        ("SKU", "CN-SCARF"),
        ("Title", "Silk scarf"),
        ("Seckill price (cents)", "19900"),
        ("List price (cents)", "9900"),
        ("Stock per round", "3"),
    ] {
        page.type_into(&item(1, label), value).await;
    }
    page.click("#new-campaign-form button[type=submit]").await;
    let refused = page
        .text_of("#items-table [data-error-for~=original_price_cents]")
        .await;
    assert_eq!(
        refused,
        "original_price_cents: must not be below price_cents"
    );
    page.screenshot("14-campaign-refused").await;
    page.type_into(&item(1, "List price (cents)"), "39900")
        .await;
    page.click("#add-items").await;
    for (label, value) in [
        ("SKU", "CN-GLOVES"),
        ("Title", "Leather gloves"),
        ("Seckill price (cents)", "29900"),
        ("List price (cents)", "59900"),
        ("Stock per round", "2"),
    ] {
        page.type_into(&item(2, label), value).await;
    }
    page.click("#new-campaign-form button[type=submit]").await;
    let made = page
        .until(
            "the new campaign's page",
            "const m = /^#\\/campaigns\\/(c_.+)$/.exec(location.hash); \
             return m && document.getElementById('campaign-title') ? m[1] : null;",
        )
        .await;
    let made = app.campaign(made.as_str().unwrap()).await;
    assert_eq!(made["title"], "12.12 from the console");
    let rounds = made["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{made}");
    assert_eq!(rounds[0]["status"], "upcoming");
    assert!(
        rounds[1]["starts_at"].as_str() > rounds[0]["ends_at"].as_str(),
        "the second round after the first: {made}"
    );
    let skus: Vec<&Value> = rounds[1]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| &item["sku"])
        .collect();
    assert_eq!(skus, [&json!("CN-SCARF"), &json!("CN-GLOVES")]);
    assert_eq!(rounds[1]["items"][1]["stats"]["stock_total"], 2);
    page.screenshot("15-campaign-scheduled").await;

    // The campaign changed from its page: an item's stock in every round
    // (0 refused at its field), a round moved an hour later, a round added.
    let made_id = made["id"].as_str().unwrap().to_owned();
    let gloves = made["rounds"][0]["items"][1]["number"].as_u64().unwrap();
    let stock_form = format!("#item-stock-{gloves}");
    let refused = page.refused(&stock_form, "stock_per_round", "0").await;
    assert!(refused.starts_with("stock_per_round: "), "{refused}");
    page.type_into(&format!("{stock_form} [name=stock_per_round]"), "4")
        .await;
    page.click(&format!("{stock_form} button[type=submit]"))
        .await;
    page.until(
        "the new stock",
        &format!(
            "return document.querySelector(\"[data-round='1'] tr[data-sale-id='{}']\")
               ?.textContent.includes('4 / 4');",
            made["rounds"][1]["items"][1]["sale_id"].as_str().unwrap()
        ),
    )
    .await;
    let changed = app.campaign(&made_id).await;
    for round in 0..2 {
        assert_eq!(
            changed["rounds"][round]["items"][1]["stats"]["stock_total"], 4,
            "{changed}"
        );
    }
    let later = |at: &Value, minutes: i64| {
        let at = chrono::DateTime::parse_from_rfc3339(at.as_str().unwrap()).unwrap()
            + chrono::Duration::hours(8)
            + chrono::Duration::minutes(minutes);
        at.format("%Y-%m-%dT%H:%M").to_string()
    };
    let second = &changed["rounds"][1];
    page.set_value(
        "#move-round-1 [name=starts_at]",
        &later(&second["starts_at"], 60),
    )
    .await;
    page.set_value(
        "#move-round-1 [name=ends_at]",
        &later(&second["ends_at"], 60),
    )
    .await;
    page.click("#move-round-1 button[type=submit]").await;
    page.until(
        "the campaign answered after the move",
        &format!(
            "return document.querySelector('#campaign-title') \
               && document.body.textContent.includes('version {}');",
            changed["version"].as_i64().unwrap() + 1
        ),
    )
    .await;
    page.click("#add-round button[type=submit]").await;
    page.until(
        "the round added",
        "return document.querySelector(\"[data-round='2']\");",
    )
    .await;
    let moved = app.campaign(&made_id).await;
    let hour_later = |before: &Value, after: &Value| {
        let parse =
            |at: &Value| chrono::DateTime::parse_from_rfc3339(at.as_str().unwrap()).unwrap();
        parse(after) - parse(before) == chrono::Duration::hours(1)
    };
    assert!(
        hour_later(&second["starts_at"], &moved["rounds"][1]["starts_at"])
            && hour_later(&second["ends_at"], &moved["rounds"][1]["ends_at"]),
        "round 1 moved an hour later: {moved}"
    );
    assert_eq!(moved["rounds"].as_array().unwrap().len(), 3, "{moved}");
    assert_eq!(moved["rounds"][2]["items"][1]["stats"]["stock_total"], 4);

    // Before the start, the terms: a list price under the seckill price
    // refused at its field, then the gloves' prices in every round, and
    // the campaign's title and limit in all.
    let terms = format!("#item-terms-{gloves}");
    let refused = page.refused(&terms, "original_price_cents", "100").await;
    assert_eq!(
        refused,
        "original_price_cents: must not be below price_cents"
    );
    page.type_into(&format!("{terms} [name=original_price_cents]"), "49900")
        .await;
    page.type_into(&format!("{terms} [name=price_cents]"), "24900")
        .await;
    page.click(&format!("{terms} button[type=submit]")).await;
    let after_move = moved["version"].as_i64().unwrap();
    let at_version = |version: i64| {
        format!(
            "return document.querySelector('#campaign-title') \
               && document.body.textContent.includes('version {version}');"
        )
    };
    page.until("the item's new prices", &at_version(after_move + 1))
        .await;
    page.type_into("#campaign-terms [name=title]", "12.12 renamed")
        .await;
    page.type_into("#campaign-terms [name=per_user_limit_total]", "3")
        .await;
    page.type_into("#campaign-terms [name=payment_timeout_secs]", "600")
        .await;
    page.click("#campaign-terms [name=require_purchase_token]")
        .await;
    // No webhook here: a reminder is refused at its field.
    let refused = page
        .refused("#campaign-terms", "remind_before_secs", "120")
        .await;
    assert!(
        refused.starts_with("remind_before_secs: reminders go to the merchant's webhook"),
        "{refused}"
    );
    page.type_into("#campaign-terms [name=remind_before_secs]", "")
        .await;
    page.click("#campaign-terms button[type=submit]").await;
    page.until("the campaign's new terms", &at_version(after_move + 2))
        .await;
    let renamed = app.campaign(&made_id).await;
    assert_eq!(renamed["title"], "12.12 renamed");
    assert_eq!(renamed["per_user_limit_total"], 3);
    assert_eq!(renamed["payment_timeout_secs"], 600);
    assert_eq!(renamed["remind_before_secs"], Value::Null);
    assert_eq!(renamed["require_purchase_token"], true);
    assert_eq!(renamed["currency"], "CNY");
    for round in renamed["rounds"].as_array().unwrap() {
        let gloves = &round["items"][1];
        assert_eq!(
            (&gloves["price_cents"], &gloves["original_price_cents"]),
            (&json!(24900), &json!(49900)),
            "{renamed}"
        );
    }
    assert_eq!(page.text_of("#campaign-title").await, "12.12 renamed");
    page.screenshot("16-campaign-changed").await;

    // A sale with a waiting room, scheduled from the form: a rate of 0 is
    // refused at its field; its page shows the line as shoppers join.
    page.go(&app.address, "#/new").await;
    page.until(
        "the schedule form",
        "return document.getElementById('new-sale-form');",
    )
    .await;
    page.type_into("#field-sku", "LC-QUEUED").await;
    page.type_into("#field-title", "Queued pouch").await;
    page.type_into("#field-price_cents", "19900").await;
    page.type_into("#field-stock_total", "5").await;
    page.set_value("#field-starts_at", &shanghai_wall(30)).await;
    page.set_value("#field-ends_at", &shanghai_wall(90)).await;
    page.choose("#field-admission_mode", "queue").await;
    page.type_into("[name='admission.prequeue_opens_secs']", "3600")
        .await;
    page.type_into("[name='admission.admit_per_sec']", "0")
        .await;
    page.click("#new-sale-form button[type=submit]").await;
    let refused = page
        .text_of("[data-error-for='admission.admit_per_sec']")
        .await;
    assert_eq!(
        refused,
        "admission.admit_per_sec: must be between 1 and 100000"
    );
    page.type_into("[name='admission.admit_per_sec']", "200")
        .await;
    page.click("#new-sale-form button[type=submit]").await;
    let queued = page
        .until(
            "the queued sale's waiting room",
            "const m = /^#\\/sales\\/(.+)$/.exec(location.hash); \
             return m && document.querySelector('#waiting-room:not([hidden])') ? m[1] : null;",
        )
        .await;
    let queued = queued.as_str().unwrap().to_owned();
    let admission = &app.sale(&queued).await["admission"];
    assert_eq!(admission["mode"], "queue", "{admission}");
    assert_eq!(admission["admit_per_sec"], 200, "{admission}");
    assert_eq!(admission["prequeue_opens_secs"], 3600, "{admission}");
    for shopper in ["console-queuer-1", "console-queuer-2"] {
        let joined = app
            .shopper_post(shopper, &format!("/api/v1/sales/{queued}/queue"))
            .await;
        assert_eq!(joined.status(), StatusCode::CREATED);
    }
    page.until(
        "two shoppers in the line",
        "const count = (n) => document.querySelector(`[data-line=${n}]`).textContent; \
         return count('joined') === '2' && count('waiting') === '2';",
    )
    .await;
    let settings = page.text_of("#waiting-room-settings").await;
    assert!(settings.contains("200 admitted per second"), "{settings}");
    page.scroll_to("#waiting-room").await;
    page.screenshot("17-waiting-room").await;

    // Before the start, the sale's terms and admission change from its
    // page: a limit of 0 refused at its field; then the title, the limit
    // and a switch to the race (the waiting room's panel goes), and back
    // to the waiting room at another rate (the same seed: the commitment
    // shown stays the one used).
    let terms = "#sale-terms-form";
    let seed = admission["seed_sha256"].clone();
    page.scroll_to(terms).await;
    // Changed elsewhere after the page read the sale: the console's
    // change keeps it, as it sends only what the merchant changed.
    let elsewhere = app
        .admin(
            reqwest::Method::PATCH,
            &format!("/admin/v1/sales/{queued}"),
            Some(json!({"price_cents": 18800})),
        )
        .await;
    assert_eq!(elsewhere.status(), StatusCode::OK);
    let refused = page.refused(terms, "per_user_limit", "0").await;
    assert!(
        refused.starts_with("per_user_limit: must be between 1"),
        "{refused}"
    );
    page.type_into(&format!("{terms} [name=per_user_limit]"), "2")
        .await;
    page.type_into(&format!("{terms} [name=title]"), "Pouch, the race")
        .await;
    page.choose(&format!("{terms} [name=admission_mode]"), "open")
        .await;
    page.click(&format!("{terms} button[type=submit]")).await;
    page.until(
        "the sale as a race",
        "return document.getElementById('sale-title').textContent === 'Pouch, the race' \
           && document.getElementById('waiting-room').hidden;",
    )
    .await;
    let raced = app.sale(&queued).await;
    assert_eq!(
        (
            &raced["title"],
            &raced["per_user_limit"],
            &raced["price_cents"]
        ),
        (&json!("Pouch, the race"), &json!(2), &json!(18800)),
        "{raced}"
    );
    assert_eq!(raced["admission"]["mode"], "open", "{raced}");
    assert_eq!(
        raced["admission"]["admit_per_sec"], 200,
        "the race keeps the waiting room's settings: {raced}"
    );
    // A refusal of a waiting-room setting the race hides is shown where
    // it is seen, at the form.
    page.set_value(&format!("{terms} [name='admission.admit_per_sec']"), "0")
        .await;
    page.click(&format!("{terms} button[type=submit]")).await;
    let refused = page
        .text_of(&format!("{terms} .form-error[data-error-for=form]"))
        .await;
    assert!(
        refused.starts_with("admission.admit_per_sec: must be between 1"),
        "{refused}"
    );
    page.choose(&format!("{terms} [name=admission_mode]"), "queue")
        .await;
    page.type_into(&format!("{terms} [name='admission.admit_per_sec']"), "300")
        .await;
    page.click(&format!("{terms} button[type=submit]")).await;
    page.until(
        "the waiting room back",
        "const s = document.getElementById('waiting-room-settings'); \
         return s && !document.getElementById('waiting-room').hidden \
           && s.textContent.includes('300 admitted per second');",
    )
    .await;
    let requeued = app.sale(&queued).await;
    assert_eq!(requeued["admission"]["mode"], "queue", "{requeued}");
    assert_eq!(requeued["admission"]["admit_per_sec"], 300, "{requeued}");
    assert_eq!(
        requeued["admission"]["prequeue_opens_secs"], 3600,
        "{requeued}"
    );
    assert_eq!(requeued["admission"]["seed_sha256"], seed, "{requeued}");
    assert_eq!(requeued["title"], "Pouch, the race", "{requeued}");
    page.screenshot("18-sale-terms-changed").await;

    // A campaign's sale names its place and links to its campaign, with
    // no form of its own: it changes with its campaign.
    let gloves_sale = renamed["rounds"][0]["items"][1]["sale_id"]
        .as_str()
        .unwrap()
        .to_owned();
    page.go(&app.address, &format!("#/sales/{gloves_sale}"))
        .await;
    let place = page.text_of("#campaign-place").await;
    assert_eq!(
        place,
        format!(
            "Round {}, item {gloves} of campaign {made_id}: it changes with its campaign.",
            renamed["rounds"][0]["number"]
        )
    );
    let forms = page
        .browser
        .execute(
            "return document.querySelectorAll('#actions form').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(forms, 0);
    page.click("#campaign-place a").await;
    page.until(
        "the campaign's page",
        &format!(
            "return location.hash === '#/campaigns/{made_id}' \
               && document.getElementById('campaign-title');"
        ),
    )
    .await;
    page.screenshot("19-campaign-sale").await;

    // Before the start, a round and an item removed from the campaign's
    // page (a second press confirms): their sales are cancelled.
    let before = app.campaign(&made_id).await;
    let last_round = before["rounds"][2]["number"].as_u64().unwrap();
    let scarf = before["rounds"][0]["items"][0]["number"].as_u64().unwrap();
    let version = before["version"].as_i64().unwrap();
    for (button, version) in [
        (format!("#remove-round-{last_round}"), version + 1),
        (format!("#remove-item-{scarf}"), version + 2),
    ] {
        page.scroll_to(&button).await;
        page.click(&button).await;
        page.click(&button).await;
        page.until(&button, &at_version(version)).await;
    }
    let after = app.campaign(&made_id).await;
    let rounds = after["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{after}");
    for round in rounds {
        let skus: Vec<&Value> = round["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| &item["sku"])
            .collect();
        assert_eq!(skus, [&json!("CN-GLOVES")], "{after}");
    }
    let removed_sale = before["rounds"][2]["items"][0]["sale_id"].as_str().unwrap();
    assert_eq!(app.sale(removed_sale).await["status"], "cancelled");
    page.screenshot("20-campaign-trimmed").await;

    page.browser.close().await.unwrap();
    app.stop().await;
}

/// Goal: a merchant takes a payment exception they settled off the list
/// from the console. Method: an engine with WeChat Pay (the stand-in) is
/// notified of a payment of the wrong amount; on the console's page of
/// payment exceptions, *Settled* pressed twice takes its row away, the
/// page then says there are none, and the API lists it no more.
#[tokio::test]
async fn a_settled_payment_exception_leaves_the_console() {
    let (harness, sim, _server) =
        crate::payments_wechat::wechat_engine(crate::support::Backend::Embedded).await;
    let app = &harness.app;
    let (_, order) = crate::payments_wechat::sale_with_order(app, 5, "console-payer").await;
    let wrong = sim.payment(&order, 1);
    crate::payments_wechat::assert_acknowledged(crate::payments_wechat::notify(app, &wrong).await)
        .await;
    let driver = ChromeDriver::start().await;
    let page = Page::open(&driver).await;
    page.go(&app.address, "").await;
    page.type_into("#token", ADMIN_TOKEN).await;
    page.click("#sign-in-form button[type=submit]").await;
    page.go(&app.address, "#/payment-exceptions").await;
    let row = page.text_of("#payment-exceptions tbody tr").await;
    assert!(row.starts_with("amount_mismatch"), "{row}");
    assert!(row.contains(&order), "{row}");
    page.screenshot("pe-01-listed").await;
    page.click("#payment-exceptions tbody tr button").await;
    page.click("#payment-exceptions tbody tr button").await;
    // The last one settled, the page says there are none, as on a visit.
    page.until(
        "the table gone and None. in its place",
        "return document.getElementById('payment-exceptions') === null \
         && [...document.querySelectorAll('#view p.muted')].some((p) => p.textContent === 'None.');",
    )
    .await;
    let listed = app
        .admin(reqwest::Method::GET, "/admin/v1/payment-exceptions", None)
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(listed["exceptions"], json!([]), "{listed}");
    page.screenshot("pe-02-settled").await;
    page.browser.close().await.unwrap();
}
