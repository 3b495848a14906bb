//! Scripts (JavaScript handlers, user-defined functions, append hooks) run
//! without the engine's or Raft's lock: against the live store, recording every
//! version they read ([`covenant_kv::ReadSet`]), then their transaction commits
//! under the locks only if all of that is still current, which makes it
//! serializable at its commit point (optimistic concurrency, as CCF executes
//! transactions). A run that lost the race is re-run, at most [`MAX_RUNS`] times,
//! then refused ([`ServiceError::Conflict`]). A run with nothing to commit is
//! answered only if what it read is still current, so no caller ever sees an
//! answer computed from a mix of two states.

use covenant_engine::EngineError;
use covenant_kv::{KvError, ReadSet, Store, Tx};
use covenant_types::{Digest32, TxId};

use crate::{Service, ServiceError};

/// Runs of one request before it is refused as conflicting.
pub const MAX_RUNS: u32 = 8;

/// What one run of a script produced.
pub enum Executed<R> {
    /// Commit `tx` (its reads are checked under the locks) and answer `answer`.
    Commit {
        tx: Tx,
        claims: Option<Digest32>,
        answer: R,
    },
    /// Nothing to write: `answer` stands if `reads` are still current.
    Answer { reads: ReadSet, answer: R },
}

/// The answer of the run that stood.
#[derive(Debug)]
pub struct Outcome<R> {
    pub answer: R,
    /// The transaction committed, or (nothing written) the last one the answer
    /// was computed after.
    pub txid: Option<TxId>,
    /// How many runs it took (1 without a conflict).
    pub runs: u32,
}

impl Service {
    /// [`Service::execute_blocking`] on a script thread (see `scripts`): how a
    /// request runs a script that may write.
    pub async fn execute<R: Send + 'static>(
        &self,
        run: impl FnMut(&Store, u32) -> Executed<R> + Send + 'static,
    ) -> Result<Outcome<R>, ServiceError> {
        let s = self.clone();
        self.scripts().run(move || s.execute_blocking(run)).await?
    }

    /// Runs `run` (given the store and the run's number, from 1) outside every
    /// lock until its result stands; on a blocking thread (scripts block). Other
    /// writers only wait for the commit itself, never for the script.
    pub fn execute_blocking<R>(
        &self,
        mut run: impl FnMut(&Store, u32) -> Executed<R>,
    ) -> Result<Outcome<R>, ServiceError> {
        let store = self.store().clone();
        for runs in 1..=MAX_RUNS {
            self.refused()?;
            match run(&store, runs) {
                Executed::Commit { tx, claims, answer } => {
                    // At normal priority: a script thread must not hold the locks.
                    let s = self.clone();
                    let committed = crate::scripts::at_normal_priority(move || {
                        s.write_blocking(move |e| match e.commit_tx(tx, claims) {
                            Ok(txid) => Ok(Some(txid)),
                            Err(EngineError::Kv(KvError::Conflict { .. })) => Ok(None),
                            Err(other) => Err(other),
                        })
                    })??;
                    if let Some(txid) = committed {
                        return Ok(Outcome {
                            answer,
                            txid: Some(txid),
                            runs,
                        });
                    }
                }
                Executed::Answer { reads, answer } => {
                    // The answer's txid is read before validating: a write after
                    // the validation cannot be claimed as seen.
                    let txid = store.last_txid();
                    if store.validate(&reads).is_ok() {
                        return Ok(Outcome { answer, txid, runs });
                    }
                }
            }
            tracing::debug!(
                runs,
                "a script's reads changed before it committed; running it again"
            );
        }
        Err(ServiceError::Conflict { runs: MAX_RUNS })
    }
}
