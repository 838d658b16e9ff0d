//! The gallery's access token, for a gallery served beyond this machine: every request must
//! carry it — `Authorization: Bearer TOKEN`, the `fc7_token` cookie, or `?token=TOKEN` (the
//! link to open first, which sets the cookie so the page's own requests carry it). Compared in
//! constant time, so the time of a refusal says nothing about how much of a guess was right.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Whether `a` equals `b`, in time that depends only on their lengths.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request offers, from its header, cookie or query.
fn offered(req: &Request) -> Option<(String, bool)> {
    let h = req.headers();
    if let Some(t) = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some((t.trim().to_string(), false));
    }
    let cookie = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("fc7_token=").map(str::to_string));
    if let Some(t) = cookie {
        return Some((t, false));
    }
    let query = req.uri().query().unwrap_or("");
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(|t| (t.to_string(), true))
}

/// Lets a request through only with the right token; a token that came in the query is set
/// as a cookie on the answer.
pub async fn check(State(token): State<Arc<String>>, req: Request, next: Next) -> Response {
    let Some((got, from_query)) = offered(&req) else {
        return refuse("this gallery needs its token (?token=…, or Authorization: Bearer …)");
    };
    if !same(got.as_bytes(), token.as_bytes()) {
        return refuse("wrong token");
    }
    let mut res = next.run(req).await;
    if from_query {
        let cookie = format!("fc7_token={got}; HttpOnly; SameSite=Strict; Path=/");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            res.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    res
}

fn refuse(why: &str) -> Response {
    (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_when_every_byte_is() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3creT"));
        assert!(!same(b"s3cret", b"s3cre"));
        assert!(!same(b"", b"x"));
        assert!(same(b"", b""));
    }
}
