//! Where scripts run: JavaScript app handlers, user-defined functions and append
//! hooks compute on a pool of threads at the lowest scheduling priority (Linux's
//! idle class, `SCHED_IDLE`, and nice 19),
//! so a burst of slow handlers takes only the CPU that appends, reads and
//! replication leave idle, instead of an equal share of it. Their commits do not
//! run there: a low-priority thread holding the engine's lock would make every
//! writer wait for it, so [`crate::Service::execute_blocking`] hands the commit to
//! a normal blocking thread (see [`at_normal_priority`]). Governance ballots are
//! run here first too ([`crate::Service::govern_prepared`]); the governance step
//! itself runs on a normal thread under the engine's lock. The queue is bounded: past it
//! a script is refused as busy (503) rather than queued without end.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::ServiceError;

type Job = Box<dyn FnOnce() + Send>;

/// The scheduling priority of script threads (the lowest there is).
const NICE: i32 = 19;

thread_local! {
    /// Set on script threads while a job runs: the runtime whose blocking threads
    /// do what must not run at a script's priority.
    static NORMAL_PRIORITY: std::cell::RefCell<Option<tokio::runtime::Handle>> =
        const { std::cell::RefCell::new(None) };
}

/// A pool of low-priority threads running scripts (see the module doc).
pub struct ScriptPool {
    jobs: mpsc::SyncSender<Job>,
}

impl std::fmt::Debug for ScriptPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptPool")
    }
}

impl ScriptPool {
    /// `threads` workers (scripts running at once), `queue` scripts waiting.
    pub fn new(threads: usize, queue: usize) -> ScriptPool {
        let (jobs, rx) = mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("covenant-script-{i}"))
                .spawn(move || {
                    let me = rustix::thread::gettid();
                    // SCHED_IDLE: a node thread that wakes takes the core from a
                    // script at once (nice 19 alone still lets the script finish
                    // part of its slice first). Nice 19 stays if this is refused.
                    if let Err(e) = run_when_idle() {
                        tracing::debug!(error = ?e, "a script thread stays at nice 19");
                    }
                    if let Err(e) = rustix::process::setpriority_process(Some(me), NICE) {
                        tracing::warn!(error = %e, "a script thread keeps the normal priority");
                    }
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a script thread");
            }
        }
        ScriptPool { jobs }
    }

    /// The default pool: four threads per core (scripts mostly wait on nothing,
    /// but a handler may sleep on I/O through the host), 4096 waiting.
    pub fn default_size() -> ScriptPool {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ScriptPool::new((cores * 4).clamp(4, 64), 4096)
    }

    /// Runs `f` on a script thread; its commit (if it makes one through
    /// `execute_blocking`) runs on a normal blocking thread of the calling runtime.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        let runtime = tokio::runtime::Handle::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            NORMAL_PRIORITY.with(|c| *c.borrow_mut() = Some(runtime));
            let out = std::panic::catch_unwind(AssertUnwindSafe(f));
            NORMAL_PRIORITY.with(|c| *c.borrow_mut() = None);
            let _ = tx.send(out);
        });
        // Full, or (never while the pool lives) no worker left: refused either way.
        self.jobs.try_send(job).map_err(|_| ServiceError::Busy)?;
        // A panic, or a job dropped unrun.
        rx.await
            .ok()
            .and_then(Result::ok)
            .ok_or(ServiceError::ScriptPanicked)
    }
}

/// Puts the calling thread in the idle scheduling class (Linux `SCHED_IDLE`).
fn run_when_idle() -> Result<(), thread_priority::Error> {
    use thread_priority::unix::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadSchedulePolicy,
    };
    set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    )
}

/// Runs `work` on a normal-priority blocking thread when called from a script
/// thread (waiting for it), in place otherwise: anything that takes the engine's
/// lock (a commit, a historical read, the consensus view) must not run at a
/// priority that lets writers queue behind a preempted lock holder.
pub fn at_normal_priority<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ServiceError> {
    let runtime = NORMAL_PRIORITY.with(|c| c.borrow().clone());
    match runtime {
        None => Ok(work()),
        // Asked for from a runtime worker: a blocking thread the runtime starts
        // inherits the priority of the thread that asked, never a script's.
        Some(rt) => {
            let spawned = rt.spawn(async move { tokio::task::spawn_blocking(work).await });
            Ok(rt.block_on(spawned)??)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scripts_run_at_low_priority_and_commits_do_not() {
        let pool = ScriptPool::new(2, 8);
        use thread_priority::unix::ThreadSchedulePolicy::Normal;
        use thread_priority::unix::{thread_schedule_policy, NormalThreadSchedulePolicy as P};
        let ((nice, policy), (commit_nice, commit_policy)) = pool
            .run(|| {
                let mine = || {
                    (
                        rustix::process::getpriority_process(None).ok(),
                        thread_schedule_policy().ok(),
                    )
                };
                let commit = at_normal_priority(mine).ok();
                (mine(), commit.unwrap_or((None, None)))
            })
            .await
            .unwrap();
        assert_eq!(nice, Some(NICE));
        assert_eq!(policy, Some(Normal(P::Idle)));
        assert_eq!(commit_nice, Some(0));
        assert_ne!(commit_policy, Some(Normal(P::Idle)));
        // A panicking script is an error, and the pool keeps serving.
        let r = pool.run(|| panic!("boom")).await;
        assert!(matches!(r, Err(ServiceError::ScriptPanicked)));
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_as_busy() {
        let pool = Arc::new(ScriptPool::new(1, 1));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(Mutex::new(wait));
        let held = {
            let (p, w) = (pool.clone(), wait.clone());
            tokio::spawn(async move {
                p.run(move || {
                    let _ = w.lock().map(|w| w.recv());
                })
                .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let queued = {
            let p = pool.clone();
            tokio::spawn(async move { p.run(|| 1).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(matches!(pool.run(|| 2).await, Err(ServiceError::Busy)));
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        assert_eq!(queued.await.unwrap().unwrap(), 1);
    }
}
