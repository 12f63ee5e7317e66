//! The status page and the gate board: each one small HTML file, its stylesheet and its
//! script, built into the binary. The scripts fetch the JSON API every few seconds and render
//! it (the page in zh-CN and en, the board in Chinese with English under it), charts drawn as
//! SVG by the page's own script; nothing is loaded from elsewhere, so the content security
//! policy allows only this origin.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("page/index.html");
const CSS: &str = include_str!("page/status.css");
const JS: &str = include_str!("page/status.js");
const BOARD: &str = include_str!("page/board.html");
const BOARD_CSS: &str = include_str!("page/board.css");
const BOARD_JS: &str = include_str!("page/board.js");

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

pub(super) async fn board() -> Response {
    asset("text/html; charset=utf-8", BOARD)
}

pub(super) async fn board_css() -> Response {
    asset("text/css; charset=utf-8", BOARD_CSS)
}

pub(super) async fn board_js() -> Response {
    asset("text/javascript; charset=utf-8", BOARD_JS)
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
        // Tiles and charts took the page from 22 to about 36 KB; a site box on a slow link
        // still loads it in a moment, and it is revalidated, not refetched.
        assert!(super::size() < 40 * 1024, "{} bytes", super::size());
        let board = super::BOARD.len() + super::BOARD_CSS.len() + super::BOARD_JS.len();
        assert!(board < 16 * 1024, "the board: {board} bytes");
        for text in [
            super::INDEX,
            super::CSS,
            super::JS,
            super::BOARD,
            super::BOARD_CSS,
            super::BOARD_JS,
        ] {
            // The SVG namespace is a name, not something fetched.
            let text = text.replace("http://www.w3.org/2000/svg", "");
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
            "id=\"tiles\"",
            "id=\"equipment\"",
            "id=\"charts\"",
        ] {
            assert!(super::INDEX.contains(id), "{id}");
        }
        for id in [
            "id=\"b-name\"",
            "id=\"b-permit\"",
            "id=\"b-time\"",
            "id=\"v-aqi\"",
            "id=\"v-pm25\"",
            "id=\"v-pm10\"",
            "id=\"v-noise\"",
            "id=\"v-temperature\"",
            "id=\"v-humidity\"",
            "id=\"v-wind\"",
        ] {
            assert!(super::BOARD.contains(id), "{id}");
        }
    }
}
