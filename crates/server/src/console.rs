//! The web console at `/console`: static files compiled into the binary (plain ES modules, no
//! build step), served without a token — they hold no data. Everything the console shows it
//! reads with the token the user enters, through the public HTTP API.
//!
//! Every path under `/console` that is not a file answers the page itself, so that each view
//! has a URL of its own (`/console/projections/carts`) that can be bookmarked and reloaded.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

macro_rules! asset {
    ($path:literal) => {
        (
            $path,
            content_type($path),
            include_bytes!(concat!("../console/", $path)),
        )
    };
}

const fn content_type(path: &str) -> &'static str {
    let b = path.as_bytes();
    match b[b.len() - 1] {
        b's' if b[b.len() - 2] == b'j' => "text/javascript; charset=utf-8",
        b's' => "text/css; charset=utf-8",
        b'g' => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// The files, by path below `/console/assets/`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    asset!("app.js"),
    asset!("api.js"),
    asset!("ui.js"),
    asset!("style.css"),
    asset!("favicon.svg"),
    asset!("pages/overview.js"),
    asset!("pages/events.js"),
    asset!("pages/streams.js"),
    asset!("pages/registry.js"),
    asset!("pages/modules.js"),
    asset!("pages/projections.js"),
    asset!("pages/commands.js"),
    asset!("pages/reactors.js"),
];

const INDEX: &str = include_str!("../console/index.html");

/// What the page may load and where it may connect: this server only. No inline scripts or
/// styles, no frames.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' \
                      data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
                      frame-ancestors 'none'";

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(console_page))
        .route("/console/", get(console_page))
        .route("/console/assets/{*path}", get(console_asset))
        .route("/console/{*view}", get(console_page))
}

fn secured(mut response: Response, cache: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

async fn console_page() -> Response {
    let response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response();
    secured(response, "no-cache")
}

async fn console_asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, content_type, bytes)) => {
            // Revalidated every time: a new binary may carry new files under the same names.
            secured(
                ([(header::CONTENT_TYPE, *content_type)], *bytes).into_response(),
                "no-cache",
            )
        }
        None => crate::problem::ApiError::NotFound(format!("the console has no file {path:?}"))
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_its_media_type() {
        for (path, ct, bytes) in ASSETS {
            assert!(!bytes.is_empty(), "{path}");
            let want = if path.ends_with(".js") {
                "text/javascript; charset=utf-8"
            } else if path.ends_with(".css") {
                "text/css; charset=utf-8"
            } else {
                "image/svg+xml"
            };
            assert_eq!(*ct, want, "{path}");
        }
    }
}
