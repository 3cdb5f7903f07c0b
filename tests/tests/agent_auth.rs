//! The agent's transport against the real kube-apiserver: who may command an agent
//! (TokenReview of the controller's projected token), over TLS pinned to the agent's
//! fingerprint, from the current leader only.
//!
//! Each test starts its own agent in-process on 127.0.0.1:0, with a client for a
//! ServiceAccount bound to a minimal ClusterRole that can create TokenReviews (the chart's
//! RBAC replaces it once it exists).
//!
//! "Nothing ran" is proven through the fence: every refused command carries a high epoch;
//! had it reached an operation, the agent would afterwards refuse a lower epoch, and it
//! does not.

use std::{error::Error as StdError, time::Duration};

use http::{HeaderValue, StatusCode};
use k8s_openapi::api::{
    authentication::v1::{
        BoundObjectReference, TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
    },
    core::v1::{Container, Pod, PodSpec, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, PostParams},
};
use tidepool_agent::{
    AgentClient, AgentConfig, AuthConfig, CallError, Command, DEFAULT_AUDIENCE, DatasetRoots,
    LeaderEpoch, Ping, Pong, RefusalReason, RunningAgent, ServiceAccountRef, ServingIdentity,
};
use tidepool_tests::control_plane::ControlPlane;

const NODE: &str = "node-a";
const CONTROLLER_SA: &str = "controller";
const AGENT_SA: &str = "agent";
/// Well above every epoch the accepted calls of a test use.
const REFUSED_EPOCH: LeaderEpoch = LeaderEpoch(1_000);

fn fail(e: impl std::fmt::Display) -> ! {
    panic!("{e}")
}

/// One test's world: a namespace, an agent with TokenReview rights, and a client pinned to
/// that agent.
struct Setup {
    cp: &'static ControlPlane,
    ns: String,
    agent: RunningAgent,
    client: AgentClient,
}

impl Setup {
    async fn new(prefix: &str, cache_ttl: jiff::SignedDuration) -> Self {
        let cp = ControlPlane::shared().await;
        let ns = cp
            .create_namespace(prefix)
            .await
            .unwrap_or_else(|e| fail(format!("{e:#}")));
        let agent_kube = agent_kube_client(cp, &ns).await;
        ensure_service_account(cp, &ns, CONTROLLER_SA).await;
        let mut auth = AuthConfig::for_controller(ServiceAccountRef {
            namespace: ns.clone(),
            name: CONTROLLER_SA.to_owned(),
        });
        auth.cache_ttl = cache_ttl;
        let config = AgentConfig {
            node_name: NODE.to_owned(),
            listen: "127.0.0.1:0".parse().unwrap_or_else(|e| fail(e)),
            dataset_roots: DatasetRoots::new(["tank/app".parse().unwrap_or_else(|e| fail(e))]),
            auth,
        };
        let agent = RunningAgent::start(config, agent_kube)
            .await
            .unwrap_or_else(|e| fail(format!("starting the agent: {e}")));
        let client = AgentClient::new(&agent.local_addr().to_string(), agent.fingerprint())
            .unwrap_or_else(|e| fail(e))
            .with_timeout(Duration::from_secs(20));
        Self {
            cp,
            ns,
            agent,
            client,
        }
    }

    /// A token of ServiceAccount `sa` in this namespace for `audience`, optionally bound to
    /// a Pod.
    async fn token(&self, sa: &str, audience: &str, pod: Option<&Pod>) -> String {
        ensure_service_account(self.cp, &self.ns, sa).await;
        let accounts: Api<ServiceAccount> = Api::namespaced(self.cp.admin_client(), &self.ns);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![audience.to_owned()],
                // The API server's minimum.
                expiration_seconds: Some(600),
                bound_object_ref: pod.map(|pod| BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..TokenRequest::default()
        };
        accounts
            .create_token_request(sa, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| fail(format!("TokenRequest for {sa}: {e}")))
            .status
            .unwrap_or_else(|| fail("TokenRequest returned no status"))
            .token
    }

    async fn controller_token(&self) -> String {
        self.token(CONTROLLER_SA, DEFAULT_AUDIENCE, None).await
    }

    async fn ping(
        &self,
        authorization: Option<HeaderValue>,
        epoch: LeaderEpoch,
    ) -> Result<Pong, CallError> {
        self.client
            .send(
                authorization,
                &Command {
                    epoch,
                    operation: Ping {},
                },
            )
            .await
    }

    /// Proves that no refused command passed the fence: the controller's epoch 1 is still
    /// accepted after commands of epoch [`REFUSED_EPOCH`] were refused.
    async fn assert_nothing_ran(&self) {
        let token = self.controller_token().await;
        match self.client.call(&token, LeaderEpoch(1), Ping {}).await {
            Ok(pong) => assert_eq!(pong.node_name, NODE),
            Err(e) => {
                panic!("a refused command moved the fence (or the controller is refused): {e:?}")
            }
        }
    }
}

fn bearer(token: &str) -> Option<HeaderValue> {
    Some(HeaderValue::from_str(&format!("Bearer {token}")).unwrap_or_else(|e| fail(e)))
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, CallError>,
    status: StatusCode,
    reason: RefusalReason,
    what: &str,
) {
    match result {
        Err(CallError::Refused { status: s, refusal }) => {
            assert_eq!(
                (s, refusal.reason),
                (status, reason),
                "{what}: {}",
                refusal.message
            );
        }
        other => panic!("{what}: expected {status} {reason:?}, got {other:?}"),
    }
}

async fn ensure_service_account(cp: &ControlPlane, ns: &str, name: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(cp.admin_client(), ns);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating ServiceAccount {ns}/{name}: {e}"),
    }
}

/// The agent's own client: ServiceAccount `agent`, allowed exactly to create TokenReviews,
/// returned once RBAC lets it do so.
async fn agent_kube_client(cp: &ControlPlane, ns: &str) -> Client {
    let admin = cp.admin_client();
    let role_name = format!("tidepool-test-tokenreview-{ns}");
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(role_name.clone()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["authentication.k8s.io".into()]),
            resources: Some(vec!["tokenreviews".into()]),
            verbs: vec!["create".into()],
            ..PolicyRule::default()
        }]),
        ..ClusterRole::default()
    };
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap_or_else(|e| fail(format!("creating ClusterRole {role_name}: {e}")));
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(role_name.clone()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role_name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: AGENT_SA.into(),
            namespace: Some(ns.to_owned()),
            ..Subject::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(admin)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|e| fail(format!("creating ClusterRoleBinding {role_name}: {e}")));
    let client = cp
        .client_for_service_account(ns, AGENT_SA)
        .await
        .unwrap_or_else(|e| fail(format!("{e:#}")));
    // RBAC reaches the authorizer through an informer: wait until the binding is seen.
    let reviews: Api<TokenReview> = Api::all(client.clone());
    let probe = TokenReview {
        spec: TokenReviewSpec {
            token: Some("not-a-token".into()),
            audiences: None,
        },
        ..TokenReview::default()
    };
    for _ in 0..100 {
        match reviews.create(&PostParams::default(), &probe).await {
            Ok(_) => return client,
            Err(kube::Error::Api(s)) if s.code == 403 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("probing TokenReview rights: {e}"),
        }
    }
    panic!("ServiceAccount {ns}/{AGENT_SA} could not create TokenReviews after 10 s");
}

#[tokio::test]
async fn the_controllers_token_is_accepted_over_tls_pinned_to_the_agents_fingerprint() {
    let setup = Setup::new("agent-ok", jiff::SignedDuration::from_secs(10)).await;
    let token = setup.controller_token().await;
    // The second call is answered from the review cache; both must succeed.
    for _ in 0..2 {
        let pong = setup
            .client
            .call(&token, LeaderEpoch(1), Ping {})
            .await
            .unwrap_or_else(|e| fail(format!("{e:?}")));
        assert_eq!(pong.node_name, NODE);
    }
    // The fingerprint is in the form the ZfsNode schema admits.
    let published = setup.agent.fingerprint().to_string();
    assert!(
        published.len() == 64
            && published
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{published}"
    );
}

#[tokio::test]
async fn callers_without_the_controllers_token_for_the_agents_audience_are_refused() {
    let setup = Setup::new("agent-refused", jiff::SignedDuration::from_secs(10)).await;
    let unauthorized = (StatusCode::UNAUTHORIZED, RefusalReason::Unauthenticated);

    let result = setup.ping(None, REFUSED_EPOCH).await;
    assert_refused(result, unauthorized.0, unauthorized.1, "no token");

    let basic = HeaderValue::from_static("Basic Y29udHJvbGxlcjpzZWNyZXQ=");
    let result = setup.ping(Some(basic), REFUSED_EPOCH).await;
    assert_refused(result, unauthorized.0, unauthorized.1, "not a bearer token");

    let result = setup.ping(bearer("not.a.token"), REFUSED_EPOCH).await;
    assert_refused(result, unauthorized.0, unauthorized.1, "a made-up token");

    let other_sa = setup.token("someone-else", DEFAULT_AUDIENCE, None).await;
    let result = setup.ping(bearer(&other_sa), REFUSED_EPOCH).await;
    assert_refused(
        result,
        StatusCode::FORBIDDEN,
        RefusalReason::Forbidden,
        "another ServiceAccount",
    );

    let other_audience = setup.token(CONTROLLER_SA, "some-other-service", None).await;
    let result = setup.ping(bearer(&other_audience), REFUSED_EPOCH).await;
    assert_refused(
        result,
        unauthorized.0,
        unauthorized.1,
        "the controller's token for another audience",
    );

    // A token in the API server's own audience (what a Pod's default token carries).
    let apiserver_audience = setup
        .token(
            CONTROLLER_SA,
            "https://kubernetes.default.svc.cluster.local",
            None,
        )
        .await;
    let result = setup.ping(bearer(&apiserver_audience), REFUSED_EPOCH).await;
    assert_refused(
        result,
        unauthorized.0,
        unauthorized.1,
        "the controller's token for the API server",
    );

    setup.assert_nothing_ran().await;
}

#[tokio::test]
async fn a_token_whose_pod_was_deleted_is_refused_once_its_cached_review_expires() {
    // A short cache so the test does not wait long for the revocation to show.
    let cache_ttl = jiff::SignedDuration::from_secs(1);
    let setup = Setup::new("agent-revoked", cache_ttl).await;
    let pods: Api<Pod> = Api::namespaced(setup.cp.admin_client(), &setup.ns);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("controller-0".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some(CONTROLLER_SA.into()),
            containers: vec![Container {
                name: "controller".into(),
                image: Some("tidepool:test".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    let pod = pods
        .create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| fail(format!("creating the controller's Pod: {e}")));
    let token = setup
        .token(CONTROLLER_SA, DEFAULT_AUDIENCE, Some(&pod))
        .await;
    let pong = setup
        .client
        .call(&token, LeaderEpoch(1), Ping {})
        .await
        .unwrap_or_else(|e| fail(format!("the Pod-bound token while its Pod exists: {e:?}")));
    assert_eq!(pong.node_name, NODE);

    // No kubelet runs here: a Pod on no node goes at once.
    pods.delete("controller-0", &DeleteParams::default().grace_period(0))
        .await
        .unwrap_or_else(|e| fail(format!("deleting the Pod: {e}")));
    // The API server reuses its own successful authentications for 10 s and sees the
    // deletion through an informer, so allow it some time beyond the agent's cache.
    let deleted_at = std::time::Instant::now();
    let mut last = None;
    for _ in 0..60 {
        match setup.client.call(&token, REFUSED_EPOCH, Ping {}).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            Err(e) => {
                eprintln!(
                    "refused {:.1?} after the Pod's deletion",
                    deleted_at.elapsed()
                );
                last = Some(e);
                break;
            }
        }
    }
    let result: Result<Pong, _> = last.map_or(
        Ok(Pong {
            node_name: "still accepted after 30 s".into(),
        }),
        Err,
    );
    assert_refused(
        result,
        StatusCode::UNAUTHORIZED,
        RefusalReason::Unauthenticated,
        "a token of a deleted Pod",
    );
}

#[tokio::test]
async fn a_client_pinned_to_another_fingerprint_fails_the_tls_handshake() {
    let setup = Setup::new("agent-pin", jiff::SignedDuration::from_secs(10)).await;
    let impostor_pin = ServingIdentity::generate(vec![NODE.into()])
        .unwrap_or_else(|e| fail(e))
        .fingerprint();
    assert_ne!(impostor_pin, setup.agent.fingerprint());
    let wrongly_pinned = AgentClient::new(&setup.agent.local_addr().to_string(), impostor_pin)
        .unwrap_or_else(|e| fail(e))
        .with_timeout(Duration::from_secs(20));
    let token = setup.controller_token().await;
    match wrongly_pinned.call(&token, REFUSED_EPOCH, Ping {}).await {
        Err(CallError::Transport(e)) => assert!(
            is_certificate_refusal(&e),
            "the call failed, but not on the certificate: {e:?}"
        ),
        other => panic!("expected the handshake to fail on the certificate, got {other:?}"),
    }
    setup.assert_nothing_ran().await;
}

/// Whether a rustls certificate error is somewhere in `error`'s chain (hyper-rustls wraps
/// it in an `io::Error`).
fn is_certificate_refusal(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(rustls::Error::InvalidCertificate(_)) = e.downcast_ref::<rustls::Error>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && is_certificate_refusal(inner)
        {
            return true;
        }
        next = e.source();
    }
    false
}

#[tokio::test]
async fn a_command_from_an_older_leader_epoch_is_refused() {
    let setup = Setup::new("agent-epoch", jiff::SignedDuration::from_secs(10)).await;
    let token = setup.controller_token().await;
    let call = |epoch| setup.client.call(&token, LeaderEpoch(epoch), Ping {});
    call(5)
        .await
        .unwrap_or_else(|e| fail(format!("epoch 5: {e:?}")));
    assert_refused(
        call(4).await,
        StatusCode::CONFLICT,
        RefusalReason::StaleEpoch,
        "epoch 4 after 5",
    );
    call(5)
        .await
        .unwrap_or_else(|e| fail(format!("epoch 5 again: {e:?}")));
    call(6)
        .await
        .unwrap_or_else(|e| fail(format!("epoch 6: {e:?}")));
    assert_refused(
        call(5).await,
        StatusCode::CONFLICT,
        RefusalReason::StaleEpoch,
        "epoch 5 after 6",
    );
    assert_refused(
        call(0).await,
        StatusCode::CONFLICT,
        RefusalReason::StaleEpoch,
        "epoch 0 after 6",
    );
}

#[tokio::test]
async fn an_agent_that_cannot_make_token_reviews_refuses_everyone() {
    // Fail closed: without the right to ask the API server, even the controller is refused.
    let cp = ControlPlane::shared().await;
    let ns = cp
        .create_namespace("agent-norights")
        .await
        .unwrap_or_else(|e| fail(format!("{e:#}")));
    let powerless = cp
        .client_for_service_account(&ns, "agent-without-rbac")
        .await
        .unwrap_or_else(|e| fail(format!("{e:#}")));
    ensure_service_account(cp, &ns, CONTROLLER_SA).await;
    let config = AgentConfig {
        node_name: NODE.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap_or_else(|e| fail(e)),
        dataset_roots: DatasetRoots::new([]),
        auth: AuthConfig::for_controller(ServiceAccountRef {
            namespace: ns.clone(),
            name: CONTROLLER_SA.to_owned(),
        }),
    };
    let agent = RunningAgent::start(config, powerless)
        .await
        .unwrap_or_else(|e| fail(format!("starting the agent: {e}")));
    let client = AgentClient::new(&agent.local_addr().to_string(), agent.fingerprint())
        .unwrap_or_else(|e| fail(e));
    let token = cp
        .service_account_token(&ns, CONTROLLER_SA, DEFAULT_AUDIENCE, 600)
        .await
        .unwrap_or_else(|e| fail(format!("{e:#}")));
    let result = client.call(&token, LeaderEpoch(1), Ping {}).await;
    assert_refused(
        result,
        StatusCode::SERVICE_UNAVAILABLE,
        RefusalReason::AuthUnavailable,
        "the controller, to an agent that cannot check its token",
    );
}
