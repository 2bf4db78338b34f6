//! Object access added to S3 events, per trigger (`triggers[].object`): HeadObject metadata in
//! `data.s3.object.head`, the content (base64, only when it fits the configured size) in
//! `data.s3.object.contentBase64`, and a presigned GET URL in the `presignedurl` extension. A failure
//! adds the `objecterror` extension instead; the event is still delivered. The dispatcher calls
//! [`enrich`] with the client of the `type: s3` source the event came from ([`Delivery::object_client`]),
//! or one built from the trigger's `object.aws`.
//!
//! [`Delivery::object_client`]: crate::Delivery::object_client

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;
use base64::Engine;
use serde_json::{json, Map, Value};
use switchyard_schemas::sources::s3::{AwsSettings, ObjectAccess};
use switchyard_schemas::{CloudEvent, Data, ExtensionValue};
use tokio::sync::OnceCell;

use super::{aws, binding};

/// Extension carrying the presigned GET URL.
pub const PRESIGNED_URL_EXTENSION: &str = "presignedurl";
/// Extension saying why object access failed.
pub const OBJECT_ERROR_EXTENSION: &str = "objecterror";
/// Longest time the S3 calls for one event may take before the event goes on with `objecterror`.
pub const ACCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// An S3 client for object access, built from AWS settings on first use (loading the AWS
/// environment may take a moment, and a source or trigger that never sees an S3 event never needs
/// it), then shared by every clone.
#[derive(Clone)]
pub struct ObjectClient {
    settings: Arc<AwsSettings>,
    client: Arc<OnceCell<aws_sdk_s3::Client>>,
}

impl fmt::Debug for ObjectClient {
    // Never prints the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectClient")
            .field("endpoint_url", &self.settings.endpoint_url)
            .field("region", &self.settings.region)
            .field("built", &self.client.initialized())
            .finish_non_exhaustive()
    }
}

impl ObjectClient {
    /// A client for `settings`, built on first use.
    pub fn new(settings: AwsSettings) -> Self {
        Self { settings: Arc::new(settings), client: Arc::new(OnceCell::new()) }
    }

    /// A client from an SDK configuration already loaded for `settings` (the SQS input's).
    pub fn from_sdk(sdk: &aws_config::SdkConfig, settings: &AwsSettings) -> Self {
        Self {
            settings: Arc::new(settings.clone()),
            client: Arc::new(OnceCell::new_with(Some(aws::s3_client(sdk, settings)))),
        }
    }

    async fn get(&self) -> &aws_sdk_s3::Client {
        self.client
            .get_or_init(|| async { aws::s3_client(&aws::sdk_config(&self.settings, None).await, &self.settings) })
            .await
    }
}

/// Whether object access applies to `event`: an S3 event (`com.amazonaws.s3.*`) that is not an
/// `ObjectRemoved` one, with a bucket and a key.
pub fn applies_to(event: &CloudEvent) -> bool {
    event.ty.starts_with(binding::TYPE_PREFIX)
        && !binding::is_removal(event)
        && event.subject.is_some()
        && matches!(&event.data, Some(Data::Json(r)) if r.pointer("/s3/bucket/name").is_some_and(Value::is_string))
}

/// Adds what `access` asks for to `event` through `client`; nothing when [`applies_to`] says no. A
/// failure (or [`ACCESS_TIMEOUT`]) adds the `objecterror` extension; the event is otherwise as it was.
pub async fn enrich(client: &ObjectClient, access: &ObjectAccess, event: &mut CloudEvent) {
    if !access.wants_anything() || !applies_to(event) {
        return;
    }
    // `Access::enrich` changes the event only after its last await, so a timeout leaves it as it was.
    let work = async {
        let client = client.get().await;
        Access { client, access }.enrich(event).await;
    };
    match tokio::time::timeout(ACCESS_TIMEOUT, work).await {
        Ok(()) => {}
        Err(_) => {
            let e = format!("object access timed out after {}s", ACCESS_TIMEOUT.as_secs());
            tracing::debug!(error = %e, "object access failed");
            event.extensions.insert(OBJECT_ERROR_EXTENSION.into(), ExtensionValue::String(e));
        }
    }
}

/// One event's object access.
struct Access<'a> {
    client: &'a aws_sdk_s3::Client,
    access: &'a ObjectAccess,
}

impl Access<'_> {
    /// Adds what is configured to `event` (which [`applies_to`] accepted).
    async fn enrich(&self, event: &mut CloudEvent) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_event(ty: &str) -> CloudEvent {
        let mut e = CloudEvent::new("1", "aws:s3.us-east-1.b", format!("{}{ty}", binding::TYPE_PREFIX));
        e.subject = Some("a b.txt".into());
        e.data = Some(Data::Json(json!({"s3": {"bucket": {"name": "b"}, "object": {"key": "a+b.txt"}}})));
        e
    }

    /// Nothing listens on this endpoint: every S3 call fails at once.
    fn unreachable() -> ObjectClient {
        ObjectClient::new(AwsSettings {
            region: Some("us-east-1".into()),
            endpoint_url: Some("http://127.0.0.1:9".into()),
            access_key_id: Some("k".into()),
            secret_access_key: Some("never-printed".into()),
            session_token: None,
            force_path_style: true,
        })
    }

    #[test]
    fn only_s3_events_other_than_removals_get_object_access() {
        assert!(applies_to(&s3_event("ObjectCreated:Put")));
        assert!(!applies_to(&s3_event("ObjectRemoved:Delete")));
        let mut other = s3_event("ObjectCreated:Put");
        other.ty = "com.example.upload".into();
        assert!(!applies_to(&other), "an event that merely looks like a record is not touched");
        let mut no_key = s3_event("ObjectCreated:Put");
        no_key.subject = None;
        assert!(!applies_to(&no_key));
    }

    #[tokio::test]
    async fn a_failed_call_adds_objecterror_and_keeps_the_event() {
        let access = ObjectAccess { metadata: true, ..ObjectAccess::default() };
        let mut event = s3_event("ObjectCreated:Put");
        let before = event.clone();
        enrich(&unreachable(), &access, &mut event).await;
        let Some(ExtensionValue::String(e)) = event.extensions.get(OBJECT_ERROR_EXTENSION) else {
            panic!("no objecterror: {event:?}")
        };
        assert!(e.starts_with("HeadObject: "), "{e}");
        event.extensions.remove(OBJECT_ERROR_EXTENSION);
        assert_eq!(event, before, "nothing else changed");
    }

    #[tokio::test]
    async fn removals_and_empty_access_make_no_calls() {
        let client = unreachable();
        let mut removed = s3_event("ObjectRemoved:Delete");
        let before = removed.clone();
        enrich(&client, &ObjectAccess { metadata: true, ..ObjectAccess::default() }, &mut removed).await;
        assert_eq!(removed, before);
        let mut created = s3_event("ObjectCreated:Put");
        let before = created.clone();
        enrich(&client, &ObjectAccess::default(), &mut created).await;
        assert_eq!(created, before);
        assert!(!client.client.initialized(), "no client was even built");
    }

    #[tokio::test]
    async fn presigning_needs_no_call_and_clones_share_one_client() {
        let client = unreachable();
        let copy = client.clone();
        let access = ObjectAccess { presign: Some(Duration::from_secs(60)), ..ObjectAccess::default() };
        let mut event = s3_event("ObjectCreated:Copy");
        enrich(&copy, &access, &mut event).await;
        let Some(ExtensionValue::String(url)) = event.extensions.get(PRESIGNED_URL_EXTENSION) else {
            panic!("no presignedurl: {event:?}")
        };
        assert!(url.starts_with("http://127.0.0.1:9/b/a%20b.txt?"), "{url}");
        assert!(url.contains("X-Amz-Expires=60"), "{url}");
        assert!(client.client.initialized(), "built once, for every clone");
        assert!(!format!("{client:?}").contains("never-printed"), "Debug leaves the credentials out");
    }
}
