//! The router's one exception: the stream route answers without a token (its credential is
//! the ticket), and every other route still refuses a caller without one.

use std::sync::Arc;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use super::*;
use crate::auth::ServiceAccountRef;
use crate::metrics::AgentMetrics;

fn state() -> Arc<AgentState> {
    // Nothing listens there: any review attempt would fail closed (503), never let in.
    let config = kube::Config::new("https://127.0.0.1:9".parse().expect("uri"));
    let client = kube::Client::try_from(config).expect("client");
    let metrics = AgentMetrics::new().expect("metrics");
    let exec: Arc<dyn tidepool_zfs::Executor> =
        Arc::new(tidepool_zfs::LocalExecutor::with_bin_dir("/nonexistent"));
    let zfs = NodeZfs::new(
        exec,
        metrics,
        vec!["back".parse().expect("pool")],
        false,
        std::time::Duration::from_secs(600),
    );
    Arc::new(AgentState {
        node_name: "node-b".to_owned(),
        roots: DatasetRoots::new(["back/replicas".parse().expect("root")]),
        fence: EpochFence::new(),
        authenticator: Authenticator::new(
            client,
            AuthConfig::for_controller(ServiceAccountRef {
                namespace: "tp".to_owned(),
                name: "controller".to_owned(),
            }),
        ),
        zfs: Some(Arc::new(zfs)),
        transfers: Transfers::default(),
    })
}

async fn post(router: &Router, path: &str, headers: &[(&str, String)]) -> (StatusCode, Refusal) {
    let mut request = Request::builder().method(Method::POST).uri(path);
    for (k, v) in headers {
        request = request.header(*k, v.as_str());
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from("{}")).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let refusal = serde_json::from_slice(&body).unwrap_or(Refusal {
        reason: RefusalReason::Other,
        message: String::from_utf8_lossy(&body).into_owned(),
    });
    (status, refusal)
}

#[tokio::test]
async fn without_a_token_only_the_stream_route_answers_and_it_wants_a_ticket() {
    let router = router(state());
    for path in [
        Ping::PATH,
        TakeSnapshots::PATH,
        DestroySnapshots::PATH,
        InventoryRequest::PATH,
        PrepareReceive::PATH,
        SendToPeer::PATH,
        ListTransfers::PATH,
    ] {
        let (status, refusal) = post(&router, path, &[]).await;
        assert_eq!(
            (status, refusal.reason),
            (StatusCode::UNAUTHORIZED, RefusalReason::Unauthenticated),
            "{path}"
        );
        // A ticket is no token: it opens the stream route and nothing else.
        let ticket = "ab".repeat(32);
        let (status, refusal) = post(&router, path, &[("tidepool-ticket", ticket)]).await;
        assert_eq!(
            (status, refusal.reason),
            (StatusCode::UNAUTHORIZED, RefusalReason::Unauthenticated),
            "{path}"
        );
        assert!(
            refusal.message.contains("bearer token"),
            "{path}: {}",
            refusal.message
        );
    }
    let (status, refusal) = post(&router, STREAM_PATH, &[]).await;
    assert_eq!(
        (status, refusal.reason),
        (StatusCode::UNAUTHORIZED, RefusalReason::Unauthenticated)
    );
    assert_eq!(refusal.message, "no transfer ticket was presented");
    let forged = "cd".repeat(32);
    let (status, refusal) = post(&router, STREAM_PATH, &[("tidepool-ticket", forged)]).await;
    assert_eq!(
        (status, refusal.reason),
        (StatusCode::UNAUTHORIZED, RefusalReason::Unauthenticated),
        "{}",
        refusal.message
    );
    assert_eq!(
        refusal.message,
        "the transfer ticket is not known to this agent"
    );
    // Unknown paths run nothing.
    for path in ["/", "/v1", "/v1/stream/x", "/v1/transfers", "/metrics"] {
        let (status, _) = post(&router, path, &[]).await;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::UNAUTHORIZED,
            "{path}: {status}"
        );
    }
}

#[tokio::test]
async fn a_ticket_opens_only_its_receive_once_and_a_stale_leader_s_ticket_none() {
    use crate::transfer::ticket::ReceiveGrant;
    use tidepool_wire::ReceiveOptions;
    use tidepool_wire::transfer::TransferBinding;

    let state = state();
    let router = router(state.clone());
    let grant = |target: &str, epoch: u64| ReceiveGrant {
        receive: ReceiveOptions::new(target.parse().expect("dataset")),
        binding: TransferBinding {
            owner: "ReplicationPolicy/ns/db".parse().expect("owner"),
            step: "s1".parse().expect("step"),
            source_node: "node-a".to_owned(),
        },
        epoch: crate::fence::LeaderEpoch(epoch),
        stall: std::time::Duration::from_secs(5),
    };
    let headers = |ticket: &str, step: &'static str| {
        vec![
            ("tidepool-ticket", ticket.to_owned()),
            ("tidepool-owner", "ReplicationPolicy/ns/db".to_owned()),
            ("tidepool-step", step.to_owned()),
            ("tidepool-source-node", "node-a".to_owned()),
        ]
    };
    let now = jiff::Timestamp::now();

    // Bound to another step: 403, and burnt.
    let (t, _) = state
        .transfers()
        .tickets
        .issue(grant("back/replicas/db", 1), now)
        .expect("issued");
    let (status, refusal) = post(&router, STREAM_PATH, &headers(&t.reveal(), "s2")).await;
    assert_eq!(
        (status, refusal.reason),
        (StatusCode::FORBIDDEN, RefusalReason::Forbidden)
    );
    let (status, refusal) = post(&router, STREAM_PATH, &headers(&t.reveal(), "s1")).await;
    assert_eq!(
        (status, refusal.reason),
        (StatusCode::UNAUTHORIZED, RefusalReason::Unauthenticated)
    );

    // Minted under epoch 1, presented after epoch 2 spoke to this agent: refused.
    let (t, _) = state
        .transfers()
        .tickets
        .issue(grant("back/replicas/db", 1), now)
        .expect("issued");
    state
        .fence()
        .admit(crate::fence::LeaderEpoch(2))
        .expect("newer leader");
    let (status, refusal) = post(&router, STREAM_PATH, &headers(&t.reveal(), "s1")).await;
    assert_eq!(
        (status, refusal.reason),
        (StatusCode::CONFLICT, RefusalReason::StaleEpoch)
    );
}
