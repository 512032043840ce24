//! The replies this bridge claimed and has not settled yet, kept in the state dir: a bridge that
//! stopped mid-send (a crash, a kill) names them by id at its next start, whichever bridge JetStream
//! hands them to afterwards (docs/scale-out.md, "Failure semantics").

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::warn;

use super::subject::token;
use crate::util::lock;

/// One account's claimed, unsettled replies.
#[derive(Debug)]
pub struct Inflight {
    path: PathBuf,
    ids: Mutex<BTreeSet<String>>,
}

impl Inflight {
    /// The account's record, emptied; returns what an earlier run left in it.
    pub fn open(state_dir: &Path, account: &str) -> (Self, Vec<String>) {
        let path = state_dir
            .join("nats")
            .join(format!("inflight-{}.json", token(account)));
        let leftovers: Vec<String> = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let inflight = Self {
            path,
            ids: Mutex::new(BTreeSet::new()),
        };
        if !leftovers.is_empty() {
            inflight.save(&BTreeSet::new());
        }
        (inflight, leftovers)
    }

    /// Claimed: about to be sent.
    pub fn add(&self, id: &str) {
        let mut ids = lock(&self.ids);
        ids.insert(id.to_string());
        self.save(&ids);
    }

    /// Settled: sent, given back, or given up.
    pub fn remove(&self, id: &str) {
        let mut ids = lock(&self.ids);
        if ids.remove(id) {
            self.save(&ids);
        }
    }

    fn save(&self, ids: &BTreeSet<String>) {
        let list: Vec<&String> = ids.iter().collect();
        let written = serde_json::to_vec(&list)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::util::atomic_write(&self.path, &bytes));
        if let Err(err) = written {
            // The claim itself still keeps the reply from going out twice; only the next start's
            // report of a crash mid-send is lost.
            warn!("cannot record claimed replies in {}: {err}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_run_left_claimed_is_reported_once_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let (first, leftovers) = Inflight::open(dir.path(), "work.mac");
        assert!(leftovers.is_empty());
        first.add("reply:1");
        first.add("reply:2");
        first.remove("reply:1");
        drop(first);
        let (second, leftovers) = Inflight::open(dir.path(), "work.mac");
        assert_eq!(
            leftovers,
            vec!["reply:2".to_string()],
            "settled ones are not reported"
        );
        drop(second);
        let (_, leftovers) = Inflight::open(dir.path(), "work.mac");
        assert!(leftovers.is_empty(), "reported once");
        assert!(dir.path().join("nats/inflight-work=2emac.json").is_file());
    }
}
