//! The test control plane itself: it starts from the cached binaries, serves the full API
//! (namespaces, RBAC, TokenRequest/TokenReview), and leaves nothing running.

use std::{
    net::{Ipv4Addr, TcpStream},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    core::v1::{ConfigMap, Namespace},
    rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
};
use kube::{
    Api,
    api::{ListParams, ObjectMeta, PostParams},
};
use tidepool_tests::control_plane::ControlPlane;

fn port_of(server: &str) -> u16 {
    server
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {server}"))
}

fn listening(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[tokio::test]
async fn starts_serves_the_full_api_and_stops_on_drop() {
    let began = Instant::now();
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "control plane ready in {:.2?} (etcd + kube-apiserver; {:.2?} including the build check)",
        cp.started_in(),
        began.elapsed()
    );
    let client = cp.admin_client();

    let version = client
        .apiserver_version()
        .await
        .unwrap_or_else(|e| panic!("GET /version: {e}\n{}", cp.log_tails()));
    assert_eq!(version.major, "1");
    assert_eq!(version.minor, "34");
    assert!(
        version.git_version.starts_with("v1.34."),
        "/version says {}",
        version.git_version
    );

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("listing namespaces: {e}"))
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for expected in ["default", "kube-system", "kube-public"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }

    // The cached kubectl and helm talk to it with the admin kubeconfig.
    let kubectl = cp
        .kubectl()
        .args(["version", "-o", "json"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("running kubectl: {e}"));
    let versions = String::from_utf8_lossy(&kubectl.stdout);
    assert!(
        kubectl.status.success() && versions.matches("\"gitVersion\": \"v1.34.").count() == 2,
        "kubectl version: {versions}{}",
        String::from_utf8_lossy(&kubectl.stderr)
    );
    let helm = cp
        .helm()
        .args(["list", "--all-namespaces"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("running helm: {e}"));
    assert!(
        helm.status.success(),
        "helm list: {}",
        String::from_utf8_lossy(&helm.stderr)
    );

    let port = port_of(cp.server());
    assert!(listening(port));
    drop(cp);
    assert!(!listening(port), "kube-apiserver still listens after drop");
}

#[tokio::test]
async fn service_account_tokens_authenticate_and_rbac_authorizes() {
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let ns = cp
        .create_namespace("rbac")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let admin = cp.admin_client();
    let sa = cp
        .client_for_service_account(&ns, "reader")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));

    // No RoleBinding yet: forbidden, and the error names the ServiceAccount — so the
    // token authenticated and RBAC (not authentication) refused.
    let config_maps: Api<ConfigMap> = Api::namespaced(sa.clone(), &ns);
    match config_maps.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(
                s.message
                    .contains(&format!("system:serviceaccount:{ns}:reader")),
                "{}",
                s.message
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }

    let role = Role {
        metadata: ObjectMeta {
            name: Some("read-config-maps".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["list".into()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap_or_else(|e| panic!("creating the Role: {e}"));
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("reader".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "read-config-maps".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(ns.clone()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|e| panic!("creating the RoleBinding: {e}"));

    // RBAC's authorizer watches bindings: allow a moment for it to see the new one.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match config_maps.list(&ListParams::default()).await {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => panic!("still refused after binding: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    // ...and only what was granted.
    let other: Api<ConfigMap> = Api::namespaced(sa, "default");
    assert!(matches!(
        other.list(&ListParams::default()).await,
        Err(kube::Error::Api(s)) if s.code == 403
    ));

    // TokenReview: the API server validates tokens it issued (what webhooks and
    // kube-rbac-proxy rely on).
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(admin.clone(), &ns);
    let token = accounts
        .create_token_request(
            "reader",
            &PostParams::default(),
            &k8s_openapi::api::authentication::v1::TokenRequest::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("TokenRequest: {e}"))
        .status
        .map(|s| s.token)
        .unwrap_or_default();
    let review = Api::<TokenReview>::all(admin)
        .create(
            &PostParams::default(),
            &TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token),
                    ..TokenReviewSpec::default()
                },
                ..TokenReview::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("TokenReview: {e}"));
    let status = review.status.unwrap_or_default();
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    assert_eq!(
        status.user.and_then(|u| u.username),
        Some(format!("system:serviceaccount:{ns}:reader"))
    );
}

#[test]
fn a_panicking_test_still_stops_its_control_plane() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        runtime.block_on(async move {
            let cp = ControlPlane::start()
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
            let _ = tx.send((port_of(cp.server()), cp.dir().to_path_buf()));
            panic!("a test failing while it owns a control plane");
        });
    })
    .join();
    assert!(outcome.is_err(), "the thread was meant to panic");
    let (port, dir) = rx
        .recv()
        .unwrap_or_else(|e| panic!("the control plane did not start: {e}"));
    assert!(!listening(port), "kube-apiserver outlived the panic");
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

/// Stops a detached `control-plane up` even when the test fails.
struct Down<'a>(&'a std::path::Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_control-plane"))
            .arg("down")
            .env("TIDEPOOL_CONTROL_PLANE_STATE", self.0)
            .output();
    }
}

#[tokio::test]
async fn control_plane_up_detach_serves_the_crds_until_down() {
    let state = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let run = |command: &'static str| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_control-plane"));
        cmd.args(command.split(' '))
            .env("TIDEPOOL_CONTROL_PLANE_STATE", state.path())
            .kill_on_drop(true);
        cmd
    };
    let _down = Down(state.path());
    let up = run("up --detach")
        .output()
        .await
        .unwrap_or_else(|e| panic!("running control-plane up --detach: {e}"));
    let stdout = String::from_utf8_lossy(&up.stdout);
    assert!(
        up.status.success(),
        "control-plane up --detach failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let kubeconfig = stdout
        .lines()
        .find_map(|l| l.strip_prefix("export KUBECONFIG="))
        .unwrap_or_else(|| panic!("no `export KUBECONFIG=` in:\n{stdout}"))
        .to_owned();

    let binaries = tokio::task::spawn_blocking(tidepool_tests::control_plane::Binaries::ensure)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let crds = tokio::process::Command::new(binaries.kubectl())
        .args(["get", "crds", "-o", "name"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running kubectl: {e}"));
    let names = String::from_utf8_lossy(&crds.stdout);
    assert!(
        names.contains("snapshotschedules.tidepool.dev")
            && names.contains("replicationpolicies.tidepool.dev"),
        "CRDs: {names}{}",
        String::from_utf8_lossy(&crds.stderr)
    );

    let status = run("status")
        .output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&status.stdout).starts_with("running (pid "));
    let down = run("down").output().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let status = run("status")
        .output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        String::from_utf8_lossy(&status.stdout).trim(),
        "not running"
    );
    assert!(
        !std::path::Path::new(&kubeconfig).exists(),
        "{kubeconfig} left behind"
    );
}
