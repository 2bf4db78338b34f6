//! Object access added to events: HeadObject metadata in `data.s3.object.head`, the content
//! (base64, only when it fits the configured size) in `data.s3.object.contentBase64`, and a
//! presigned GET URL in the `presignedurl` extension. A failure adds the `objecterror` extension
//! instead; the event is still delivered.

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;
use base64::Engine;
use serde_json::{json, Map, Value};
use switchyard_schemas::sources::s3::ObjectAccess;
use switchyard_schemas::{CloudEvent, Data, ExtensionValue};

use super::binding;

/// Extension carrying the presigned GET URL.
pub const PRESIGNED_URL_EXTENSION: &str = "presignedurl";
/// Extension saying why object access failed.
pub const OBJECT_ERROR_EXTENSION: &str = "objecterror";

/// Adds object access to events.
#[derive(Debug, Clone)]
pub struct Enricher {
    client: aws_sdk_s3::Client,
    access: ObjectAccess,
}

impl Enricher {
    /// An enricher, or `None` when `access` asks for nothing (no S3 calls at all).
    pub fn new(client: aws_sdk_s3::Client, access: ObjectAccess) -> Option<Self> {
        (access.metadata || access.presign.is_some() || access.inline_max_bytes.is_some())
            .then_some(Self { client, access })
    }

    /// Adds what is configured to `event` (nothing for `ObjectRemoved` events).
    pub async fn enrich(&self, event: &mut CloudEvent) {
        if binding::is_removal(event) {
            return;
        }
        let Some(Data::Json(record)) = &event.data else { return };
        let Some(bucket) = record.pointer("/s3/bucket/name").and_then(Value::as_str).map(str::to_owned) else {
            return;
        };
        let Some(key) = event.subject.clone() else { return };
        let version = record.pointer("/s3/object/versionId").and_then(Value::as_str).map(str::to_owned);
        let mut additions = Map::new();
        let mut error = None;
        if self.access.metadata || self.access.inline_max_bytes.is_some() {
            match self.client.head_object().bucket(&bucket).key(&key).set_version_id(version.clone()).send().await {
                Ok(head) => {
                    let length = head.content_length().unwrap_or(0);
                    if self.access.metadata {
                        additions.insert(
                            "head".into(),
                            json!({
                                "contentType": head.content_type(),
                                "contentLength": length,
                                "lastModified": head.last_modified().map(|t| t.to_string()),
                                "eTag": head.e_tag(),
                                "versionId": head.version_id(),
                                "metadata": head.metadata(),
                            }),
                        );
                    }
                    if let Some(max) = self.access.inline_max_bytes {
                        if u64::try_from(length).is_ok_and(|l| l <= max) {
                            match self.content(&bucket, &key, version.clone(), max).await {
                                Ok(Some(b64)) => {
                                    additions.insert("contentBase64".into(), Value::String(b64));
                                }
                                Ok(None) => {}
                                Err(e) => error = Some(e),
                            }
                        }
                    }
                }
                Err(e) => error = Some(format!("HeadObject: {}", DisplayErrorContext(&e))),
            }
        }
        if let Some(ttl) = self.access.presign {
            let url = match PresigningConfig::expires_in(ttl) {
                Ok(cfg) => self
                    .client
                    .get_object()
                    .bucket(&bucket)
                    .key(&key)
                    .set_version_id(version)
                    .presigned(cfg)
                    .await
                    .map(|p| p.uri().to_owned())
                    .map_err(|e| format!("presign: {}", DisplayErrorContext(&e))),
                Err(e) => Err(format!("presign: {e}")),
            };
            match url {
                Ok(u) => {
                    event.extensions.insert(PRESIGNED_URL_EXTENSION.into(), ExtensionValue::String(u));
                }
                Err(e) => error = error.or(Some(e)),
            }
        }
        if let Some(e) = error {
            tracing::debug!(bucket = %bucket, error = %e, "object access failed");
            event.extensions.insert(OBJECT_ERROR_EXTENSION.into(), ExtensionValue::String(e));
        }
        if !additions.is_empty() {
            if let Some(Data::Json(record)) = &mut event.data {
                if let Some(object) = record.pointer_mut("/s3/object").and_then(Value::as_object_mut) {
                    object.extend(additions);
                }
            }
        }
    }

    /// The object's content, base64, or `None` when it turned out larger than `max`.
    async fn content(
        &self,
        bucket: &str,
        key: &str,
        version: Option<String>,
        max: u64,
    ) -> Result<Option<String>, String> {
        let resp = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version)
            .send()
            .await
            .map_err(|e| format!("GetObject: {}", DisplayErrorContext(&e)))?;
        if resp.content_length().is_some_and(|l| u64::try_from(l).map_or(true, |l| l > max)) {
            return Ok(None);
        }
        let bytes = resp.body.collect().await.map_err(|e| format!("GetObject body: {e}"))?.into_bytes();
        if bytes.len() as u64 > max {
            return Ok(None);
        }
        Ok(Some(base64::engine::general_purpose::STANDARD.encode(&bytes)))
    }
}
