//! A real headless browser for pages meshd serves: Debian's Chromium, driven through
//! ChromeDriver's WebDriver API (plain HTTP on loopback; `scripts/install-peers` installs
//! both). The page's own scripts run as in a user's browser.
//!
//! The browser may reach loopback only: every host name resolves to nothing, and any
//! request not to a loopback address goes to a proxy that is not there, so neither the
//! page nor Chromium's own background services can send a packet elsewhere.

use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A ChromeDriver with one browser session, both ended on drop.
pub struct Browser {
    driver: Child,
    session: String,
    base: String,
    http: reqwest::Client,
    /// Chromium's profile, removed on drop.
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and opens a headless Chromium.
    pub async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (scripts/install-peers installs it)");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--disable-default-apps".into(),
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".into(),
            "--proxy-server=127.0.0.1:9".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let mut browser = Browser {
            driver,
            session: String::new(),
            base,
            http,
            profile,
        };
        let opened = browser.call("POST", "/session", capabilities).await;
        browser.session = opened["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {opened}"))
            .to_string();
        browser
    }

    /// One WebDriver command; its `value`.
    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "POST" => self.http.post(url).json(&body),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        };
        let answer = request
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = answer.status();
        let answer: Value = answer.json().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "WebDriver {method} {path}: {status} {}",
            answer["value"]
        );
        answer["value"].clone()
    }

    /// Loads `url` and waits for its load event.
    pub async fn open(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.call("POST", &path, json!({ "url": url })).await;
    }

    /// Runs `script` (a function body) in the page; what it returns.
    pub async fn run(&self, script: &str) -> Value {
        let path = format!("/session/{}/execute/sync", self.session);
        self.call("POST", &path, json!({"script": script, "args": []}))
            .await
    }

    /// The text the element `id` shows, as the user sees it.
    pub async fn text(&self, id: &str) -> String {
        let script = format!("return document.getElementById({id:?}).innerText;");
        self.run(&script)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Closes the browser, then its driver.
    pub async fn close(self) {
        let path = format!("/session/{}", self.session);
        self.call("DELETE", &path, Value::Null).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Without `close` (a failed test), Chromium would outlive its driver: it is ended
        // by its profile directory, which is this browser's alone.
        let profile = format!("--user-data-dir={}", self.profile.path().display());
        let _ = Command::new("pkill").args(["-f", "--", &profile]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
