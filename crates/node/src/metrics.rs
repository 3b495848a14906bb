//! Request counters and their Prometheus text rendering (`/node/metrics`). A leaf:
//! the route that serves them (`/node/metrics`, in the node API module) adds the ledger's position.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Request counters, by status class (1xx..5xx).
#[derive(Debug, Default)]
pub struct Metrics {
    by_class: [AtomicU64; 5],
}

impl Metrics {
    fn record(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters and the ledger's position (last and committed seqno, view) in
    /// the Prometheus text format.
    pub fn render(&self, last: u64, committed: u64, view: u64) -> String {
        let mut out = String::new();
        out.push_str("# HELP covenant_requests_total HTTP responses sent, by status class.\n");
        out.push_str("# TYPE covenant_requests_total counter\n");
        for (i, c) in self.by_class.iter().enumerate() {
            out.push_str(&format!(
                "covenant_requests_total{{status=\"{}xx\"}} {}\n",
                i + 1,
                c.load(Ordering::Relaxed)
            ));
        }
        for (name, help, v) in [
            (
                "covenant_last_seqno",
                "Seqno of the last transaction in the ledger.",
                last,
            ),
            (
                "covenant_committed_seqno",
                "Seqno up to which every transaction is committed.",
                committed,
            ),
            ("covenant_view", "Current view (Raft term).", view),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            ));
        }
        out
    }
}

/// Middleware counting every response.
pub async fn count(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    metrics.record(resp.status().as_u16());
    resp
}
