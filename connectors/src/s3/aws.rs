//! AWS SDK clients from the source's `aws` settings: a rustls (ring) HTTPS client, region from
//! the settings, the environment or the queue URL, and static credentials when configured.

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::Credentials;
use switchyard_schemas::sources::s3::AwsSettings;

/// The region in an `https://sqs.<region>.amazonaws.com/...` queue URL.
pub fn region_of_queue_url(queue_url: &str) -> Option<String> {
    let url = url::Url::parse(queue_url).ok()?;
    let host = url.host_str()?;
    let rest = host.strip_prefix("sqs.")?;
    let region = rest.split('.').next()?;
    (!region.is_empty() && rest[region.len()..].starts_with(".amazonaws.com")).then(|| region.to_owned())
}

/// Loads the shared SDK configuration. With an `endpoint_url` and no region anywhere, `us-east-1`
/// is used (test servers and most S3-compatible stores accept any region).
pub async fn sdk_config(settings: &AwsSettings, region_hint: Option<String>) -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(r) = &settings.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(e) = &settings.endpoint_url {
        loader = loader.endpoint_url(e);
    }
    if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
        loader = loader.credentials_provider(Credentials::new(
            id,
            secret,
            settings.session_token.clone(),
            None,
            "switchyard-config",
        ));
    }
    let mut config = loader.load().await;
    if config.region().is_none() {
        let fallback = region_hint.or_else(|| settings.endpoint_url.as_ref().map(|_| "us-east-1".to_owned()));
        if let Some(r) = fallback {
            config = config.into_builder().region(Region::new(r)).build();
        }
    }
    config
}

/// An S3 client for `config`, path-style when the settings ask for it.
pub fn s3_client(config: &aws_config::SdkConfig, settings: &AwsSettings) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(config).force_path_style(settings.force_path_style).build();
    aws_sdk_s3::Client::from_conf(s3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_from_queue_url() {
        assert_eq!(
            region_of_queue_url("https://sqs.eu-west-1.amazonaws.com/123456789012/q").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of_queue_url("http://127.0.0.1:5000/123456789012/q"), None);
        assert_eq!(region_of_queue_url("https://sqs.example.com/q"), None);
    }
}
