//! The transfer transport alone, on the host: two in-process agents whose zfs is an
//! in-memory stand-in (`StreamExecutor`), real TokenReview against the real API server,
//! real pinned TLS. What the VM test cannot provoke cheaply: a send that stops producing
//! (both ends abort within the stall timeout, and nothing stays in flight), and a stream
//! big enough to count bytes exactly across chunk and frame boundaries.

use std::time::{Duration, Instant};

use tidepool_tests::control_plane::ControlPlane;
use tidepool_tests::host_agents::{HostPair, TransferOptions};
use tidepool_tests::stream_exec::SendShape;
use tidepool_wire::transfer::{
    ListTransfers, SendToPeerAnswer, TransferError, TransferSide, WireCompression,
};

const EPOCH: tidepool_agent::LeaderEpoch = tidepool_agent::LeaderEpoch(1);

fn ok<T>(result: anyhow::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_arrive_exactly_with_and_without_zstd() {
    let cp = ControlPlane::shared().await;
    let size = (48 << 20) + 12_345;
    let pair = ok(HostPair::start(
        cp,
        SendShape {
            bytes: size,
            stall_after: None,
        },
    )
    .await);
    let mut expected = 0;
    for (step, compression) in [
        ("plain", WireCompression::None),
        ("zstd", WireCompression::Zstd),
    ] {
        let options = TransferOptions {
            compression,
            ..TransferOptions::default()
        };
        let report = match ok(pair.replicate(step, options).await) {
            SendToPeerAnswer::Sent(r) => r,
            other => panic!("{step}: {other:?}"),
        };
        expected += size;
        assert_eq!(report.bytes_sent, size, "{step}: {report:?}");
        assert_eq!(report.bytes_received, size, "{step}: {report:?}");
        assert_eq!(report.estimated_bytes, Some(size), "{step}: {report:?}");
        assert_eq!(pair.target_exec.received(), expected, "{step}");
        eprintln!("{step}: {report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_stops_producing_is_aborted_on_both_ends() {
    let cp = ControlPlane::shared().await;
    let pair = ok(HostPair::start(
        cp,
        SendShape {
            bytes: 64 << 20,
            stall_after: Some(3 << 20),
        },
    )
    .await);
    let started = Instant::now();
    let options = TransferOptions {
        stall_timeout_seconds: Some(2),
        ..TransferOptions::default()
    };
    match ok(pair.replicate("stalls", options).await) {
        SendToPeerAnswer::Failed(TransferError::Stalled { side, idle_seconds }) => {
            assert_eq!((side, idle_seconds), (TransferSide::Source, 2));
        }
        other => panic!("expected a stall, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert_eq!(pair.target_exec.received(), 3 << 20);
    // The target's receive ended too: nothing is in flight on either end.
    let mut in_flight = usize::MAX;
    for _ in 0..50 {
        let listed = pair
            .target_client
            .call(&pair.token, EPOCH, ListTransfers {})
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        in_flight = listed.transfers.len();
        if in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(in_flight, 0, "the target still receives");
    let listed = pair
        .source_client
        .call(&pair.token, EPOCH, ListTransfers {})
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(listed.transfers.is_empty(), "{listed:?}");
}
