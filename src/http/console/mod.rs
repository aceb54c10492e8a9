//! The merchant console: one HTML page and its ES modules and stylesheet,
//! embedded in the binary (`include_str!`) and served at `/console/`, so a
//! fresh machine needs no Node toolchain and the browser no CDN.
//!
//! The page holds no admin data: it signs in with the admin token (kept in
//! the tab's `sessionStorage`, sent as a bearer header) and reads and
//! changes everything through the admin API, with its usual checks; a
//! sale's page follows `GET /admin/v1/sales/{id}/events`. Every answer here
//! carries a Content-Security-Policy that allows only this origin's scripts
//! and styles (no inline script or style), `X-Frame-Options: DENY` and no
//! referrer.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiPath};
use super::openapi::error_responses;
use super::AppState;

/// What the console's page may load and do: its own scripts, styles and
/// API calls only; it may not be framed, nor post forms anywhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file of the console.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

/// The page, then every file it loads by name under `/console/`.
const PAGE: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("index.html"),
};
const ASSETS: &[Asset] = &[
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("console.css"),
    },
    Asset {
        name: "console.js",
        content_type: JS,
        body: include_str!("console.js"),
    },
    Asset {
        name: "api.js",
        content_type: JS,
        body: include_str!("api.js"),
    },
    Asset {
        name: "chart.js",
        content_type: JS,
        body: include_str!("chart.js"),
    },
    Asset {
        name: "dom.js",
        content_type: JS,
        body: include_str!("dom.js"),
    },
    Asset {
        name: "time.js",
        content_type: JS,
        body: include_str!("time.js"),
    },
];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(asset))
}

error_responses!(
    PageErrors = [Overloaded, Unavailable];
    AssetErrors = [NotFound, Overloaded, Unavailable];
);

/// The merchant console's page (no admin data: it signs in with the admin
/// token and calls the admin API).
#[utoipa::path(
    get,
    path = "/console/",
    operation_id = "console_page",
    tag = "console",
    responses(
        (status = 200, description = "The console's HTML page.", content_type = "text/html",
         body = String),
        PageErrors,
    )
)]
async fn page() -> Response {
    served(&PAGE)
}

/// A script or stylesheet of the console, by name.
#[utoipa::path(
    get,
    path = "/console/{asset}",
    operation_id = "console_asset",
    tag = "console",
    params(("asset" = String, Path, description = "The file's name, e.g. `console.js`.")),
    responses(
        (status = 200, description = "The file (JavaScript module or CSS).",
         content_type = "text/javascript", body = String),
        AssetErrors,
    )
)]
async fn asset(ApiPath(name): ApiPath<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|asset| asset.name == name)
        .map(served)
        .ok_or_else(|| ApiError::NotFound("no such console file".into()))
}

fn served(asset: &Asset) -> Response {
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        // A new engine version's console is taken at once.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_the_page_and_modules_load_is_served() {
        let served: Vec<&str> = ASSETS.iter().map(|asset| asset.name).collect();
        for file in std::iter::once(&PAGE).chain(ASSETS) {
            for quoted in file.body.split(['"', '\'']).skip(1).step_by(2) {
                let Some(name) = quoted
                    .strip_prefix("/console/")
                    .or_else(|| quoted.strip_prefix("./"))
                else {
                    continue;
                };
                assert!(served.contains(&name), "{} loads {quoted}", file.name);
            }
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = PAGE.body;
        assert!(!page.contains("<script>"), "scripts load from files");
        assert!(!page.contains("<style"), "styles load from files");
        assert!(!page.contains("style="), "no inline style attribute");
        let handlers = page
            .split_whitespace()
            .filter(|word| word.starts_with("on") && word.contains('='));
        assert_eq!(handlers.count(), 0, "no inline event handler");
    }

    #[test]
    fn every_answer_carries_the_security_headers() {
        let response = served(&PAGE);
        let headers = response.headers();
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let policy = headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap_or("");
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
    }
}
