//! A real browser against the page: headless Chromium driven through chromedriver (WebDriver)
//! draws two boxes with the mouse, types the prompt, clicks Generate, waits for the image (SemI init, so the
//! attention toggle has cells to show) and saves a screenshot that must not be blank.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`/usr/bin/chromedriver`); without them the
//! test prints a skip message, unless `SEMI_REQUIRE_BROWSER=1` (as `.ci/run` sets), when it
//! fails. `SEMI_SCREENSHOT=path.png` also writes the screenshot there (docs/serve.png is made
//! so).

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Kills chromedriver (and with it the browser) however the test ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn start_driver() -> (Driver, String) {
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chromedriver does not listen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (driver, format!("http://127.0.0.1:{port}"))
}

async fn connect(webdriver: &str, profile: &Path) -> Client {
    let args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--window-size=1280,1000".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": CHROMIUM, "args": args }),
    );
    ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(webdriver)
        .await
        .expect("a browser session")
}

/// Drag on the layout canvas between two points given relative to its centre.
async fn drag(client: &Client, from: (f64, f64), to: (f64, f64)) {
    let canvas = client
        .find(Locator::Id("canvas"))
        .await
        .expect("the canvas");
    let mouse = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: canvas.clone(),
            duration: None,
            x: from.0,
            y: from.1,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::MoveToElement {
            element: canvas.clone(),
            duration: Some(Duration::from_millis(100)),
            x: to.0,
            y: to.1,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    client.perform_actions(mouse).await.expect("mouse actions");
}

async fn text_of(client: &Client, id: &str) -> String {
    client
        .find(Locator::Id(id))
        .await
        .expect("element")
        .text()
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draw_two_boxes_and_generate_in_chromium() {
    if !Path::new(CHROMEDRIVER).exists() || !Path::new(CHROMIUM).exists() {
        if std::env::var("SEMI_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("SEMI_REQUIRE_BROWSER=1 but {CHROMEDRIVER} or {CHROMIUM} is missing (apt-get install chromium chromium-driver)");
        }
        println!("skipped: {CHROMEDRIVER} or {CHROMIUM} not installed (apt-get install chromium chromium-driver)");
        return;
    }
    let addr = common::start_toy().await;
    let profile = tempfile::tempdir().expect("a profile folder");
    let (_driver, webdriver) = start_driver().await;
    let client = connect(&webdriver, profile.path()).await;
    let result = run_page(&client, &format!("http://{addr}/")).await;
    let _ = client.close().await;
    let screenshot = result.unwrap_or_else(|e| panic!("{e}"));

    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-browser.png");
    std::fs::write(&out, &screenshot).expect("screenshot written");
    if let Ok(path) = std::env::var("SEMI_SCREENSHOT") {
        std::fs::write(&path, &screenshot).expect("SEMI_SCREENSHOT written");
    }
    let (w, h, rgb) = common::decode_png(&screenshot);
    assert!(w >= 400 && h >= 300, "screenshot {w}x{h}");
    let channels = rgb.len() / (w as usize * h as usize);
    let mut colours: Vec<[u8; 3]> = rgb.chunks(channels).map(|p| [p[0], p[1], p[2]]).collect();
    colours.sort();
    colours.dedup();
    assert!(
        colours.len() > 50,
        "the screenshot ({}) is blank: {} colours",
        out.display(),
        colours.len()
    );
    println!("screenshot: {}", out.display());
}

/// Drive the page; the screenshot once the image is shown.
async fn run_page(client: &Client, url: &str) -> Result<Vec<u8>, String> {
    client.goto(url).await.map_err(|e| format!("goto: {e}"))?;
    let start = Instant::now();
    while text_of(client, "model-info").await.starts_with("loading") {
        if start.elapsed() > Duration::from_secs(20) {
            return Err("the page never loaded /api/info".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The canvas is 384x384 CSS px: one box top-left, one bottom-right.
    drag(client, (-160.0, -150.0), (-20.0, -10.0)).await;
    drag(client, (20.0, 30.0), (170.0, 165.0)).await;
    let boxes = client
        .execute("return state.boxes.map(b => [b.category, b.bbox]);", vec![])
        .await
        .map_err(|e| format!("reading boxes: {e}"))?;
    let boxes = boxes.as_array().cloned().unwrap_or_default();
    if boxes.len() != 2 {
        return Err(format!("expected two drawn boxes, the page has {boxes:?}"));
    }
    let prompt = client
        .find(Locator::Id("prompt"))
        .await
        .map_err(|e| e.to_string())?;
    prompt
        .send_keys("a circle and a square")
        .await
        .map_err(|e| e.to_string())?;
    let steps = client
        .find(Locator::Id("steps"))
        .await
        .map_err(|e| e.to_string())?;
    steps.clear().await.map_err(|e| e.to_string())?;
    steps.send_keys("10").await.map_err(|e| e.to_string())?;
    // SemI: the toy model's cache store is filled on the fly, then its tickets fill the boxes.
    client
        .find(Locator::Id("init"))
        .await
        .map_err(|e| e.to_string())?
        .select_by_value("semi")
        .await
        .map_err(|e| e.to_string())?;
    client
        .find(Locator::Id("generate"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    loop {
        let status = client
            .find(Locator::Id("result"))
            .await
            .map_err(|e| e.to_string())?
            .attr("data-status")
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        if status == "done" {
            break;
        }
        if status == "failed" || status == "cancelled" {
            return Err(format!(
                "the job {status}: {}",
                text_of(client, "error").await
            ));
        }
        if start.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "no image after 120 s; status: {}",
                text_of(client, "status").await
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The result canvas holds the generated image: not one flat colour.
    let spread = client
        .execute(
            "const c = document.getElementById('result');
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             let lo = 255, hi = 0;
             for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i + 1]); hi = Math.max(hi, d[i + 1]); }
             return hi - lo;",
            vec![],
        )
        .await
        .map_err(|e| e.to_string())?;
    if spread.as_f64().unwrap_or(0.0) < 20.0 {
        return Err(format!(
            "the result canvas is nearly flat (green spread {spread})"
        ));
    }
    let cells = client
        .execute(
            "return state.attention && state.attention.cells !== null;",
            vec![],
        )
        .await
        .map_err(|e| e.to_string())?;
    if cells != json!(true) {
        return Err("a semi job shows no SemI cells".into());
    }
    client
        .find(Locator::Id("show-attention"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .screenshot()
        .await
        .map_err(|e| format!("screenshot: {e}"))
}
