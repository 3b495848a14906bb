//! A node served in-process by the tests that drive its HTTP API.

use covenant_node::BoundNode;
use tokio::sync::oneshot;

/// A bound node serving on a task until [`Serving::shutdown`] (or until `stop` is
/// sent or dropped).
pub struct Serving {
    /// `https://127.0.0.1:<port>`.
    pub endpoint: String,
    /// Sending (or dropping) it stops the node gracefully.
    pub stop: oneshot::Sender<()>,
    /// Ends with the node's final committed seqno.
    pub task: tokio::task::JoinHandle<covenant_types::SeqNo>,
}

/// Serves `bound` on a new task; every test that binds a node in-process starts it
/// this way.
pub fn serve(bound: BoundNode) -> Serving {
    let endpoint = format!("https://127.0.0.1:{}", bound.local_addr.port());
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        bound
            .serve(async {
                let _ = rx.await;
            })
            .await
            .unwrap()
    });
    Serving {
        endpoint,
        stop,
        task,
    }
}

impl Serving {
    /// Stops the node gracefully and returns its final committed seqno.
    pub async fn shutdown(self) -> covenant_types::SeqNo {
        self.stop.send(()).unwrap();
        self.task.await.unwrap()
    }
}
