//! The demo shop page in a real browser: headless Chromium driven over
//! WebDriver (`chromedriver`, Debian's `chromium-driver`; `scripts/test.sh`
//! installs both), against the real processes in-process — ingest (CORS
//! allowing serving's origin), the updater with tracking beside it, and
//! serving with `[serving] demo` on — on the real broker and Redis, with a
//! model trained from a generated RetailRocket-shaped log.
//!
//! As a new shopper: the row says `popular`; three items of the grid are
//! clicked (each click is a `view` posted by the page to ingest with the
//! grid's `rec_id`); the row turns `personal`; `/v1/stats` counts the three
//! clicks for the variant and model the page shows, and so does the page's
//! own A/B table. A screenshot is saved under the test's output directory
//! (`$CARGO_TARGET_TMPDIR/demo_browser/`).
//!
//! A missing broker fails the test unless `RECSYS_SKIP_BROKER_TESTS=1`; a
//! missing `chromedriver` or `chromium` fails it with the install command.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use testkit::services::free_port;

/// A program on PATH (or at `$var`), or a failure naming how to install it.
fn program(var: &str, names: &[&str]) -> PathBuf {
    if let Ok(p) = std::env::var(var) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "none of {names:?} on PATH (or set {var}): install Debian's chromium and chromium-driver \
         (`apt-get install chromium chromium-driver`; scripts/test.sh does it)"
    );
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn chromedriver(log: &Path) -> Driver {
    let bin = program("RECSYS_CHROMEDRIVER", &["chromedriver"]);
    let port = free_port();
    let child = Command::new(&bin)
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", log.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
    wait_for("chromedriver to listen", Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    driver
}

async fn browser(driver: &Driver) -> Client {
    let chromium = program("RECSYS_CHROMIUM", &["chromium", "chromium-browser", "google-chrome"]);
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium.display().to_string(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1100", "--no-first-run", "--no-default-browser-check"]
        }
    });
    let caps = caps.as_object().unwrap().clone();
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector).capabilities(caps).connect(&driver.url).await.expect("a WebDriver session")
}

/// The text of the first element matching `css` ("" while there is none).
async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn wait_text(c: &Client, css: &str, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let t = text(c, css).await;
        if ok(&t) {
            return t;
        }
        if start.elapsed() > timeout {
            let err = text(c, "#error").await;
            let log = text(c, "#event-log").await;
            panic!("{what}: {css} says {t:?} after {timeout:?} (page error {err:?}, events {log:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `rec_id` of the grid's list, read in one step (the page replaces the
/// cards when it re-reads the list, which would make an element handle stale).
async fn grid_rec_id(c: &Client) -> Value {
    c.execute("const e = document.querySelector('#grid .card'); return e ? e.dataset.recId : null;", vec![])
        .await
        .unwrap()
}

/// The arm of `/v1/stats` for `variant` and `model`.
async fn arm(http: &reqwest::Client, api: &str, variant: &str, model: &str) -> Option<Value> {
    let v: Value = http.get(format!("{api}/v1/stats")).send().await.ok()?.json().await.ok()?;
    v["arms"].as_array()?.iter().find(|a| a["variant"] == variant && a["model_version"] == model).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_shopper_clicks_three_items_and_the_row_turns_personal_and_the_clicks_are_counted() {
    let Some(brokers) = broker() else { return };
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("demo_browser");
    std::fs::create_dir_all(&out).unwrap();
    let driver = chromedriver(&out.join("chromedriver.log")).await;

    let tag = tag();
    let dir = tempfile::tempdir().unwrap();
    let serving_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let ingest_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let origin = format!("http://{serving_addr}");
    let cfg = write_config(
        dir.path(),
        &brokers,
        &tag,
        &[
            ("serving.demo", true.into()),
            ("serving.demo_ingest_url", format!("http://{ingest_addr}").into()),
            // Every shopper in the treatment arm: the control arm is shown
            // popular items whatever it does, so its row never turns personal.
            ("serving.treatment_percent", 100.into()),
            ("ingest.cors_origins", toml::Value::Array(vec![origin.clone().into()])),
        ],
    );
    let shared = common::config::load_settings::<updater::config::Settings>(Some(&cfg), no_env()).unwrap();
    common::kafka::ensure_topics(&shared.kafka, Duration::from_secs(10)).await.unwrap();

    // A model (with categories) before the processes start, as after a nightly run.
    let data = dir.path().join("data");
    datagen::generate(&datagen::GenerateConfig::new(30_000, 11), &data, None).unwrap();
    let s = common::load_layered::<batch_trainer::config::Settings>(Some(&cfg), no_env()).unwrap();
    let root = s.model.artifacts_dir.clone();
    let (s2, root2) = (s.clone(), root.clone());
    let r = tokio::task::spawn_blocking(move || {
        let src = batch_trainer::nightly::Source { data_dir: Some(data), from_kafka: false };
        batch_trainer::nightly::train_run(&s2, &src, &root2, Some("demo-v1".into()), false, false)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(r.train.promoted, "{:?}", r.train.verdict);
    batch_trainer::nightly::publish_if_enabled(&s, &root, "demo-v1").await.unwrap().expect("publication is on");

    let ingest = start_ingest_at(&cfg, ingest_addr).await;
    let updater = start_updater(&cfg).await;
    let tracking = {
        let s = common::config::load_settings::<tracking::config::Settings>(Some(&cfg), no_env()).unwrap();
        let deps = tracking::Deps::connect(&s).await.unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(tracking::run(s, deps, async move {
            let _ = rx.await;
        }));
        (stop, task)
    };
    let serving = start_serving_at(&cfg, serving_addr).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    wait_for("serving to be ready", Duration::from_secs(30), || async {
        http.get(format!("{origin}/ready")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;

    let c = browser(&driver).await;
    c.goto(&format!("{origin}/demo/")).await.unwrap();
    // A new shopper (the page makes one on first visit; the button makes another).
    let first = wait_text(&c, "#user-id", "a shopper", Duration::from_secs(20), |t| t.starts_with("demo-")).await;
    c.find(Locator::Css("#new-shopper")).await.unwrap().click().await.unwrap();
    let user =
        wait_text(&c, "#user-id", "a new shopper", Duration::from_secs(20), |t| t.starts_with("demo-") && t != first)
            .await;
    wait_text(&c, "#rec-source", "the new shopper's row", Duration::from_secs(20), |t| t == "popular").await;
    let variant = wait_text(&c, "#rec-variant", "the variant", Duration::from_secs(5), |t| t == "als").await;
    let model = text(&c, "#grid-model").await;
    assert_eq!(model, "demo-v1", "the grid comes from the served model");
    let grid = c.find_all(Locator::Css("#grid .card")).await.unwrap();
    assert!(grid.len() >= 3, "the grid shows items ({})", grid.len());
    drop(grid);
    let cats = c.find_all(Locator::Css("#grid .card .cat")).await.unwrap();
    assert!(cats[0].text().await.unwrap().starts_with("Category "), "items show their categories");

    let before = arm(&http, &origin, &variant, &model).await.map_or(0, |a| a["clicks"].as_u64().unwrap());
    let clicked_at = Instant::now();
    for n in 0..3 {
        // Each click leads to a new page of lists (a new impression; tracking
        // counts one click per impression): click the first card of the
        // current grid, by its name (its buttons are add-to-cart and buy).
        let shown = grid_rec_id(&c).await;
        let card = c.find(Locator::Css(&format!("#grid .card:nth-child({}) .name", n + 1))).await.unwrap();
        card.click().await.unwrap();
        let start = Instant::now();
        while grid_rec_id(&c).await == shown {
            assert!(start.elapsed() < Duration::from_secs(10), "the grid is re-read after a click");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        wait_text(&c, "#event-log", "the view accepted by ingest", Duration::from_secs(10), |t| {
            t.matches("view ").count() > n && !t.contains("HTTP") && !t.contains("not sent")
        })
        .await;
    }
    let personal =
        wait_text(&c, "#rec-source", "the row to turn personal", Duration::from_secs(30), |t| t == "personal").await;
    eprintln!("row {personal} {:?} after the first click", clicked_at.elapsed());
    assert_eq!(text(&c, "#rec-variant").await, variant);
    let degraded = c.find(Locator::Css("#rec-degraded")).await.unwrap();
    assert!(!degraded.is_displayed().await.unwrap(), "Redis is up: the answer is not degraded");

    // The three clicks reach /v1/stats under the shown variant and model...
    let mut counted = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        counted = arm(&http, &origin, &variant, &model).await.map_or(0, |a| a["clicks"].as_u64().unwrap()) - before;
        if counted >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("{counted} clicks in /v1/stats {:?} after the first click", clicked_at.elapsed());
    assert_eq!(counted, 3, "the shopper's three clicks, each attributed to the grid impression it was made on");
    // ... and the page's own A/B table shows them.
    let row = format!("#stats tr[data-variant=\"{variant}\"][data-model=\"{model}\"] td[data-field=\"clicks\"]");
    wait_text(&c, &row, "the page's A/B table", Duration::from_secs(10), |t| t.parse::<u64>().is_ok_and(|n| n >= 3))
        .await;

    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let shot = out.join("demo.png");
    std::fs::write(&shot, png).unwrap();
    eprintln!("screenshot of {user}'s page: {}", shot.display());
    c.close().await.unwrap();

    serving.stop().await;
    let _ = tracking.0.send(());
    tracking.1.await.unwrap().unwrap();
    updater.stop().await;
    ingest.stop().await;
    cleanup_redis(&shared.redis.prefix).await;
}
