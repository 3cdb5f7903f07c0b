//! The CustomResourceDefinitions, as written to `crds/` by `tidepool crdgen`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{DatasetGrant, ReplicationPolicy, SnapshotSchedule, ZfsNode};

/// Every CRD with the file name it is kept under in `crds/`.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("snapshotschedules.yaml", SnapshotSchedule::crd()),
        ("replicationpolicies.yaml", ReplicationPolicy::crd()),
        ("zfsnodes.yaml", ZfsNode::crd()),
        ("datasetgrants.yaml", DatasetGrant::crd()),
    ]
}
