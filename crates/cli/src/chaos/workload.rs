//! Clients: append unique payloads to random nodes, follow each to Committed or
//! Invalid, and read back (by TxId, `current`, ranges, the commit point), recording
//! every operation's invocation and completion times and what it saw.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use covenant_client::{Connection, LedgerClient};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

pub const COLLECTIONS: [&str; 3] = ["chaos-a", "chaos-b", "chaos-c"];
const API: &str = "api-version=2022-05-13";

/// What one operation saw.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Outcome {
    /// A write: the TxId it was given, or why not.
    Append {
        collection: String,
        payload: String,
        txid: Option<String>,
        error: Option<String>,
    },
    /// `/node/tx`: CCF's status word for a TxId.
    Status { txid: String, status: String },
    /// `GET /app/transactions/{txid}`: Ready with contents, or Loading.
    ReadTx {
        txid: String,
        contents: Option<String>,
        state: String,
    },
    /// `GET /app/transactions/current`.
    Current {
        collection: String,
        committed_only: bool,
        txid: Option<String>,
        contents: Option<String>,
    },
    /// `GET /app/transactions?collectionId&fromTransactionId` (first page).
    Range {
        collection: String,
        from: u64,
        entries: Vec<(String, String)>,
        more: bool,
    },
    /// `/node/commit`: the node's committed seqno.
    Commit { seqno: u64 },
    /// The request failed (transport, timeout or an HTTP error).
    Failed { what: String, error: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct Op {
    pub client: usize,
    pub node: u16,
    /// Seconds since the run began.
    pub invoked: f64,
    pub completed: f64,
    pub outcome: Outcome,
}

/// Everything the clients recorded, shared with the nemesis (which reads the
/// times of successful writes) and the checker.
#[derive(Default)]
pub struct History {
    pub ops: Mutex<Vec<Op>>,
    /// Writes acknowledged Committed: (payload, txid, acknowledging node, time).
    pub committed: Mutex<Vec<(String, String, u16, f64)>>,
}

impl History {
    fn push(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }
}

pub struct Workload {
    pub clients: usize,
    pub endpoints: Vec<LedgerClient>,
    pub history: Arc<History>,
    pub start: Instant,
    pub stop: Arc<AtomicBool>,
    pub seed: u64,
}

struct Pending {
    payload: String,
    collection: String,
    txid: String,
    node: u16,
    since: Instant,
}

/// A client's keep-alive connections, one per node, reopened after any failure.
struct Conns<'a> {
    endpoints: &'a [LedgerClient],
    open: Vec<Option<Connection>>,
}

impl Conns<'_> {
    async fn request(
        &mut self,
        node: u16,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<covenant_client::HttpResponse, String> {
        let k = usize::from(node - 1);
        let run = async {
            if self.open[k].as_ref().is_none_or(|c| c.is_closed()) {
                self.open[k] = Some(
                    self.endpoints[k]
                        .connect()
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            let Some(c) = self.open[k].as_mut() else {
                return Err("no connection".to_string());
            };
            c.request_raw(method, path, body, "application/json")
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.open[k] = None;
                Err(e)
            }
            Err(_) => {
                self.open[k] = None;
                Err(format!("no answer within {} s", timeout.as_secs()))
            }
        }
    }
}

fn error_of(r: &covenant_client::HttpResponse) -> String {
    let j = r.json();
    let code = j["error"]["code"].as_str().unwrap_or("?");
    format!("{} {code}", r.status)
}

impl Workload {
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Records an operation of client `me` on `node`, invoked at `invoked` and
    /// completed now.
    fn record(&self, me: usize, node: u16, invoked: f64, outcome: Outcome) {
        self.history.push(Op {
            client: me,
            node,
            invoked,
            completed: self.now(),
            outcome,
        });
    }

    pub async fn run(self: Arc<Self>) {
        let mut tasks = Vec::new();
        for c in 0..self.clients {
            let w = self.clone();
            tasks.push(tokio::spawn(async move { w.client(c).await }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn client(&self, me: usize) {
        let mut rng = StdRng::seed_from_u64(self.seed ^ ((me as u64 + 1) * 0x9E37_79B9));
        let n = self.endpoints.len() as u16;
        let mut conns = Conns {
            endpoints: &self.endpoints,
            open: (0..n).map(|_| None).collect(),
        };
        let mut pending: Vec<Pending> = Vec::new();
        let mut seq = 0u64;
        // (collection, txid) of this client's writes acknowledged Committed.
        let mut acked: Vec<(String, String, u16)> = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            if pending.len() < 4 {
                seq += 1;
                let node = rng.gen_range(1..=n);
                let collection = COLLECTIONS[rng.gen_range(0..COLLECTIONS.len())].to_string();
                let payload = format!("c{me}-{seq}-{:08x}", rng.gen::<u32>());
                let body = serde_json::json!({ "contents": payload })
                    .to_string()
                    .into_bytes();
                let path = format!("/app/transactions?{API}&collectionId={collection}");
                let invoked = self.now();
                let r = conns
                    .request(node, "POST", &path, Some(body), Duration::from_secs(4))
                    .await;
                let (txid, error) = match r {
                    Ok(resp) if resp.status == 200 => match resp.transaction_id {
                        Some(t) => (Some(t), None),
                        None => (None, Some("200 without a transaction id".into())),
                    },
                    Ok(resp) => (None, Some(error_of(&resp))),
                    Err(e) => (None, Some(e)),
                };
                if let Some(t) = &txid {
                    pending.push(Pending {
                        payload: payload.clone(),
                        collection: collection.clone(),
                        txid: t.clone(),
                        node,
                        since: Instant::now(),
                    });
                }
                let outcome = Outcome::Append {
                    collection,
                    payload,
                    txid,
                    error,
                };
                self.record(me, node, invoked, outcome);
            }
            // Follow the oldest write: on the node that took it, else on another.
            if let Some(p) = pending.first() {
                let node = if rng.gen_bool(0.7) {
                    p.node
                } else {
                    rng.gen_range(1..=n)
                };
                let txid = p.txid.clone();
                let path = format!("/node/tx?transaction_id={txid}");
                let invoked = self.now();
                let r = conns
                    .request(node, "GET", &path, None, Duration::from_secs(2))
                    .await;
                let outcome = match r {
                    Ok(resp) if resp.status == 200 => {
                        let status = resp.json()["status"].as_str().unwrap_or("?").to_string();
                        if status == "Committed" {
                            let p = pending.remove(0);
                            let at = self.now();
                            self.history
                                .committed
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((p.payload.clone(), p.txid.clone(), node, at));
                            acked.push((p.collection, p.txid, node));
                        } else if status == "Invalid" || p.since.elapsed() > Duration::from_secs(30)
                        {
                            pending.remove(0);
                        }
                        Outcome::Status { txid, status }
                    }
                    Ok(resp) => Outcome::Failed {
                        what: format!("status {txid}"),
                        error: error_of(&resp),
                    },
                    Err(e) => Outcome::Failed {
                        what: format!("status {txid}"),
                        error: e,
                    },
                };
                self.record(me, node, invoked, outcome);
            }
            if rng.gen_bool(0.5) {
                let node = rng.gen_range(1..=n);
                let invoked = self.now();
                let outcome = self.read(&mut conns, &mut rng, node, &acked).await;
                self.record(me, node, invoked, outcome);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn read(
        &self,
        conns: &mut Conns<'_>,
        rng: &mut StdRng,
        node: u16,
        acked: &[(String, String, u16)],
    ) -> Outcome {
        let collection = COLLECTIONS[rng.gen_range(0..COLLECTIONS.len())].to_string();
        let pick = rng.gen_range(0..4);
        let (what, path) = match pick {
            0 if !acked.is_empty() => {
                let (c, txid, _) = &acked[rng.gen_range(0..acked.len())];
                (
                    format!("read {txid}"),
                    format!("/app/transactions/{txid}?{API}&collectionId={c}"),
                )
            }
            1 => {
                let committed = rng.gen_bool(0.5);
                (
                    format!("current{}", if committed { " committed" } else { "" }),
                    format!(
                        "/app/transactions/current?{API}&collectionId={collection}{}",
                        if committed { "&committed=true" } else { "" }
                    ),
                )
            }
            2 if !acked.is_empty() => {
                let (_, txid, _) =
                    &acked[rng.gen_range(acked.len().saturating_sub(50)..acked.len())];
                (
                    "range".to_string(),
                    format!("/app/transactions?{API}&collectionId={collection}&fromTransactionId={txid}"),
                )
            }
            _ => ("commit".to_string(), "/node/commit".to_string()),
        };
        let r = conns
            .request(node, "GET", &path, None, Duration::from_secs(2))
            .await;
        let resp = match r {
            Ok(resp) if resp.status == 200 => resp,
            Ok(resp) if resp.status == 404 && what.starts_with("read ") => {
                return Outcome::ReadTx {
                    txid: what.trim_start_matches("read ").to_string(),
                    contents: None,
                    state: format!("404 {}", error_of(&resp)),
                }
            }
            Ok(resp) if resp.status == 404 && what.starts_with("current") => {
                return Outcome::Current {
                    collection,
                    committed_only: what.ends_with("committed"),
                    txid: None,
                    contents: None,
                }
            }
            Ok(resp) => {
                return Outcome::Failed {
                    what,
                    error: error_of(&resp),
                }
            }
            Err(e) => return Outcome::Failed { what, error: e },
        };
        let j = resp.json();
        let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
        if let Some(txid) = what.strip_prefix("read ") {
            Outcome::ReadTx {
                txid: txid.to_string(),
                contents: s(&j["entry"]["contents"]),
                state: s(&j["state"]).unwrap_or_default(),
            }
        } else if what.starts_with("current") {
            Outcome::Current {
                collection,
                committed_only: what.ends_with("committed"),
                txid: s(&j["transactionId"]),
                contents: s(&j["contents"]),
            }
        } else if what == "range" {
            let from = path
                .rsplit_once('.')
                .and_then(|(_, s)| s.parse().ok())
                .unwrap_or(0);
            let entries = j["entries"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| Some((s(&e["transactionId"])?, s(&e["contents"])?)))
                        .collect()
                })
                .unwrap_or_default();
            Outcome::Range {
                collection,
                from,
                entries,
                more: j.get("nextLink").is_some(),
            }
        } else {
            let seqno = j["transaction_id"]
                .as_str()
                .and_then(|t| t.split_once('.'))
                .and_then(|(_, s)| s.parse().ok())
                .unwrap_or(0);
            Outcome::Commit { seqno }
        }
    }
}
