//! The committed `crds/*.yaml` must be exactly what `tidepool crdgen` writes now.

use std::path::Path;

#[test]
fn committed_crds_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    let stale = tidepool::crdgen::stale_files(&dir).expect("render CRDs");
    assert!(
        stale.is_empty(),
        "crds/ is stale ({}): run `cargo run -p tidepool -- crdgen` and commit the result",
        stale.join(", ")
    );
}

#[test]
fn crds_parse_back_as_yaml() {
    for (file, yaml) in tidepool::crdgen::render().expect("render CRDs") {
        let value: serde_json::Value =
            serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(value["kind"], "CustomResourceDefinition", "{file}");
        assert_eq!(value["spec"]["group"], "tidepool.dev", "{file}");
    }
}
