//! Who may command this agent: the controller's ServiceAccount, proven by a projected token
//! for the agent's audience, checked by the API server (TokenReview).

use std::{fmt, sync::Mutex};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use http::HeaderValue;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::{Api, api::PostParams};

use crate::token_cache::ReviewCache;

/// The audience agents expect in a caller's token unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "tidepool-agent";

/// Longer than any ServiceAccount token the API server issues; anything bigger is refused
/// before it costs a TokenReview.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A ServiceAccount, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccountRef {
    /// The username the API server gives this ServiceAccount's tokens.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

impl fmt::Display for ServiceAccountRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How callers are authenticated.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// The audience a caller's token must be issued for.
    pub audience: String,
    /// The only identity allowed to command the agent.
    pub controller: ServiceAccountRef,
    /// How long a successful review is reused (never past the token's expiry). A token
    /// revoked early stays accepted for at most this long.
    pub cache_ttl: SignedDuration,
    /// How many reviewed tokens are remembered at most.
    pub cache_capacity: usize,
}

impl AuthConfig {
    /// The defaults: audience [`DEFAULT_AUDIENCE`], reviews reused for 10 s (the
    /// controller holds one token per agent, so a few entries suffice).
    pub fn for_controller(controller: ServiceAccountRef) -> Self {
        Self {
            audience: DEFAULT_AUDIENCE.to_owned(),
            controller,
            cache_ttl: SignedDuration::from_secs(10),
            cache_capacity: 64,
        }
    }
}

/// Why a caller was not let in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no Authorization header: a bearer token is required")]
    MissingToken,
    #[error("the Authorization header is not `Bearer <token>`")]
    MalformedHeader,
    #[error("the API server did not authenticate the token: {apiserver_says}")]
    NotAuthenticated { apiserver_says: String },
    #[error("the token is not issued for audience {expected:?}")]
    WrongAudience { expected: String },
    #[error("caller {username:?} is not the controller ({expected})")]
    NotTheController { username: String, expected: String },
    /// The agent could not ask the API server; it fails closed.
    #[error("the TokenReview could not be made")]
    Review(#[source] kube::Error),
    #[error("the TokenReview came back without a status")]
    ReviewWithoutStatus,
}

impl AuthError {
    /// A bounded label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken => "MissingToken",
            Self::MalformedHeader => "MalformedHeader",
            Self::NotAuthenticated { .. } => "NotAuthenticated",
            Self::WrongAudience { .. } => "WrongAudience",
            Self::NotTheController { .. } => "NotTheController",
            Self::Review(_) | Self::ReviewWithoutStatus => "ReviewFailed",
        }
    }
}

/// Checks callers with TokenReviews made through the agent's own client.
pub struct Authenticator {
    client: kube::Client,
    config: AuthConfig,
    expected_username: String,
    cache: Mutex<ReviewCache>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(client: kube::Client, config: AuthConfig) -> Self {
        let cache = ReviewCache::new(config.cache_capacity, config.cache_ttl);
        Self {
            expected_username: config.controller.username(),
            client,
            config,
            cache: Mutex::new(cache),
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Lets the caller in only if its `Authorization` header holds a token the API server
    /// authenticates, for this agent's audience, of the controller's ServiceAccount.
    pub async fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
        now: Timestamp,
    ) -> Result<(), AuthError> {
        let token = bearer_token(authorization.ok_or(AuthError::MissingToken)?)?;
        if self.lock_cache().is_fresh(token, now) {
            return Ok(());
        }
        self.review(token).await?;
        self.lock_cache().remember(token, token_expiry(token), now);
        Ok(())
    }

    async fn review(&self, token: &str) -> Result<(), AuthError> {
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.config.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let status = reviews
            .create(&PostParams::default(), &request)
            .await
            .map_err(AuthError::Review)?
            .status
            .ok_or(AuthError::ReviewWithoutStatus)?;
        if status.authenticated != Some(true) {
            return Err(AuthError::NotAuthenticated {
                apiserver_says: status.error.unwrap_or_default(),
            });
        }
        // The API server only authenticates a token for the audiences asked about, but say
        // so explicitly: an authenticator that ignores audiences answers with none.
        if !status
            .audiences
            .is_some_and(|a| a.contains(&self.config.audience))
        {
            return Err(AuthError::WrongAudience {
                expected: self.config.audience.clone(),
            });
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        if username != self.expected_username {
            return Err(AuthError::NotTheController {
                username,
                expected: self.expected_username.clone(),
            });
        }
        Ok(())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, ReviewCache> {
        // The cache holds no invariant a panic elsewhere could break halfway.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The token of `Bearer <token>` (RFC 6750: the scheme is case-insensitive, the token a
/// `b64token`).
fn bearer_token(header: &HeaderValue) -> Result<&str, AuthError> {
    let text = header.to_str().map_err(|_| AuthError::MalformedHeader)?;
    let (scheme, token) = text.split_once(' ').ok_or(AuthError::MalformedHeader)?;
    let token = token.trim_start_matches(' ');
    let b64token = |c: char| c.is_ascii_alphanumeric() || "-._~+/".contains(c);
    let body = token.trim_end_matches('=');
    if !scheme.eq_ignore_ascii_case("bearer")
        || body.is_empty()
        || token.len() > MAX_TOKEN_LEN
        || !body.chars().all(b64token)
    {
        return Err(AuthError::MalformedHeader);
    }
    Ok(token)
}

/// The `exp` claim of a JWT, read without checking the signature: it only bounds how long
/// a review the API server already accepted is reused. `None` when it cannot be read, and
/// then the cache's time-to-live alone applies.
fn token_expiry(token: &str) -> Option<Timestamp> {
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: i64,
    }
    let payload = token.split('.').nth(1)?;
    let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    Timestamp::from_second(claims.exp).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap_or_else(|e| panic!("{s:?} is a header value: {e}"))
    }

    #[test]
    fn reads_a_bearer_token() {
        assert_eq!(
            bearer_token(&header("Bearer abc.def-_")).ok(),
            Some("abc.def-_")
        );
        assert_eq!(bearer_token(&header("bearer a+/b==")).ok(), Some("a+/b=="));
        assert_eq!(bearer_token(&header("BEARER  x")).ok(), Some("x"));
    }

    #[test]
    fn refuses_what_is_not_a_bearer_token() {
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearer ==",
            "Basic dXNlcjpwYXNz",
            "Bearerabc",
            "Bearer a b",
            "Bearer a,b",
            "Bearer a=b",
            "Token abc",
        ] {
            assert!(
                matches!(bearer_token(&header(bad)), Err(AuthError::MalformedHeader)),
                "{bad:?}"
            );
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert!(bearer_token(&header(&long)).is_err());
        let not_text = HeaderValue::from_bytes(b"Bearer \xff").unwrap_or_else(|e| panic!("{e}"));
        assert!(bearer_token(&not_text).is_err());
    }

    #[test]
    fn reads_the_expiry_of_a_jwt() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"aud":["x"],"exp":1800000000}"#);
        let token = format!("e30.{payload}.c2ln");
        assert_eq!(
            token_expiry(&token),
            Timestamp::from_second(1_800_000_000).ok()
        );
        assert_eq!(token_expiry("opaque"), None);
        assert_eq!(token_expiry("a.!!!.c"), None);
        let no_exp = format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(b"{}"));
        assert_eq!(token_expiry(&no_exp), None);
    }

    #[test]
    fn the_controller_username_is_the_service_account_form() {
        let sa = ServiceAccountRef {
            namespace: "tidepool-system".into(),
            name: "tidepool-controller".into(),
        };
        assert_eq!(
            sa.username(),
            "system:serviceaccount:tidepool-system:tidepool-controller"
        );
    }
}
