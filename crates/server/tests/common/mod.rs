//! Shared by the API and browser tests: a server on a free local port with the toy model from
//! `models/toy` (the folder the CLI embeds), and a small HTTP client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use semi_server::{ModelSource, ServeOptions};
use serde_json::Value;

pub fn toy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/toy")
}

/// A cache folder of this test process (ticket stores filled on the fly), so tests never touch
/// the user's ~/.cache/semi (a fresh folder in the system temp dir per test binary run).
fn test_cache() {
    static CACHE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = CACHE.get_or_init(|| tempfile::tempdir().expect("temp cache dir"));
    std::env::set_var("SEMI_CACHE", dir.path());
}

/// Start a server for the toy model on 127.0.0.1, port 0 (a free one).
pub async fn start_toy() -> SocketAddr {
    start(ModelSource {
        spec: "toy".into(),
        name: "toy".into(),
        store: None,
    })
    .await
}

/// Start a server for `source` on 127.0.0.1, port 0.
async fn start(source: ModelSource) -> SocketAddr {
    test_cache();
    let mut options = ServeOptions::new(source);
    options.port = 0;
    semi_server::start(options)
        .await
        .expect("server starts")
        .addr
}

pub struct Http {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` message of a JSON error reply (asserting the shape).
    pub fn error(&self) -> String {
        let v = self.json();
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field in {v}"));
        assert!(!msg.is_empty());
        msg.to_string()
    }
}

impl Http {
    pub fn new(addr: SocketAddr) -> Self {
        Http {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn request(&self, method: &str, path: &str, body: Vec<u8>) -> Reply {
        self.request_with(method, path, &[("content-type", "application/json")], body)
            .await
    }

    /// A request with exactly these headers (plus the Host the client adds when not given).
    pub async fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .expect("request builds");
        let res = self.client.request(req).await.expect("server answers");
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = res
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        Reply {
            status,
            content_type,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, Vec::new()).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.request("POST", path, body.to_string().into_bytes())
            .await
    }

    /// Poll a job until it is finished; its last view.
    pub async fn wait_job(&self, id: u64, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let r = self.get(&format!("/api/jobs/{id}")).await;
            assert_eq!(
                r.status,
                200,
                "job {id}: {:?}",
                String::from_utf8_lossy(&r.body)
            );
            let v = r.json();
            let status = v["status"].as_str().unwrap().to_string();
            if ["done", "failed", "cancelled"].contains(&status.as_str()) {
                return v;
            }
            assert!(
                start.elapsed() < timeout,
                "job {id} not finished after {timeout:?}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A valid toy layout with two boxes.
pub fn toy_layout() -> Value {
    serde_json::json!({
        "prompt": "a circle and a square",
        "width": 32, "height": 32, "seed": 3,
        "objects": [
            {"phrase": "a circle", "category": "circle", "bbox": [0.05, 0.1, 0.45, 0.5]},
            {"phrase": "a square", "category": "square", "bbox": [0.55, 0.5, 0.95, 0.9]}
        ]
    })
}

/// Decode a PNG: (width, height, RGB bytes).
pub fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()))
        .read_info()
        .expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Start a server for a fixture model of `crates/diffusion/tests/fixtures` (e.g. `tiny-sdxl`).
pub async fn start_fixture(name: &str) -> SocketAddr {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../diffusion/tests/fixtures")
        .join(name);
    start(ModelSource {
        spec: dir.to_str().unwrap().into(),
        name: name.into(),
        store: None,
    })
    .await
}
