//! The dashboard's files (issue #6): every client-side route gets the page, assets carry
//! their content type, a revalidating ETag and a strict Content-Security-Policy. What the
//! pages do is tested in a real browser (tests/browser/).

use crate::helpers::{Server, client_with};

#[tokio::test]
async fn dashboard_pages_and_assets_are_served_with_a_strict_policy() {
    let server = Server::start(&[]).await;
    for path in [
        "/",
        "/jobs",
        "/jobs/01a21a04-54dd-70b5-88c3-e6a8090a9f36",
        "/dlq",
        "/policies",
        "/login",
    ] {
        let r = server
            .http
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let headers = r.headers().clone();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(
            r.text()
                .await
                .unwrap()
                .contains(r#"<script type="module" src="/assets/app.js">"#)
        );
    }
    for (asset, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let url = format!("{}/assets/{asset}", server.url);
        let r = server.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert_eq!(r.headers()["content-type"], content_type);
        assert_eq!(r.headers()["cache-control"], "no-cache");
        let etag = r.headers()["etag"].clone();
        let again = server
            .http
            .get(&url)
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{asset} revalidates");
        assert!(again.bytes().await.unwrap().is_empty());
    }
    let missing = server
        .http
        .get(format!("{}/assets/nope.js", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn the_page_holds_no_data_so_it_needs_no_token_but_the_api_behind_it_does() {
    let server = Server::start(&[]).await;
    let anonymous = client_with(None);
    let page = anonymous
        .get(format!("{}/jobs", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let api = anonymous.get(server.api("/jobs")).send().await.unwrap();
    assert_eq!(api.status(), 401);
}
