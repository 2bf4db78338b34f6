//! `type: s3`: S3 object notifications (AWS S3 or an S3-compatible store) from an SQS queue, SNS
//! HTTP(S) deliveries, or webhook posts, mapped to CloudEvents per the CloudEvents AWS S3 adapter.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::FieldError;

/// An S3 notification source. Exactly one of `sqs`, `sns` and `webhook` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3SourceConfig {
    /// Unique source name. HTTP inputs (`sns`, `webhook`) are served at `POST /ingest/s3/<name>`.
    pub name: String,
    /// Long-poll an SQS queue that S3 (directly, or through SNS) sends notifications to
    /// (at-least-once: a message is deleted only once every invocation it caused is terminal and recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs: Option<SqsInput>,
    /// Accept SNS HTTP(S) deliveries at `POST /ingest/s3/<name>`: subscription confirmation and
    /// signature verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns: Option<SnsInput>,
    /// Accept notification JSON posted by an S3-compatible store (MinIO and others) at
    /// `POST /ingest/s3/<name>`, with a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookInput>,
    /// Which records become events; the others are acknowledged and dropped.
    #[serde(default)]
    pub filter: S3Filter,
    /// AWS client settings (region, endpoint, credentials) for SQS, and for the object access of the
    /// triggers its events reach (`triggers[].object`).
    #[serde(default)]
    pub aws: AwsSettings,
    /// No longer here: object access is set per trigger (`triggers[].object`). Accepted only to
    /// refuse it with an error that says so; not part of the schema.
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub object: Option<serde::de::IgnoredAny>,
}

/// The SQS input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqsInput {
    /// Queue URL, e.g. `https://sqs.eu-west-1.amazonaws.com/123456789012/uploads`.
    pub queue_url: String,
    /// Long-poll wait of each ReceiveMessage call, 0s..=20s. Default `20s`.
    #[serde(default = "default_wait_time", with = "crate::duration")]
    #[schemars(with = "String")]
    pub wait_time: Duration,
    /// Visibility timeout requested for each received message, and re-applied every third of it
    /// while its invocations (or their retries) run. After a crash the message reappears this long
    /// after it was last extended. 1s..=12h. Default `60s`.
    #[serde(default = "default_visibility_timeout", with = "crate::duration")]
    #[schemars(with = "String")]
    pub visibility_timeout: Duration,
    /// Messages per ReceiveMessage call, 1..=10. Default 10.
    #[serde(default = "default_max_messages")]
    pub max_messages: u32,
    /// Messages being handled at once (beyond it, the source stops receiving). Default 64.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// What happens to a message whose invocations failed for good (retries exhausted, FAILURE
    /// record marked dead-lettered). `true`: it is not deleted; it reappears after the visibility
    /// timeout and the queue's redrive policy moves it to its dead-letter queue after
    /// `maxReceiveCount` receives. `false`: it is deleted (the FAILURE record, and the trigger's
    /// dead-letter sink if set, are the dead letter). Default: `true` when the queue has a
    /// `RedrivePolicy` at start, else `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redrive: Option<bool>,
}

/// The SNS HTTP(S) input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnsInput {
    /// Verify each message's signature against the certificate at its `SigningCertURL` (which must
    /// be an `https://sns.<region>.amazonaws.com/` URL). Turn off only for local testing (moto does
    /// not sign); a warning is logged at start. Default true.
    #[serde(default = "default_true")]
    pub verify_signatures: bool,
    /// Topics accepted (ARNs); messages from others get 403. Empty: any topic (signature
    /// verification still proves they come from SNS, not that they are yours).
    #[serde(default)]
    pub topic_arns: Vec<String>,
    /// Confirm subscriptions by fetching the `SubscribeURL` of a `SubscriptionConfirmation`.
    /// When false, the URL is logged for someone to confirm. Default true.
    #[serde(default = "default_true")]
    pub confirm_subscriptions: bool,
}

/// The webhook input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// Bearer token the store sends (`Authorization: Bearer <token>`; MinIO: `auth_token`). Use
    /// `${ENV}`. At least 16 characters.
    pub token: String,
}

/// Record filters; all that are set must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Filter {
    /// Bucket names (empty: any).
    #[serde(default)]
    pub buckets: Vec<String>,
    /// Key prefix (of the decoded key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Key suffix (of the decoded key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Event names, exact (`ObjectCreated:Put`) or with a trailing `*` (`ObjectCreated:*`); an `s3:`
    /// prefix is allowed. Empty: any.
    #[serde(default)]
    pub events: Vec<String>,
}

/// AWS client settings. Unset values come from the usual AWS environment (variables, profile,
/// instance or pod role).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// Region, e.g. `eu-west-1`. Default: from the environment; for SQS, from the queue URL when
    /// the environment has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint URL for S3-compatible stores and test servers (e.g. `http://127.0.0.1:5000` for moto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Access key id (use `${ENV}`); with `secret_access_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Secret access key (use `${ENV}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials (use `${ENV}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
    /// Path-style S3 URLs (`endpoint/bucket/key`), as MinIO and moto need. Default false.
    #[serde(default)]
    pub force_path_style: bool,
}

/// A trigger's object access: what its invocations of S3 events (`com.amazonaws.s3.*`) get from the
/// object itself. Not for `ObjectRemoved` events: the object is gone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectAccess {
    /// Add HeadObject's answer (content type, length, last modified, ETag, user metadata) as
    /// `data.s3.object.head`. Default false.
    #[serde(default)]
    pub metadata: bool,
    /// Add a presigned GET URL valid this long as the `presignedurl` extension, so a function can
    /// fetch the object without credentials. 1s..=7d. Default: none.
    #[serde(default, with = "crate::duration::option", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub presign: Option<Duration>,
    /// Add the content, base64, as `data.s3.object.contentBase64` when the object is at most this
    /// many bytes (larger objects get no content, never a truncated one). At most 4 MiB. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_max_bytes: Option<u64>,
    /// AWS client settings for events that did not come from a `type: s3` source (S3 notifications
    /// through a `kafka`, `nats` or `amqp` source with `s3_notifications: true`). Events from a
    /// `type: s3` source always use that source's `aws`. Default: the usual AWS environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsSettings>,
}

const fn default_wait_time() -> Duration {
    Duration::from_secs(20)
}
const fn default_visibility_timeout() -> Duration {
    Duration::from_secs(60)
}
const fn default_max_messages() -> u32 {
    10
}
const fn default_max_in_flight() -> usize {
    64
}
const fn default_true() -> bool {
    true
}

/// Largest `object.inline_max_bytes`.
pub const MAX_INLINE_BYTES: u64 = 4 * 1024 * 1024;

impl S3SourceConfig {
    /// Whether the source is fed through the broker's HTTP endpoint (`sns` or `webhook`).
    pub const fn is_http(&self) -> bool {
        self.sns.is_some() || self.webhook.is_some()
    }

    /// Checks every field before anything connects.
    ///
    /// # Errors
    /// The first problem, with the field path.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        let name_ok = !self.name.is_empty()
            && self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(FieldError::new(
                format!("{at}.name"),
                "letters, digits, '-', '_' and '.' only (it is part of the URL path)",
            ));
        }
        let inputs = [self.sqs.is_some(), self.sns.is_some(), self.webhook.is_some()];
        if inputs.iter().filter(|x| **x).count() != 1 {
            return Err(FieldError::new(format!("{at}.sqs"), "set exactly one of sqs, sns, webhook"));
        }
        if let Some(q) = &self.sqs {
            let ok = url::Url::parse(&q.queue_url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                return Err(FieldError::new(format!("{at}.sqs.queue_url"), format!("{:?} is not a URL", q.queue_url)));
            }
            if q.wait_time > Duration::from_secs(20) {
                return Err(FieldError::new(format!("{at}.sqs.wait_time"), "at most 20s"));
            }
            if q.visibility_timeout < Duration::from_secs(1) || q.visibility_timeout > Duration::from_secs(12 * 3600) {
                return Err(FieldError::new(format!("{at}.sqs.visibility_timeout"), "between 1s and 12h"));
            }
            if !(1..=10).contains(&q.max_messages) {
                return Err(FieldError::new(format!("{at}.sqs.max_messages"), "between 1 and 10"));
            }
            if q.max_in_flight == 0 {
                return Err(FieldError::new(format!("{at}.sqs.max_in_flight"), "must be at least 1"));
            }
        }
        if let Some(s) = &self.sns {
            for (i, arn) in s.topic_arns.iter().enumerate() {
                if !arn.starts_with("arn:") || arn.split(':').count() != 6 {
                    return Err(FieldError::new(
                        format!("{at}.sns.topic_arns[{i}]"),
                        format!("{arn:?} is not a topic ARN (arn:aws:sns:<region>:<account>:<topic>)"),
                    ));
                }
            }
        }
        if let Some(w) = &self.webhook {
            if w.token.chars().count() < 16 {
                return Err(FieldError::new(format!("{at}.webhook.token"), "at least 16 characters"));
            }
        }
        for (i, e) in self.filter.events.iter().enumerate() {
            let bare = e.strip_prefix("s3:").unwrap_or(e);
            let star = bare.find('*');
            if bare.is_empty() || star.is_some_and(|p| p + 1 != bare.len()) || bare.contains(char::is_whitespace) {
                return Err(FieldError::new(
                    format!("{at}.filter.events[{i}]"),
                    format!("{e:?}: an event name like ObjectCreated:Put or ObjectCreated:* (a `*` only at the end)"),
                ));
            }
        }
        self.aws.validate(&format!("{at}.aws"))?;
        if self.object.is_some() {
            return Err(FieldError::new(
                format!("{at}.object"),
                "object access is set per trigger now: move `object:` to each trigger that wants it \
                 (`triggers[].object`; this source's `aws` settings still apply to its events)",
            ));
        }
        Ok(())
    }
}

impl AwsSettings {
    /// Checks the settings. `at` is the field path, e.g. `sources[0].aws`.
    ///
    /// # Errors
    /// The first problem, with the field path.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        if let Some(e) = &self.endpoint_url {
            if !url::Url::parse(e).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                return Err(FieldError::new(format!("{at}.endpoint_url"), format!("{e:?} is not an http(s) URL")));
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(FieldError::new(
                format!("{at}.secret_access_key"),
                "access_key_id and secret_access_key go together",
            ));
        }
        Ok(())
    }
}

impl ObjectAccess {
    /// Whether anything is asked for (otherwise no S3 calls are made).
    pub const fn wants_anything(&self) -> bool {
        self.metadata || self.presign.is_some() || self.inline_max_bytes.is_some()
    }

    /// Checks the settings. `at` is the field path, e.g. `triggers[0].object`.
    ///
    /// # Errors
    /// The first problem, with the field path.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        if !self.wants_anything() {
            return Err(FieldError::new(
                at,
                "asks for nothing: set `metadata: true`, `presign` or `inline_max_bytes` (or remove `object`)",
            ));
        }
        if let Some(p) = self.presign {
            if p < Duration::from_secs(1) || p > Duration::from_secs(7 * 24 * 3600) {
                return Err(FieldError::new(format!("{at}.presign"), "between 1s and 7d"));
            }
        }
        if let Some(n) = self.inline_max_bytes {
            if n == 0 || n > MAX_INLINE_BYTES {
                return Err(FieldError::new(
                    format!("{at}.inline_max_bytes"),
                    format!("between 1 and {MAX_INLINE_BYTES}"),
                ));
            }
        }
        if let Some(aws) = &self.aws {
            aws.validate(&format!("{at}.aws"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<S3SourceConfig, String> {
        let c: S3SourceConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate("sources[0]").map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn inputs_and_defaults() {
        let c = parse("name: up\nsqs: {queue_url: 'http://127.0.0.1:5000/123456789012/q'}\n").unwrap();
        let q = c.sqs.as_ref().unwrap();
        assert_eq!(
            (q.wait_time, q.visibility_timeout, q.max_messages, q.redrive),
            (Duration::from_secs(20), Duration::from_secs(60), 10, None)
        );
        assert!(!c.is_http());
        let c = parse("name: up\nsns: {}\nfilter: {events: ['s3:ObjectCreated:*']}\n").unwrap();
        assert!(c.sns.as_ref().unwrap().verify_signatures && c.is_http());
        let c = parse("name: up\nwebhook: {token: 0123456789abcdef}\n").unwrap();
        assert!(c.object.is_none());
    }

    #[test]
    fn object_access_on_the_source_says_to_move_it_to_the_triggers() {
        let e = parse("name: up\nwebhook: {token: 0123456789abcdef}\nobject: {presign: 15m}\n").unwrap_err();
        assert!(e.starts_with("sources[0].object: "), "{e}");
        assert!(e.contains("triggers[].object"), "{e}");
        // Not written back out (the API and `apply` never show it).
        let c: S3SourceConfig = serde_yaml::from_str("name: up\nsns: {}\nobject: {metadata: true}\n").unwrap();
        assert!(!serde_yaml::to_string(&c).unwrap().contains("object"));
    }

    #[test]
    fn object_access_limits_name_the_field() {
        let check = |y: &str| {
            let o: ObjectAccess = serde_yaml::from_str(y).map_err(|e| e.to_string())?;
            o.validate("triggers[1].object").map_err(|e| e.to_string()).map(|()| o)
        };
        let o = check(
            "{metadata: true, presign: 5m, inline_max_bytes: 1024, aws: {endpoint_url: 'http://127.0.0.1:5055'}}",
        )
        .unwrap();
        assert_eq!((o.presign, o.inline_max_bytes), (Some(Duration::from_secs(300)), Some(1024)));
        assert!(check("{}").unwrap_err().starts_with("triggers[1].object: asks for nothing"));
        assert!(check("{metadata: false}").unwrap_err().contains("asks for nothing"));
        assert!(check("{presign: 0s}").unwrap_err().starts_with("triggers[1].object.presign:"));
        assert!(check("{presign: 8d}").unwrap_err().starts_with("triggers[1].object.presign:"));
        assert!(check("{inline_max_bytes: 0}").unwrap_err().starts_with("triggers[1].object.inline_max_bytes:"));
        assert!(check("{inline_max_bytes: 4194305}").unwrap_err().contains("object.inline_max_bytes"));
        assert!(check("{inline_max_bytes: 4194304}").is_ok());
        assert!(check("{metadata: true, aws: {endpoint_url: moto}}")
            .unwrap_err()
            .starts_with("triggers[1].object.aws.endpoint_url:"));
        assert!(check("{metadata: true, aws: {access_key_id: a}}")
            .unwrap_err()
            .starts_with("triggers[1].object.aws.secret_access_key:"));
        assert!(check("{metadata: true, colour: red}").unwrap_err().contains("colour"));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |y: &str| parse(y).unwrap_err();
        assert!(err("name: up\n").contains("sources[0].sqs: set exactly one"));
        assert!(err("name: up\nsns: {}\nwebhook: {token: 0123456789abcdef}\n").contains("exactly one"));
        assert!(err("name: 'a/b'\nsns: {}\n").contains("sources[0].name"));
        assert!(err("name: up\nsqs: {queue_url: q}\n").contains("sqs.queue_url"));
        assert!(err("name: up\nsqs: {queue_url: 'http://x/q', wait_time: 21s}\n").contains("sqs.wait_time"));
        assert!(err("name: up\nsqs: {queue_url: 'http://x/q', max_messages: 11}\n").contains("sqs.max_messages"));
        assert!(err("name: up\nwebhook: {token: short}\n").contains("webhook.token"));
        assert!(err("name: up\nsns: {topic_arns: [topic]}\n").contains("sns.topic_arns[0]"));
        assert!(err("name: up\nsns: {}\nfilter: {events: ['Object*Created']}\n").contains("filter.events[0]"));
        assert!(err("name: up\nsns: {}\naws: {access_key_id: a}\n").contains("aws.secret_access_key"));
        assert!(err("name: up\nsns: {}\naws: {endpoint_url: 'ftp://x'}\n").contains("sources[0].aws.endpoint_url"));
        assert!(err("name: up\nsns: {}\ncolour: red\n").contains("colour"));
    }
}
