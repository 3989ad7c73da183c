//! Concurrent check-and-set writes to one secret: exactly one winner per version, no
//! duplicate or lost versions, one audit entry per attempt and an intact chain afterwards.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use serde_json::json;
use steward_secrets::{MetadataUpdate, WriteRequest};
use steward_store::StoreError;

use crate::harness::{check_both, H};

const WRITERS: usize = 100;

fn runtime() -> tokio::runtime::Runtime {
    // Reads run on the blocking pool and each concurrent PostgreSQL read may open its own
    // connection; cap the pool so 100 racing tasks stay under the server's max_connections.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .unwrap()
}

async fn write_cas(h: &H, value: String, cas: u64) -> Result<u64, steward_secrets::SecretsError> {
    h.engine
        .write_secret(
            &h.root_ctx(),
            "prod",
            "race",
            WriteRequest {
                value: json!(value),
                cas: Some(cas),
                metadata: None,
            },
        )
        .await
        .map(|w| w.version)
}

#[test]
fn concurrent_cas_writes_have_exactly_one_winner_per_version() {
    runtime().block_on(check_both(|h| async move {
        let h = Arc::new(h);
        h.engine
            .update_metadata(
                &h.root_ctx(),
                "prod",
                "race",
                MetadataUpdate {
                    max_versions: Some(0),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let audit_before = h.audit_count().await;

        // Round 1: everyone tries to create it (cas = 0); exactly one wins.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..WRITERS {
            let h = h.clone();
            tasks.spawn(async move { (i, write_cas(&h, format!("first-{i}"), 0).await) });
        }
        let mut winners = vec![];
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                (i, Ok(v)) => winners.push((i, v)),
                (_, Err(e)) => assert_eq!(e.code, "cas_mismatch", "{e:?}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "exactly one cas=0 write wins: {winners:?}"
        );
        let (first, v) = winners[0];
        assert_eq!(v, 1);
        assert_eq!(
            h.read("prod", "race", None).await,
            json!(format!("first-{first}"))
        );
        let mut calls = WRITERS + 1; // the writes and the read just above

        // Round 2: everyone retries read-then-cas until it gets a version.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..WRITERS {
            let h = h.clone();
            tasks.spawn(async move {
                let mut calls = 0;
                let mut lost = vec![];
                loop {
                    calls += 1;
                    let cur = h
                        .engine
                        .read_metadata(&h.root_ctx(), "prod", "race")
                        .await
                        .unwrap()
                        .current_version;
                    calls += 1;
                    match write_cas(&h, format!("writer-{i}"), cur).await {
                        Ok(v) => {
                            assert_eq!(v, cur + 1, "a cas write creates exactly the next version");
                            return (i, v, cur, calls, lost);
                        }
                        Err(e) if e.code == "cas_mismatch" => lost.push(cur),
                        Err(e) => panic!("unexpected error {e:?}"),
                    }
                    tokio::task::yield_now().await;
                }
            });
        }
        let mut by_version: BTreeMap<u64, usize> = BTreeMap::new();
        let mut wins_per_cas: BTreeMap<u64, usize> = BTreeMap::new();
        let mut lost_per_cas: BTreeMap<u64, usize> = BTreeMap::new();
        while let Some(r) = tasks.join_next().await {
            let (i, v, cas, n, lost) = r.unwrap();
            calls += n;
            assert!(
                by_version.insert(v, i).is_none(),
                "version {v} was handed out twice"
            );
            *wins_per_cas.entry(cas).or_default() += 1;
            for c in lost {
                *lost_per_cas.entry(c).or_default() += 1;
            }
        }
        let expected: Vec<u64> = (2..=WRITERS as u64 + 1).collect();
        assert_eq!(by_version.keys().copied().collect::<Vec<_>>(), expected);
        assert!(
            wins_per_cas.values().all(|&n| n == 1),
            "one winner per cas value"
        );
        // Every cas value that lost was won by someone else.
        assert!(lost_per_cas
            .keys()
            .all(|c| *c == 1 || wins_per_cas.contains_key(c)));

        // The store holds each version exactly once, each with its winner's value.
        let kept = h
            .store()
            .read(|tx| tx.versions("prod", "race"))
            .await
            .map_err(|e: StoreError| e)
            .unwrap();
        let nums: Vec<u64> = kept.iter().map(|v| v.version).collect();
        assert_eq!(nums, (1..=WRITERS as u64 + 1).collect::<Vec<_>>());
        assert_eq!(nums.iter().collect::<BTreeSet<_>>().len(), nums.len());
        for (v, i) in &by_version {
            assert_eq!(
                h.read("prod", "race", Some(*v)).await,
                json!(format!("writer-{i}"))
            );
        }
        calls += by_version.len(); // the reads just above
        let md = h
            .engine
            .read_metadata(&h.root_ctx(), "prod", "race")
            .await
            .unwrap();
        calls += 1;
        assert_eq!(md.current_version, WRITERS as u64 + 1);

        // One audit entry per call, win or lose, and the chain is intact.
        let rows = h.audit_count().await;
        assert_eq!(rows - audit_before, calls, "one audit entry per operation");
        let report = h.engine.audit_verify(&h.root_ctx()).await.unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.entries, rows as u64);
    }));
}
