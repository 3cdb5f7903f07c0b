//! An S3-compatible bucket as an [`ObjectStore`].

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;

use crate::error::Error;

/// Where and how to reach a bucket (path-style requests: what S3-compatible servers take).
#[derive(Clone)]
pub struct S3Config {
    /// `https://host[:port]`, or `http://` when [`S3Config::allow_http`] is set.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Plain HTTP, for a store on a trusted network (and the tests).
    pub allow_http: bool,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl S3Config {
    /// A client for the bucket. No request is made yet.
    pub fn connect(&self) -> Result<Arc<dyn ObjectStore>, Error> {
        use_ring_for_tls();
        let store = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key)
            .with_allow_http(self.allow_http)
            .with_virtual_hosted_style_request(false)
            .build()
            .map_err(|source| Error::Client {
                endpoint: self.endpoint.clone(),
                source,
            })?;
        Ok(Arc::new(store))
    }
}

/// reqwest is built without a crypto provider of its own (its default is aws-lc-rs): it
/// takes rustls' process default. Make that ring, the provider the rest of Tidepool uses,
/// unless a provider is already installed (in this workspace it can only be ring).
fn use_ring_for_tls() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err means another thread installed one between the check and here: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
