//! A governance step as one transaction: the request's replay mark, the
//! consortium's own logic (`covenant-governance`: proposals, ballots, the
//! constitution), what accepted proposals decided about nodes, then what they asked
//! of this node once the transaction has its seqno. Authenticating the request
//! (COSE Sign1, HTTP signatures, the member's certificate) is the transport's.

use std::time::{SystemTime, UNIX_EPOCH};

use covenant_governance::{GovEffect, GovError, Governance};
use covenant_kv::{Store, Tx};
use covenant_types::{Digest32, SeqNo, TxId};

use crate::admission::AdmissionError;
use crate::tables::{COSE_RECENT, HTTP_SIGNATURES_SEEN};
use crate::{Service, ServiceError};

/// How far a COSE request's `created_at` may be from the node's clock; its signed
/// digest is remembered for twice that.
pub const CREATED_AT_WINDOW_SECS: u64 = 300;

/// How a governance request was proved, which decides how it is kept from being
/// replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Proved by the connection's client certificate: no one else can replay it.
    Certificate,
    /// A COSE Sign1 envelope: its signed digest is kept while `created_at` is in
    /// the window (older ones are pruned by later requests).
    Cose { digest: Digest32, created_at: u64 },
    /// An HTTP signature carries no time: its replay key is kept for good, in a
    /// table the pruning never reads.
    HttpSignature { key: Digest32 },
}

/// Why a governance step was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum GovernError {
    /// The same signed request was submitted before.
    #[error("this signed request was already submitted")]
    Replayed(Replay),
    #[error(transparent)]
    Gov(#[from] GovError),
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    /// The step would leave the recovery shares impossible to issue (a threshold
    /// above the active recovery members), or issuing them failed.
    #[error(transparent)]
    Recovery(#[from] covenant_recovery::RecoveryError),
    /// A rekey could not be made (a trusted node without an encryption key, say).
    #[error(transparent)]
    Rekey(covenant_engine::EngineError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl Replay {
    /// Where this request's replay mark lives, its key and the time recorded.
    fn mark(self) -> Option<(&'static str, String, u64)> {
        match self {
            Replay::Certificate => None,
            Replay::Cose { digest, created_at } => Some((COSE_RECENT, digest.to_hex(), created_at)),
            Replay::HttpSignature { key } => Some((HTTP_SIGNATURES_SEEN, key.to_hex(), now_secs())),
        }
    }

    /// Whether the store already holds this request's mark (a replay).
    fn seen(self, store: &Store) -> bool {
        self.mark()
            .is_some_and(|(map, key, _)| store.get(map, key.as_bytes()).is_some())
    }

    /// Refuses a replay and records this request, in the step's transaction.
    fn remember(self, tx: &mut Tx, store: &Store) -> Result<(), GovernError> {
        let Some((map, key, at)) = self.mark() else {
            return Ok(());
        };
        if tx.get(map, key.as_bytes()).is_some() {
            return Err(GovernError::Replayed(self));
        }
        if map == COSE_RECENT {
            let horizon = now_secs().saturating_sub(2 * CREATED_AT_WINDOW_SECS);
            for (k, v) in store.entries(COSE_RECENT) {
                let seen_at = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0);
                if seen_at < horizon {
                    tx.remove(COSE_RECENT, &k);
                }
            }
        }
        tx.put(map, key.as_bytes(), at.to_string().as_bytes());
        Ok(())
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Service {
    /// Runs a governance step as one transaction (on the primary: a backup's
    /// replica refuses it as not primary), on a blocking thread since every step
    /// runs the constitution's JavaScript. `f` is the step, given the seqno its
    /// transaction will get. `service_cert_pem` is the certificate
    /// `transition_service_to_open` must name.
    ///
    /// A proposal that would retire this node while it is primary is refused
    /// ([`AdmissionError::PrimaryRetiring`]) and leadership is handed over, so the
    /// request can be retried on the next primary.
    pub async fn govern<T: Send + 'static>(
        &self,
        service_cert_pem: Option<String>,
        replay: Replay,
        f: impl FnOnce(&Governance, &mut Tx, &Store, SeqNo) -> Result<T, GovError> + Send + 'static,
    ) -> Result<(TxId, T), GovernError> {
        let out = self
            .blocking(move |s| s.govern_blocking(service_cert_pem, replay, f))
            .await?;
        if let (Err(GovernError::Admission(AdmissionError::PrimaryRetiring)), Some(r)) =
            (&out, self.replica())
        {
            r.transfer_leadership();
        }
        out
    }

    /// [`Service::govern`] with a first part outside every lock: `prepare` runs
    /// on a script thread against the store as it is (for ballots: see
    /// [`Governance::prepare_ballots`]), and the step gets what it made. The step
    /// must use that only where it still holds (the governance crate checks).
    pub async fn govern_prepared<T: Send + 'static, P: Send + 'static>(
        &self,
        service_cert_pem: Option<String>,
        replay: Replay,
        prepare: impl FnOnce(&Governance, &Store) -> P + Send + 'static,
        f: impl FnOnce(&Governance, &mut Tx, &Store, SeqNo, P) -> Result<T, GovError> + Send + 'static,
    ) -> Result<(TxId, T), GovernError> {
        // A replayed request runs nothing, not even before the step refuses it.
        if replay.seen(self.store()) {
            return Err(GovernError::Replayed(replay));
        }
        let s = self.clone();
        let cert = service_cert_pem.clone();
        let prepared = self
            .scripts()
            .run(move || {
                let latest = {
                    let s = s.clone();
                    crate::scripts::at_normal_priority(move || {
                        s.engine().ledger_secrets().latest().0 .0
                    })?
                };
                let mut gov = Governance::for_service(cert);
                gov.context.latest_ledger_secret_seqno = latest;
                Ok::<_, ServiceError>(prepare(&gov, s.store()))
            })
            .await??;
        self.govern(service_cert_pem, replay, move |gov, tx, store, seqno| {
            f(gov, tx, store, seqno, prepared)
        })
        .await
    }

    fn govern_blocking<T>(
        &self,
        service_cert_pem: Option<String>,
        replay: Replay,
        f: impl FnOnce(&Governance, &mut Tx, &Store, SeqNo) -> Result<T, GovError>,
    ) -> Result<(TxId, T), GovernError> {
        let admission = self.admission();
        self.write_blocking(|e| {
            let mut gov = Governance::for_service(service_cert_pem);
            gov.context.latest_ledger_secret_seqno = e.ledger_secrets().latest().0 .0;
            let mut tx = e.begin();
            let store = e.store().clone();
            let seqno = e.last_seqno().next();
            let mut effects = Vec::new();
            let step = replay
                .remember(&mut tx, &store)
                .and_then(|()| f(&gov, &mut tx, &store, seqno).map_err(GovernError::from))
                .and_then(|v| {
                    effects = gov.take_effects();
                    let rekey = effects.contains(&GovEffect::LedgerRekey)
                        || crate::recovery::recovery_member_left(&mut tx, &store);
                    if rekey {
                        let to = crate::recovery::secret_recipients(e, &store)
                            .map_err(GovernError::Rekey)?;
                        e.rekey(&mut tx, &to).map_err(GovernError::Rekey)?;
                    }
                    let refresh = effects.contains(&GovEffect::RecoverySharesRefresh);
                    crate::recovery::settle(e, &mut tx, refresh)?;
                    Ok(v)
                })
                .and_then(|v| match &admission {
                    Some(a) => Ok((v, a.settle(e, &mut tx)?)),
                    None => Ok((v, None)),
                });
            let (v, staged) = match step {
                Ok(done) => done,
                Err(refused) => {
                    e.cancel_rekey();
                    return Ok(Err(refused));
                }
            };
            let txid = e.commit_tx(tx, None)?;
            if let (Some(target), Some(a)) = (staged, &admission) {
                a.replica.note_membership(txid.seqno, target);
            }
            for effect in effects {
                match effect {
                    GovEffect::Snapshot => e.request_snapshot(),
                    // Done in the step's transaction.
                    GovEffect::RecoverySharesRefresh | GovEffect::LedgerRekey => {}
                }
            }
            Ok(Ok((txid, v)))
        })?
    }
}
