#![allow(clippy::unwrap_used)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use tidepool_api::DatasetGrantSpec;

use super::*;

/// [`permitted`] for taking snapshots (what a schedule needs).
fn may_snapshot(
    grants: &[DatasetGrant],
    namespace: &str,
    namespace_labels: &Labels,
    node: &str,
    node_labels: &Labels,
    dataset: &DatasetName,
) -> bool {
    permitted(
        grants,
        namespace,
        namespace_labels,
        node,
        node_labels,
        dataset,
        Access::Snapshot,
    )
}

fn grant(namespaces: &[&str], roots: &[&str], nodes: &[&str], access: Vec<Access>) -> DatasetGrant {
    DatasetGrant::new(
        "g",
        DatasetGrantSpec {
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            namespace_selector: None,
            datasets: roots.iter().map(|r| r.parse().unwrap()).collect(),
            node_names: nodes.iter().map(|s| s.to_string()).collect(),
            node_selector: None,
            access,
        },
    )
}

fn ds(s: &str) -> DatasetName {
    s.parse().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_grant_covers_its_namespace_roots_nodes_and_access() {
    let g = [grant(
        &["apps"],
        &["tank/apps"],
        &["n1"],
        vec![Access::Snapshot],
    )];
    let none = Labels::new();
    assert!(may_snapshot(
        &g,
        "apps",
        &none,
        "n1",
        &none,
        &ds("tank/apps/db")
    ));
    assert!(may_snapshot(
        &g,
        "apps",
        &none,
        "n1",
        &none,
        &ds("tank/apps")
    ));
    assert!(!may_snapshot(
        &g,
        "other",
        &none,
        "n1",
        &none,
        &ds("tank/apps/db")
    ));
    assert!(!may_snapshot(
        &g,
        "apps",
        &none,
        "n2",
        &none,
        &ds("tank/apps/db")
    ));
    // Whole components: tank/appsx is not below tank/apps.
    assert!(!may_snapshot(
        &g,
        "apps",
        &none,
        "n1",
        &none,
        &ds("tank/appsx")
    ));
    assert!(!may_snapshot(&g, "apps", &none, "n1", &none, &ds("tank")));
    let send_only = [grant(&["apps"], &["tank/apps"], &[], vec![Access::Send])];
    assert!(!may_snapshot(
        &send_only,
        "apps",
        &none,
        "n1",
        &none,
        &ds("tank/apps/db")
    ));
}

#[test]
fn no_grant_means_no_permission() {
    let none = Labels::new();
    assert!(!may_snapshot(
        &[],
        "apps",
        &none,
        "n1",
        &none,
        &ds("tank/apps")
    ));
}

#[test]
fn selectors_match_labels() {
    let mut g = grant(&[], &["tank"], &[], vec![Access::Snapshot]);
    g.spec.namespace_selector = Some(LabelSelector {
        match_labels: Some([("team".to_owned(), "a".to_owned())].into()),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "tier".into(),
            operator: "NotIn".into(),
            values: Some(vec!["prod".into()]),
        }]),
    });
    g.spec.node_selector = Some(NodeSelector([("zfs".to_owned(), "yes".to_owned())].into()));
    let g = [g];
    let ns_a = labels(&[("team", "a")]);
    let ns_prod = labels(&[("team", "a"), ("tier", "prod")]);
    let node_zfs = labels(&[("zfs", "yes")]);
    assert!(may_snapshot(&g, "x", &ns_a, "n", &node_zfs, &ds("tank/x")));
    assert!(!may_snapshot(
        &g,
        "x",
        &ns_prod,
        "n",
        &node_zfs,
        &ds("tank/x")
    ));
    assert!(!may_snapshot(
        &g,
        "x",
        &ns_a,
        "n",
        &Labels::new(),
        &ds("tank/x")
    ));
}

#[test]
fn an_unknown_operator_selects_nothing() {
    let sel = LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "a".into(),
            operator: "Gt".into(),
            values: None,
        }]),
    };
    assert!(!label_selector_matches(&sel, &labels(&[("a", "1")])));
    assert!(label_selector_matches(
        &LabelSelector::default(),
        &Labels::new()
    ));
}
