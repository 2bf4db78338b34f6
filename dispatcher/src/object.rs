//! Per-trigger object access (`triggers[].object`): after routing, each matched trigger that asks for
//! it gets its own copy of an S3 event with HeadObject metadata, a presigned URL or the content
//! added (`switchyard_connectors::s3::object::enrich`); the other triggers get the event untouched.
//! The S3 client is the one of the `type: s3` source the event came from, else one built from the
//! trigger's `object.aws` (once per distinct settings, on first use).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use switchyard_connectors::s3::object::{self, ObjectClient};
use switchyard_schemas::config::TriggerConfig;
use switchyard_schemas::sources::s3::AwsSettings;
use switchyard_schemas::CloudEvent;

/// The triggers' S3 clients, shared by every delivery.
#[derive(Default)]
pub(crate) struct ObjectAccess {
    /// Keyed by the settings (as JSON), so triggers with the same settings share one client and a
    /// trigger whose settings change gets a new one.
    clients: Mutex<HashMap<String, ObjectClient>>,
}

impl ObjectAccess {
    /// The event `trigger` invokes with: `event` itself when the trigger has no `object` or the
    /// event is not one object access applies to (no S3 call), else an enriched copy. `source` is
    /// the S3 client of the `type: s3` source the event came from, if it did. A failed access adds
    /// the `objecterror` extension; the event is delivered all the same.
    pub(crate) async fn apply(
        &self,
        trigger: &TriggerConfig,
        source: Option<&ObjectClient>,
        event: Arc<CloudEvent>,
    ) -> Arc<CloudEvent> {
        let Some(access) = &trigger.object else { return event };
        if !access.wants_anything() || !object::applies_to(&event) {
            return event;
        }
        let client = match source {
            Some(c) => c.clone(),
            None => self.client(access.aws.as_ref()),
        };
        let mut copy = (*event).clone();
        object::enrich(&client, access, &mut copy).await;
        Arc::new(copy)
    }

    fn client(&self, settings: Option<&AwsSettings>) -> ObjectClient {
        let settings = settings.cloned().unwrap_or_default();
        let key = serde_json::to_string(&settings).unwrap_or_default();
        let mut clients = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        clients.entry(key).or_insert_with(|| ObjectClient::new(settings)).clone()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use switchyard_schemas::{Data, ExtensionValue};

    use super::*;

    fn trigger(object: Option<&str>) -> TriggerConfig {
        let mut t = json!({"name": "t", "function": "f"});
        if let Some(endpoint) = object {
            t["object"] = json!({"presign": "1m", "aws": {"endpoint_url": endpoint, "region": "us-east-1",
                "access_key_id": "a", "secret_access_key": "b", "force_path_style": true}});
        }
        serde_json::from_value(t).unwrap()
    }

    fn upload() -> Arc<CloudEvent> {
        let mut e = CloudEvent::new("1", "aws:s3.us-east-1.b", "com.amazonaws.s3.ObjectCreated:Put");
        e.subject = Some("k.txt".into());
        e.data = Some(Data::Json(json!({"s3": {"bucket": {"name": "b"}, "object": {"key": "k.txt"}}})));
        Arc::new(e)
    }

    /// Nothing listens there; presigning makes no call.
    const ENDPOINT: Option<&str> = Some("http://127.0.0.1:9");

    #[tokio::test]
    async fn only_triggers_with_object_get_a_changed_copy() {
        let access = ObjectAccess::default();
        let event = upload();
        let plain = access.apply(&trigger(None), None, Arc::clone(&event)).await;
        assert!(Arc::ptr_eq(&plain, &event), "no object: the same event, no copy");
        let enriched = access.apply(&trigger(ENDPOINT), None, Arc::clone(&event)).await;
        let Some(ExtensionValue::String(url)) = enriched.extensions.get("presignedurl") else { panic!("{enriched:?}") };
        assert!(url.starts_with("http://127.0.0.1:9/b/k.txt?"), "object.aws is used: {url}");
        assert!(event.extensions.is_empty(), "the shared event is untouched");
        let mut removed = (*upload()).clone();
        removed.ty = "com.amazonaws.s3.ObjectRemoved:Delete".into();
        let removed = Arc::new(removed);
        assert!(Arc::ptr_eq(&access.apply(&trigger(ENDPOINT), None, Arc::clone(&removed)).await, &removed));
    }

    #[tokio::test]
    async fn the_source_client_wins_and_clients_are_built_once_per_settings() {
        let access = ObjectAccess::default();
        let source = ObjectClient::new(AwsSettings {
            endpoint_url: Some("http://127.0.0.1:7".into()),
            region: Some("us-east-1".into()),
            access_key_id: Some("a".into()),
            secret_access_key: Some("b".into()),
            force_path_style: true,
            ..AwsSettings::default()
        });
        let e = access.apply(&trigger(ENDPOINT), Some(&source), upload()).await;
        let Some(ExtensionValue::String(url)) = e.extensions.get("presignedurl") else { panic!("{e:?}") };
        assert!(url.starts_with("http://127.0.0.1:7/"), "the source's client: {url}");
        assert!(access.clients.lock().unwrap().is_empty(), "no trigger client needed");
        for _ in 0..3 {
            access.apply(&trigger(ENDPOINT), None, upload()).await;
        }
        access.apply(&trigger(Some("http://127.0.0.1:8")), None, upload()).await;
        assert_eq!(access.clients.lock().unwrap().len(), 2);
    }
}
