//! The `http` runtime: POSTs the event in CloudEvents HTTP binary mode to the function's URL.
//! 2xx is success; 408, 429, 5xx and connection errors are retryable; other 4xx are permanent;
//! Retry-After (seconds or HTTP date) is honoured by the retry layer.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use switchyard_schemas::config::FunctionConfig;
use switchyard_schemas::http_binding;

use super::{DeployError, Invocation, InvokeError, Response, Runtime};

/// Largest response body accepted from a function.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Invokes functions served over HTTP.
#[derive(Debug)]
pub struct HttpRuntime {
    url: reqwest::Url,
    client: reqwest::Client,
}

impl HttpRuntime {
    /// A runtime for one function's URL, sharing the broker's connection pool.
    ///
    /// # Errors
    /// When the URL is missing or invalid.
    pub fn new(config: &FunctionConfig, client: reqwest::Client) -> Result<Self, DeployError> {
        let err = |message: String| DeployError { function: config.name.clone(), message };
        let raw = config.url.as_deref().ok_or_else(|| err("runtime http needs `url`".to_owned()))?;
        let url = reqwest::Url::parse(raw).map_err(|e| err(format!("invalid url {raw:?}: {e}")))?;
        Ok(Self { url, client })
    }
}

/// The client every HTTP function shares.
///
/// # Errors
/// When the TLS backend cannot start.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[async_trait::async_trait]
impl Runtime for HttpRuntime {
    async fn invoke(&self, invocation: &Invocation) -> Result<Response, InvokeError> {
        let (mut headers, body) = http_binding::to_binary(&invocation.event);
        if let Ok(v) = http::HeaderValue::from_str(&invocation.traceparent) {
            headers.insert("traceparent", v);
        }
        let mut resp = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| InvokeError::connection(format!("POST {}: {}", self.url, error_chain(&e))))?;
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get(http::header::RETRY_AFTER).and_then(parse_retry_after);
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let mut buf = BytesMut::new();
        while let Some(chunk) =
            resp.chunk().await.map_err(|e| InvokeError::connection(format!("reading response: {}", error_chain(&e))))?
        {
            if buf.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(InvokeError::bad_response(format!("response body larger than {MAX_RESPONSE_BYTES} bytes")));
            }
            buf.extend_from_slice(&chunk);
        }
        let body: Bytes = buf.freeze();
        if (200..300).contains(&status) {
            Ok(Response { status, headers, body, logs: String::new() })
        } else if status >= 400 {
            Err(InvokeError::status(status, body, retry_after))
        } else {
            Err(InvokeError::bad_response(format!("unexpected HTTP status {status}")))
        }
    }
}

/// An error's message followed by its causes (reqwest's own message does not say why a request
/// failed: connection refused, DNS, timeout).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Parses Retry-After: delta seconds, or an HTTP date (RFC 9110).
pub fn parse_retry_after(value: &http::HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let v = http::HeaderValue::from_static("7");
        assert_eq!(parse_retry_after(&v), Some(Duration::from_secs(7)));
        let v = http::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(parse_retry_after(&v), Some(Duration::ZERO));
        let v = http::HeaderValue::from_static("soon");
        assert_eq!(parse_retry_after(&v), None);
    }
}
