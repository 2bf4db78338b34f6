//! SNS HTTP(S) deliveries: the message envelope, the string SNS signs, and signature verification
//! against the signing certificate (fetched once per URL from `sns.<region>.amazonaws.com` only).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier as _;
use rsa::RsaPublicKey;
use serde::Deserialize;
use x509_cert::der::{DecodePem, Encode};

/// An SNS message as posted to an HTTP(S) subscriber.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    /// `Notification`, `SubscriptionConfirmation` or `UnsubscribeConfirmation`.
    #[serde(rename = "Type")]
    pub ty: String,
    /// Unique per published message.
    pub message_id: String,
    /// The topic.
    pub topic_arn: String,
    /// The payload: for S3 notifications, the notification JSON as a string.
    pub message: String,
    /// When SNS published it.
    pub timestamp: String,
    /// Optional subject of a notification.
    #[serde(default)]
    pub subject: Option<String>,
    /// Confirmation token.
    #[serde(default)]
    pub token: Option<String>,
    /// URL to visit to confirm the subscription.
    #[serde(default, rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    /// `1` (SHA1withRSA) or `2` (SHA256withRSA).
    #[serde(default)]
    pub signature_version: Option<String>,
    /// Base64 signature.
    #[serde(default)]
    pub signature: Option<String>,
    /// Where the signing certificate is.
    #[serde(default, rename = "SigningCertURL")]
    pub signing_cert_url: Option<String>,
}

/// Why an SNS message was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnsError {
    /// The body is not an SNS message.
    #[error("not an SNS message: {0}")]
    Malformed(String),
    /// The signature does not verify, or the certificate URL is not SNS's.
    #[error("SNS signature rejected: {0}")]
    Signature(String),
    /// The certificate could not be fetched (SNS will retry the delivery).
    #[error("SNS signing certificate {url}: {message}")]
    Certificate {
        /// The certificate URL.
        url: String,
        /// What failed.
        message: String,
    },
}

impl SnsMessage {
    /// Parses a posted body.
    ///
    /// # Errors
    /// [`SnsError::Malformed`] naming what is missing.
    pub fn parse(body: &[u8]) -> Result<Self, SnsError> {
        serde_json::from_slice(body).map_err(|e| SnsError::Malformed(e.to_string()))
    }

    /// The canonical string SNS signs: `Key\nvalue\n` for the type's fields, in this order.
    ///
    /// # Errors
    /// [`SnsError::Malformed`] when a field the type signs is missing.
    pub fn string_to_sign(&self) -> Result<String, SnsError> {
        let mut out = String::new();
        let mut add = |k: &str, v: Option<&str>| -> Result<(), SnsError> {
            let v = v.ok_or_else(|| SnsError::Malformed(format!("{k}: missing")))?;
            out.push_str(k);
            out.push('\n');
            out.push_str(v);
            out.push('\n');
            Ok(())
        };
        add("Message", Some(&self.message))?;
        add("MessageId", Some(&self.message_id))?;
        match self.ty.as_str() {
            "Notification" => {
                if let Some(s) = &self.subject {
                    add("Subject", Some(s))?;
                }
                add("Timestamp", Some(&self.timestamp))?;
                add("TopicArn", Some(&self.topic_arn))?;
            }
            "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
                add("SubscribeURL", self.subscribe_url.as_deref())?;
                add("Timestamp", Some(&self.timestamp))?;
                add("Token", self.token.as_deref())?;
                add("TopicArn", Some(&self.topic_arn))?;
            }
            other => return Err(SnsError::Malformed(format!("Type: unknown {other:?}"))),
        }
        add("Type", Some(&self.ty))?;
        Ok(out)
    }

    /// Verifies the signature with `key`.
    ///
    /// # Errors
    /// [`SnsError::Signature`] when it does not verify or its version is unknown.
    pub fn verify_with(&self, key: &RsaPublicKey) -> Result<(), SnsError> {
        let text = self.string_to_sign()?;
        let sig = self.signature.as_deref().ok_or_else(|| SnsError::Signature("no Signature".into()))?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .map_err(|e| SnsError::Signature(format!("Signature is not base64: {e}")))?;
        let sig = Signature::try_from(sig.as_slice()).map_err(|e| SnsError::Signature(e.to_string()))?;
        let result = match self.signature_version.as_deref().unwrap_or("1") {
            "1" => VerifyingKey::<sha1::Sha1>::new(key.clone()).verify(text.as_bytes(), &sig),
            "2" => VerifyingKey::<rsa::sha2::Sha256>::new(key.clone()).verify(text.as_bytes(), &sig),
            v => return Err(SnsError::Signature(format!("unknown SignatureVersion {v:?}"))),
        };
        result.map_err(|_| SnsError::Signature("the signature does not match the message".into()))
    }
}

/// Checks that a certificate (or subscribe) URL is an `https://sns.<region>.amazonaws.com[.cn]/` URL,
/// so a forged message cannot point at a certificate of its own.
///
/// # Errors
/// [`SnsError::Signature`] naming the URL.
pub fn check_sns_url(text: &str) -> Result<url::Url, SnsError> {
    let url = url::Url::parse(text).map_err(|e| SnsError::Signature(format!("{text:?}: {e}")))?;
    let host = url.host_str().unwrap_or("");
    let region = host
        .strip_prefix("sns.")
        .and_then(|h| h.strip_suffix(".amazonaws.com").or_else(|| h.strip_suffix(".amazonaws.com.cn")));
    let region_ok = region.is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if url.scheme() != "https" || !region_ok || url.port().is_some() {
        return Err(SnsError::Signature(format!("{text:?} is not an https://sns.<region>.amazonaws.com URL")));
    }
    Ok(url)
}

/// Reads the RSA public key of a PEM certificate.
///
/// # Errors
/// [`SnsError::Signature`] when it is not a PEM X.509 certificate with an RSA key.
pub fn public_key_of(pem: &[u8]) -> Result<RsaPublicKey, SnsError> {
    let cert = x509_cert::Certificate::from_pem(pem).map_err(|e| SnsError::Signature(format!("certificate: {e}")))?;
    let spki = cert.tbs_certificate.subject_public_key_info.to_der().map_err(|e| SnsError::Signature(e.to_string()))?;
    RsaPublicKey::from_public_key_der(&spki).map_err(|e| SnsError::Signature(format!("certificate key: {e}")))
}

/// Verifies messages, fetching each signing certificate once.
#[derive(Debug)]
pub struct Verifier {
    http: reqwest::Client,
    keys: Mutex<HashMap<String, RsaPublicKey>>,
}

impl Verifier {
    /// A verifier using `http` to fetch certificates.
    pub fn new(http: reqwest::Client) -> Self {
        Self { http, keys: Mutex::new(HashMap::new()) }
    }

    /// Verifies `msg`'s signature.
    ///
    /// # Errors
    /// [`SnsError::Signature`] for a bad signature or URL, [`SnsError::Certificate`] when the
    /// certificate cannot be fetched.
    pub async fn verify(&self, msg: &SnsMessage) -> Result<(), SnsError> {
        let cert_url =
            msg.signing_cert_url.as_deref().ok_or_else(|| SnsError::Signature("no SigningCertURL".into()))?;
        let url = check_sns_url(cert_url)?;
        if !url.path().ends_with(".pem") {
            return Err(SnsError::Signature(format!("{cert_url:?} is not a .pem URL")));
        }
        let cached = self.keys.lock().unwrap_or_else(|e| e.into_inner()).get(cert_url).cloned();
        let key = match cached {
            Some(k) => k,
            None => {
                let fail = |message: String| SnsError::Certificate { url: cert_url.to_owned(), message };
                let resp = self.http.get(url).send().await.map_err(|e| fail(e.to_string()))?;
                if !resp.status().is_success() {
                    return Err(fail(format!("HTTP {}", resp.status())));
                }
                let pem = resp.bytes().await.map_err(|e| fail(e.to_string()))?;
                let key = public_key_of(&pem)?;
                self.keys.lock().unwrap_or_else(|e| e.into_inner()).insert(cert_url.to_owned(), key.clone());
                key
            }
        };
        msg.verify_with(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../testdata/s3/sns/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn signed_samples_verify_and_tampering_is_caught() {
        let key = public_key_of(&testdata("test-cert.pem")).unwrap();
        for file in ["notification-v1.json", "notification-v2.json", "subscription-confirmation-v1.json"] {
            let msg = SnsMessage::parse(&testdata(file)).unwrap();
            msg.verify_with(&key).unwrap_or_else(|e| panic!("{file}: {e}"));
            let mut forged = msg.clone();
            forged.message.push(' ');
            assert!(matches!(forged.verify_with(&key), Err(SnsError::Signature(_))), "{file}");
            let mut forged = msg.clone();
            forged.topic_arn.push('x');
            assert!(forged.verify_with(&key).is_err(), "{file}");
        }
    }

    #[test]
    fn only_sns_certificate_urls() {
        assert!(check_sns_url("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem").is_ok());
        assert!(check_sns_url("https://sns.cn-north-1.amazonaws.com.cn/x.pem").is_ok());
        for bad in [
            "http://sns.eu-west-1.amazonaws.com/x.pem",
            "https://sns.eu-west-1.amazonaws.com.evil.com/x.pem",
            "https://evil.com/sns.eu-west-1.amazonaws.com/x.pem",
            "https://sns..amazonaws.com/x.pem",
            "https://sns.eu-west-1.amazonaws.com:8443/x.pem",
        ] {
            assert!(check_sns_url(bad).is_err(), "{bad}");
        }
    }
}
