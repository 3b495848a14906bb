//! Ledger rekeys during the faults: member0 rotates the ledger secret every few
//! seconds through governance (COSE-signed, sent to any node, as a client would),
//! so that new secrets have to reach nodes that are down, cut off, paused or out of
//! disk, and every entry must still read back, and every ledger audit, at the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use covenant_client::LedgerClient;
use covenant_crypto::{sign_gov_sign1, Certificate, SigningKeyPair};

/// Proposes and accepts `trigger_ledger_rekey` every `every` until `stop`.
pub struct Rekeyer {
    pub endpoints: Vec<LedgerClient>,
    pub member_key: SigningKeyPair,
    pub member_cert: Certificate,
    pub every: Duration,
    pub stop: Arc<AtomicBool>,
    /// Proposals the service answered Accepted.
    pub accepted: AtomicU64,
    /// Rekeys attempted (one per period, through whichever node answers).
    pub tried: AtomicU64,
}

const ACCEPT: &str = "export function vote (proposal, proposerId) { return true }";

impl Rekeyer {
    pub async fn run(self: Arc<Self>) {
        let mut k = 0usize;
        while !self.stop.load(Ordering::SeqCst) {
            tokio::time::sleep(self.every).await;
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            self.tried.fetch_add(1, Ordering::SeqCst);
            for attempt in 0..self.endpoints.len() {
                let c = &self.endpoints[(k + attempt) % self.endpoints.len()];
                if self.rekey_through(c).await {
                    self.accepted.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                // A signed request is refused as a replay within the same second.
                tokio::time::sleep(Duration::from_millis(1100)).await;
            }
            k += 1;
        }
    }

    /// One proposal and, while it is Open, member0's ballot; whether it was Accepted.
    async fn rekey_through(&self, c: &LedgerClient) -> bool {
        let proposal = br#"{"actions":[{"name":"trigger_ledger_rekey","args":null}]}"#;
        let Some(v) = self
            .signed(c, "/gov/proposals", "proposal", None, proposal)
            .await
        else {
            return false;
        };
        if v["state"] == "Accepted" {
            return true;
        }
        let Some(id) = v["proposal_id"].as_str() else {
            return false;
        };
        let ballot = serde_json::json!({ "ballot": ACCEPT }).to_string();
        let path = format!("/gov/proposals/{id}/ballots");
        self.signed(c, &path, "ballot", Some(id), ballot.as_bytes())
            .await
            .is_some_and(|v| v["state"] == "Accepted")
    }

    async fn signed(
        &self,
        c: &LedgerClient,
        path: &str,
        msg_type: &str,
        proposal_id: Option<&str>,
        payload: &[u8],
    ) -> Option<serde_json::Value> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        let envelope = sign_gov_sign1(
            &self.member_key,
            &self.member_cert,
            msg_type,
            now,
            proposal_id,
            payload,
        )
        .ok()?;
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            c.request_raw("POST", path, Some(envelope), "application/cose"),
        )
        .await
        .ok()?
        .ok()?;
        (r.status == 200)
            .then(|| serde_json::from_slice(&r.body).ok())
            .flatten()
    }
}
