//! The single-node commit driver: group commit and periodic signatures. A node of
//! a network has none: its replica signs (as primary) and commits.

use covenant_types::SeqNo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use covenant_engine::pacer::SignPacer;
use covenant_engine::{Engine, EngineError};
use tokio::sync::watch;

/// How long the group-commit loop sleeps when there was nothing to sync.
const IDLE: Duration = Duration::from_millis(5);

/// A thread running group commit back to back (fdatasync with the engine lock
/// released, so appends never wait for the disk) and emitting signatures as the
/// pacer says: soon after the pipeline goes quiet, a short gap apart under load,
/// at the latest `sig_every` after a transaction. Stops when told or when every receiver
/// of the committed seqno is gone.
pub(crate) struct Driver {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Driver {
    pub(crate) fn spawn(
        engine: Arc<Mutex<Engine>>,
        committed: watch::Sender<SeqNo>,
        sig_every: Duration,
    ) -> std::io::Result<Driver> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("covenant-commit".into())
            .spawn(move || commit_loop(&engine, &committed, sig_every, &flag))?;
        Ok(Driver {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the loop and waits (on a blocking thread) for its current cycle.
    pub(crate) async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn commit_loop(
    engine: &Mutex<Engine>,
    committed: &watch::Sender<SeqNo>,
    sig_every: Duration,
    stop: &AtomicBool,
) {
    let lock = || engine.lock().unwrap_or_else(|e| e.into_inner());
    let mut pacer = SignPacer::new(sig_every);
    while !stop.load(Ordering::Relaxed) && !committed.is_closed() {
        let cycle = |pacer: &mut SignPacer| -> Result<(SeqNo, bool), EngineError> {
            let ticket = {
                let mut e = lock();
                let now = Instant::now();
                if pacer.due(now, e.last_seqno(), e.unsigned_txs()) {
                    e.emit_signature()?;
                    pacer.signed(now, now.elapsed());
                }
                if !e.sync_wanted() {
                    return Ok((e.committed_seqno(), true));
                }
                e.prepare_flush()?
            };
            let idle = ticket.is_empty();
            let result = ticket.run();
            Ok((lock().complete_flush(ticket, result)?, idle))
        };
        match cycle(&mut pacer) {
            Ok((seqno, idle)) => {
                committed.send_if_modified(|c| {
                    let changed = *c != seqno;
                    *c = seqno;
                    changed
                });
                if idle {
                    std::thread::sleep(pacer.poll().min(IDLE));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "signing or flushing the ledger failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Signs (if anything is unsigned) and makes everything durable (graceful
/// shutdown of a single node, after the driver stopped).
pub(crate) fn final_flush(engine: &mut Engine) -> Result<SeqNo, EngineError> {
    if engine.unsigned_txs() > 0 {
        engine.emit_signature()?;
    }
    engine.flush()
}
