//! meshd's status page in a real headless browser (Chromium through ChromeDriver): the
//! page's script draws the mesh's proxies, clusters, revisions and config errors, and
//! keeps them current by itself; tenant-written text stays text.

use fleetmesh_e2e::browser::Browser;
use fleetmesh_e2e::*;
use std::time::Duration;

/// A config file whose name is markup: if the page ever set it as HTML, the browser
/// would make an image element of it.
const MARKUP_FILE: &str = "<img src=x onerror=document.title='owned'>.yaml";

/// Waits until the text of element `id` satisfies `wanted`; that text.
async fn shown(browser: &Browser, id: &str, what: &str, wanted: impl Fn(&str) -> bool) -> String {
    eventually(what, Duration::from_secs(30), async || {
        let text = browser.text(id).await;
        wanted(&text).then_some(text)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_mesh_and_keeps_itself_current() {
    let store = Bookstore::start(XdsMode::Delta).await;
    let http = store.mesh.meshd().http_address();
    let browser = Browser::start().await;
    browser.open(&format!("http://{http}/status")).await;

    shown(&browser, "updated", "the page's first drawing", |t| {
        t.starts_with("4 proxies connected")
    })
    .await;
    let revisions = browser.text("revisions").await;
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        revisions.contains(&format!("none\t{version}\t4")),
        "four proxies of one version, injected by no revision: {revisions:?}"
    );
    let clusters = browser.text("clusters").await;
    assert!(clusters.contains("local\t4"), "{clusters:?}");
    shown(&browser, "out-of-sync-count", "every proxy in sync", |t| {
        t.starts_with("0 ")
    })
    .await;
    assert_eq!(
        browser.text("config-errors").await.trim(),
        "none",
        "no config error yet"
    );

    // A broken file shows up without a reload, its name as text.
    store
        .mesh
        .write(MARKUP_FILE, "kind: VirtualService\nspec: [")
        .unwrap();
    let errors = shown(&browser, "config-errors", "the config error", |t| {
        t.contains("<img src=x")
    })
    .await;
    assert!(errors.contains(".yaml"), "{errors}");
    let markup = browser
        .run("return [document.querySelectorAll('#config-errors img').length, document.title];")
        .await;
    assert_eq!(markup, serde_json::json!([0, "meshd status"]));

    // A proxy gone is gone from the page.
    store.mesh.remove(MARKUP_FILE).unwrap();
    drop(store.ratings);
    shown(&browser, "updated", "three proxies", |t| {
        t.starts_with("3 proxies connected")
    })
    .await;
    shown(&browser, "config-errors", "the error fixed", |t| {
        t.trim() == "none"
    })
    .await;
    browser.close().await;
}

/// The page and its data are the debug listener's: another host's browser (or a page
/// that made this host's browser ask under another name) needs the admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_is_for_this_host_only() {
    let mesh = LocalMesh::start(None, XdsMode::Delta).await.unwrap();
    let http = mesh.meshd().http_address();
    let client = reqwest::Client::new();
    for path in ["/status", "/debug/status"] {
        let here = client
            .get(format!("http://{http}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(here.status(), 200, "{path}");
        let rebound = client
            .get(format!("http://{http}{path}"))
            .header("host", format!("rebound.example:{}", http.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(rebound.status(), 401, "{path} under another name");
    }
}
