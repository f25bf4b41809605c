//! What a request must show before any handler sees it, so that no other web page can use the
//! server through the user's browser:
//! - **Host** (every request): `localhost`, an IP address, or a name given with `--allow-host`,
//!   at the server's port. A DNS-rebinding page reaches the server under its own name, which
//!   is refused.
//! - **Origin** (requests that change something, i.e. not GET or HEAD): absent (a non-browser
//!   client), the server's own origin (`http://` + the Host header), or one given with
//!   `--allow-origin`. `Sec-Fetch-Site: cross-site` is refused likewise.
//! - **Content-Type** (same requests): `application/json`. A page of another site can send
//!   forms and `text/plain` without asking; JSON needs a CORS preflight, which this server
//!   never grants.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Who may talk to the server (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// The port the server listens on (the Host header must name it).
    pub port: u16,
    /// Host names answered besides `localhost` and IP addresses (`--allow-host`).
    pub hosts: Vec<String>,
    /// Origins allowed to change things besides the server's own (`--allow-origin`), as
    /// `scheme://host[:port]`.
    pub origins: Vec<String>,
}

impl Guard {
    /// `Err` with the response for a request that may not pass.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !self.host_allowed(host) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "this server does not answer for the host {host:?}; open it as \
                     http://localhost:{} (start it with --allow-host NAME to add a name)",
                    self.port
                ),
            ));
        }
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        let own = format!("http://{host}");
        let allowed = |o: &str| o == own || self.origins.iter().any(|a| a == o);
        let cross_site = headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"cross-site");
        match origin {
            Some(o) if !allowed(o) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "cross-origin request from {o} refused: only this server's own page may \
                         queue or cancel jobs (start it with --allow-origin {o} to allow that \
                         site)"
                    ),
                ))
            }
            None if cross_site => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "cross-site request refused: only this server's own page may queue or \
                     cancel jobs",
                ))
            }
            _ => {}
        }
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .and_then(|c| c.split(';').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send requests that change something with Content-Type: application/json",
            ));
        }
        Ok(())
    }

    /// `localhost`, an IP address or an allowed name, with this server's port (80 when the
    /// header names none).
    fn host_allowed(&self, host: &str) -> bool {
        let (name, port) = split_host(host);
        let port_ok = match port {
            Some(p) => p.parse::<u16>() == Ok(self.port),
            None => self.port == 80,
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let name_ok = name.eq_ignore_ascii_case("localhost")
            || name.parse::<std::net::IpAddr>().is_ok()
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name));
        port_ok && name_ok && !name.is_empty()
    }
}

/// `name:port` -> (`name`, `Some(port)`); `[::1]:80` -> (`[::1]`, `Some(80)`).
fn split_host(host: &str) -> (&str, Option<&str>) {
    if host.starts_with('[') {
        return match host.find("]:") {
            Some(i) => (&host[..=i], Some(&host[i + 2..])),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, Some(port)),
        _ => (host, None),
    }
}

/// The middleware: [`Guard::check`] before the routes.
pub async fn guard(State(g): State<std::sync::Arc<Guard>>, req: Request, next: Next) -> Response {
    match g.check(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hosts_origins_and_content_types() {
        let g = Guard {
            port: 7860,
            hosts: vec!["studio.lan".into()],
            origins: vec!["http://tools.lan".into()],
        };
        let ok = |m: Method, h: &[(&'static str, &'static str)]| g.check(&m, &headers(h)).is_ok();
        for host in [
            "localhost:7860",
            "127.0.0.1:7860",
            "[::1]:7860",
            "studio.lan:7860",
        ] {
            assert!(ok(Method::GET, &[("host", host)]), "{host}");
        }
        for host in ["evil.example:7860", "localhost:80", "localhost", ""] {
            assert!(!ok(Method::GET, &[("host", host)]), "{host}");
        }
        let json = ("content-type", "application/json; charset=utf-8");
        assert!(ok(Method::POST, &[("host", "localhost:7860"), json]));
        assert!(ok(
            Method::POST,
            &[
                ("host", "localhost:7860"),
                ("origin", "http://localhost:7860"),
                json
            ]
        ));
        assert!(ok(
            Method::POST,
            &[
                ("host", "localhost:7860"),
                ("origin", "http://tools.lan"),
                json
            ]
        ));
        assert!(!ok(
            Method::POST,
            &[
                ("host", "localhost:7860"),
                ("origin", "http://evil.example"),
                json
            ]
        ));
        assert!(!ok(
            Method::POST,
            &[
                ("host", "localhost:7860"),
                ("sec-fetch-site", "cross-site"),
                json
            ]
        ));
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            assert!(!ok(
                Method::POST,
                &[("host", "localhost:7860"), ("content-type", ct)]
            ));
        }
        assert!(!ok(Method::POST, &[("host", "localhost:7860")]));
    }
}
