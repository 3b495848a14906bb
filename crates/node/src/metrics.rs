//! `/node/metrics` in the Prometheus text format: requests by status class and the
//! ledger's position (last and committed seqno, view).

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::NodeState;

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
}

/// Middleware counting every response.
pub async fn count(State(state): State<NodeState>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    state.metrics.record(resp.status().as_u16());
    resp
}

pub async fn render(State(state): State<NodeState>) -> Response {
    let (last, committed, view) = {
        let e = state.engine();
        (
            e.last_txid().map(|t| t.seqno.0).unwrap_or(0),
            e.committed_seqno(),
            e.view().0,
        )
    };
    let mut out = String::new();
    out.push_str("# HELP covenant_requests_total HTTP responses sent, by status class.\n");
    out.push_str("# TYPE covenant_requests_total counter\n");
    for (i, c) in state.metrics.by_class.iter().enumerate() {
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
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}
