//! The status page: one small HTML file, its stylesheet and its script, built into the binary.
//! The script fetches the JSON API every few seconds and renders it (zh-CN and en); nothing is
//! loaded from elsewhere, so the content security policy allows only this origin.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("page/index.html");
const CSS: &str = include_str!("page/status.css");
const JS: &str = include_str!("page/status.js");

/// Only this origin; no inline script or style, no frames.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Small and built into the binary: always revalidated, so an upgrade shows at once.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

pub(super) async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

pub(super) async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

/// The page's total size, for the test that keeps it small.
#[cfg(test)]
pub(super) fn size() -> usize {
    INDEX.len() + CSS.len() + JS.len()
}

#[cfg(test)]
mod tests {
    #[test]
    fn small_and_self_contained() {
        assert!(super::size() < 24 * 1024, "{} bytes", super::size());
        for text in [super::INDEX, super::CSS, super::JS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        // The ids the end-to-end test and people's scripts rely on.
        for id in [
            "id=\"devices\"",
            "id=\"readings\"",
            "id=\"alerts\"",
            "id=\"compliance\"",
            "id=\"actuators\"",
            "id=\"gateway\"",
            "id=\"lang-en\"",
            "id=\"lang-zh\"",
            "id=\"updated\"",
            "id=\"error\"",
            "id=\"uplink-error\"",
            "id=\"stations\"",
        ] {
            assert!(super::INDEX.contains(id), "{id}");
        }
    }
}
