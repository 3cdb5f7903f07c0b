//! Who may ask `explain` about an object: whoever the API server says may `get` it. The
//! caller's bearer token is checked with a TokenReview (the API server's own audiences) and
//! the identity it names with a SubjectAccessReview, as kube-rbac-proxy does, so the route
//! shows nobody more than `kubectl get` would.

use http::HeaderValue;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

/// Longer than any token the API server issues; refused before it costs a review.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a caller was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("no bearer token: send `Authorization: Bearer <token>`")]
    MissingToken,
    #[error("the Authorization header is not `Bearer <token>`")]
    MalformedHeader,
    #[error("the API server did not authenticate the token{0}")]
    NotAuthenticated(String),
    #[error("{user} may not get {resource} {namespace}/{name}{why}")]
    Forbidden {
        user: String,
        resource: String,
        namespace: String,
        name: String,
        why: String,
    },
    /// The reviews could not be made: fail closed.
    #[error("the token could not be checked: {0}")]
    Review(#[source] kube::Error),
}

impl Refusal {
    /// A CamelCase reason for the answer's body.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken | Self::MalformedHeader | Self::NotAuthenticated(_) => {
                "Unauthorized"
            }
            Self::Forbidden { .. } => "Forbidden",
            Self::Review(_) => "ReviewFailed",
        }
    }

    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::MissingToken | Self::MalformedHeader | Self::NotAuthenticated(_) => {
                http::StatusCode::UNAUTHORIZED
            }
            Self::Forbidden { .. } => http::StatusCode::FORBIDDEN,
            Self::Review(_) => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The object the caller wants explained.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub resource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// Lets the caller in only if its token is authenticated and may `get` the target.
/// Returns the caller's username.
pub async fn authorize(
    client: &kube::Client,
    authorization: Option<&HeaderValue>,
    target: &Target<'_>,
) -> Result<String, Refusal> {
    let token = bearer_token(authorization.ok_or(Refusal::MissingToken)?)?;
    let review = Api::<TokenReview>::all(client.clone())
        .create(
            &PostParams::default(),
            &TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_owned()),
                    audiences: None,
                },
                ..TokenReview::default()
            },
        )
        .await
        .map_err(Refusal::Review)?
        .status
        .unwrap_or_default();
    if review.authenticated != Some(true) {
        let why = review.error.map(|e| format!(": {e}")).unwrap_or_default();
        return Err(Refusal::NotAuthenticated(why));
    }
    let user = review.user.unwrap_or_default();
    let username = user.username.clone().unwrap_or_default();
    let access = Api::<SubjectAccessReview>::all(client.clone())
        .create(
            &PostParams::default(),
            &SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: user.username,
                    groups: user.groups,
                    uid: user.uid,
                    extra: user.extra,
                    resource_attributes: Some(ResourceAttributes {
                        group: Some(tidepool_api::GROUP.to_owned()),
                        resource: Some(target.resource.to_owned()),
                        namespace: Some(target.namespace.to_owned()),
                        name: Some(target.name.to_owned()),
                        verb: Some("get".to_owned()),
                        ..ResourceAttributes::default()
                    }),
                    ..SubjectAccessReviewSpec::default()
                },
                ..SubjectAccessReview::default()
            },
        )
        .await
        .map_err(Refusal::Review)?
        .status
        .unwrap_or_default();
    if !access.allowed || access.denied == Some(true) {
        let why = access
            .reason
            .filter(|r| !r.is_empty())
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        return Err(Refusal::Forbidden {
            user: username,
            resource: target.resource.to_owned(),
            namespace: target.namespace.to_owned(),
            name: target.name.to_owned(),
            why,
        });
    }
    Ok(username)
}

/// The token of `Bearer <token>` (RFC 6750: the scheme is case-insensitive).
fn bearer_token(header: &HeaderValue) -> Result<&str, Refusal> {
    let text = header.to_str().map_err(|_| Refusal::MalformedHeader)?;
    let (scheme, token) = text.split_once(' ').ok_or(Refusal::MalformedHeader)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.len() > MAX_TOKEN_LEN
        || token.contains(char::is_whitespace)
    {
        return Err(Refusal::MalformedHeader);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_a_bearer_token_is_taken() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(bearer_token(&h("Bearer abc.def")).unwrap(), "abc.def");
        assert_eq!(bearer_token(&h("bearer abc")).unwrap(), "abc");
        for bad in ["Basic abc", "Bearer", "Bearer ", "Bearer a b", "abc"] {
            assert!(
                matches!(bearer_token(&h(bad)), Err(Refusal::MalformedHeader)),
                "{bad}"
            );
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert!(bearer_token(&h(&long)).is_err());
    }
}
