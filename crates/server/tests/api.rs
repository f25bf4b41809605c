//! The JSON API against a real server on a random local port with the toy model.

mod common;

use std::time::Duration;

use common::{decode_png, start_toy, toy_layout, Http};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_poll_and_fetch_the_image() {
    let http = Http::new(start_toy().await);
    let info = http.get("/api/info").await.json();
    assert_eq!(info["model"]["width"], 32);
    assert_eq!(info["model"]["categories"]["source"], "toy");

    let r = http
        .post_json("/api/jobs", &json!({"layout": toy_layout(), "steps": 4}))
        .await;
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_u64().unwrap();
    let job = http.wait_job(id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["step"], 4);
    assert_eq!(job["method"], "sd");

    let img = http.get(job["image"].as_str().unwrap()).await;
    assert_eq!(img.status, 200);
    assert_eq!(img.content_type, "image/png");
    let (w, h, rgb) = decode_png(&img.body);
    assert_eq!((w, h), (32, 32));
    assert!(
        rgb.iter().any(|&v| v != rgb[0]),
        "the image is one flat colour"
    );

    let preview = http.get(&format!("/api/jobs/{id}/preview.png")).await;
    assert_eq!(decode_png(&preview.body).0, 32);

    let npy = http.get(job["initial_latents"].as_str().unwrap()).await;
    assert!(npy.body.starts_with(b"\x93NUMPY"));
    assert!(npy.body.len() > 3 * 32 * 32 * 4);

    let att = http.get(job["attention"].as_str().unwrap()).await.json();
    let cells = att["grid"][0].as_u64().unwrap() * att["grid"][1].as_u64().unwrap();
    let maps = att["maps"].as_array().unwrap();
    assert_eq!(maps.len(), 2);
    for m in maps {
        let values = m["values"]
            .as_array()
            .expect("both categories are in the prompt");
        assert_eq!(values.len() as u64, cells);
    }
    assert!(att["cells"].is_null(), "gaussian init fills no cells");

    let list = http.get("/api/jobs").await.json();
    assert_eq!(list["jobs"][0]["id"], id);

    // A layout without a size gets the model's (and the image's metadata says so); the model's
    // settings give the steps.
    let mut unsized_layout = toy_layout();
    let map = unsized_layout.as_object_mut().unwrap();
    map.remove("width");
    map.remove("height");
    let r = http
        .post_json(
            "/api/jobs",
            &json!({"layout": unsized_layout, "steps": 2, "scheduler": "euler-a"}),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_u64().unwrap();
    let job = http.wait_job(id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "done", "{job}");
    let img = http.get(job["image"].as_str().unwrap()).await;
    assert_eq!(decode_png(&img.body).0, 32);
    assert_eq!(info["model"]["default_guidance"], 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_4xx_with_a_message() {
    let addr = start_toy().await;
    let http = Http::new(addr);

    let r = http
        .request("POST", "/api/jobs", b"{\"layout\": ".to_vec())
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("malformed JSON"), "{}", r.error());

    let big = vec![b' '; semi_server::DEFAULT_MAX_BODY + 10];
    let r = http.request("POST", "/api/jobs", big).await;
    assert_eq!(r.status, 413);
    assert!(r.error().contains("too large"), "{}", r.error());

    let mut layout = toy_layout();
    layout["objects"][1]["category"] = json!("dog");
    let r = http
        .post_json("/api/jobs", &json!({ "layout": layout }))
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.error().contains("unknown category \"dog\""),
        "{}",
        r.error()
    );
    assert!(
        r.error().contains("circle"),
        "lists the known ones: {}",
        r.error()
    );

    let mut layout = toy_layout();
    layout["objects"][0]["bbox"] = json!([0.5, 0.5, 1.2, 0.9]);
    let r = http
        .post_json("/api/jobs", &json!({ "layout": layout }))
        .await;
    assert_eq!(r.status, 422);
    assert!(r.error().contains("objects[0].bbox"), "{}", r.error());

    let r = http
        .post_json(
            "/api/jobs",
            &json!({"layout": toy_layout(), "path": "/etc/passwd"}),
        )
        .await;
    assert_eq!(r.status, 400, "unknown fields are refused");
    assert!(r.error().contains("path"), "{}", r.error());

    let r = http
        .post_json(
            "/api/jobs",
            &json!({"layout": toy_layout(), "scheduler": "lms"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.error().contains("unknown scheduler"), "{}", r.error());

    let r = http
        .post_json("/api/jobs", &json!({"layout": toy_layout(), "steps": 0}))
        .await;
    assert_eq!(r.status, 422);
    assert!(r.error().contains("steps"), "{}", r.error());

    let r = http
        .post_json(
            "/api/jobs",
            &json!({"layout": toy_layout(), "init": "magic"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.error().contains("gaussian"), "{}", r.error());

    let mut layout = toy_layout();
    layout["width"] = json!(64);
    let r = http
        .post_json("/api/jobs", &json!({ "layout": layout }))
        .await;
    assert_eq!(r.status, 422);

    for path in [
        "/api/jobs/999",
        "/api/jobs/abc",
        "/api/nothing",
        "/api/jobs/999/image.png",
    ] {
        let r = http.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        r.error();
    }
    let r = http.request("DELETE", "/api/info", Vec::new()).await;
    assert_eq!(r.status, 405);
    r.error();

    // Still serving after all that.
    assert_eq!(http.get("/api/info").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_and_cancel() {
    let http = Http::new(start_toy().await);
    let body = json!({"layout": toy_layout(), "steps": 200});
    let first = http.post_json("/api/jobs", &body).await.json();
    let second = http.post_json("/api/jobs", &body).await.json();
    let (a, b) = (
        first["id"].as_u64().unwrap(),
        second["id"].as_u64().unwrap(),
    );
    // The second waits behind the first (one job at a time per model).
    let v = http.get(&format!("/api/jobs/{b}")).await.json();
    assert_eq!(v["status"], "queued", "{v}");
    let r = http
        .post_json(&format!("/api/jobs/{b}/cancel"), &json!({}))
        .await;
    assert_eq!(r.json()["status"], "cancelled");
    let r = http
        .post_json(&format!("/api/jobs/{a}/cancel"), &json!({}))
        .await;
    assert_eq!(r.status, 200);
    let v = http.wait_job(a, Duration::from_secs(60)).await;
    assert_eq!(v["status"], "cancelled", "{v}");
    assert!(v["error"].as_str().unwrap().contains("cancelled"));
    assert!(v["step"].as_u64().unwrap() < 200);
    let r = http.get(&format!("/api/jobs/{a}/image.png")).await;
    assert_eq!(r.status, 409);
    r.error();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_sites_cannot_use_the_server() {
    let addr = start_toy().await;
    let http = Http::new(addr);
    let body = json!({"layout": toy_layout(), "steps": 2})
        .to_string()
        .into_bytes();
    // What a page of another site can send without asking: a text/plain or form POST.
    for (origin, ct) in [
        (Some("http://evil.example"), "text/plain"),
        (
            Some("http://evil.example"),
            "application/x-www-form-urlencoded",
        ),
        (None, "text/plain"),
        (Some("http://evil.example"), "application/json"),
    ] {
        let mut headers = vec![("content-type", ct)];
        if let Some(o) = origin {
            headers.push(("origin", o));
        }
        let r = http
            .request_with("POST", "/api/jobs", &headers, body.clone())
            .await;
        assert!(
            r.status == 403 || r.status == 415,
            "{origin:?} {ct}: {}",
            r.status
        );
        r.error();
    }
    assert_eq!(
        http.get("/api/jobs").await.json()["jobs"],
        json!([]),
        "no job was queued"
    );
    // A DNS-rebinding page reaches the server under its own name.
    let r = http
        .request_with(
            "GET",
            "/api/info",
            &[("host", "evil.example:80")],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(r.error().contains("evil.example"), "{}", r.error());
    // The server's own page (same origin, JSON) still works.
    let own = format!("http://{addr}");
    let r = http
        .request_with(
            "POST",
            "/api/jobs",
            &[("content-type", "application/json"), ("origin", &own)],
            body,
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    // An over-long URL is refused by hyper itself, still with a JSON body (sent by hand: the
    // client refuses to build such a request).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /api/jobs/{} HTTP/1.1\r\nhost: {addr}\r\n\r\n",
        "9".repeat(70_000)
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tcp.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 414"), "{reply}");
    assert!(
        reply.ends_with(r#"{"error":"the URL is too long"}"#),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_cancelled_jobs_keeps_the_finished_images() {
    let http = Http::new(start_toy().await);
    let r = http
        .post_json("/api/jobs", &json!({"layout": toy_layout(), "steps": 2}))
        .await;
    let done = r.json()["id"].as_u64().unwrap();
    assert_eq!(
        http.wait_job(done, Duration::from_secs(120)).await["status"],
        "done"
    );
    let body = json!({"layout": toy_layout(), "steps": 2});
    for _ in 0..semi_server::jobs::KEEP_FINISHED * 3 {
        let id = http.post_json("/api/jobs", &body).await.json()["id"]
            .as_u64()
            .unwrap();
        http.post_json(&format!("/api/jobs/{id}/cancel"), &json!({}))
            .await;
    }
    let r = http.get(&format!("/api/jobs/{done}/image.png")).await;
    assert_eq!(r.status, 200, "the finished image was pushed out");
}

/// An SDXL model serves unchanged: a SemI job with its layout, and the first-step attention.
#[tokio::test]
async fn an_sdxl_model_serves_semi_jobs() {
    let http = Http::new(common::start_fixture("tiny-sdxl").await);
    let info = http.get("/api/info").await.json();
    assert_eq!(info["model"]["width"], 32);
    let layout = json!({"prompt": "a photo of a dog and a car", "seed": 1, "objects": [
        {"phrase": "dog", "category": "dog", "bbox": [0.0, 0.0, 0.5, 0.5]},
        {"phrase": "car", "category": "car", "bbox": [0.5, 0.5, 1.0, 1.0]}]});
    let r = http
        .post_json(
            "/api/jobs",
            &json!({"layout": layout, "steps": 2, "init": "semi"}),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_u64().unwrap();
    let job = http.wait_job(id, Duration::from_secs(300)).await;
    assert_eq!(job["status"], "done", "{job}");
    let att = http.get(job["attention"].as_str().unwrap()).await.json();
    assert_eq!(att["maps"].as_array().unwrap().len(), 2);
    assert!(!att["cells"].is_null(), "SemI fills cells");
}
