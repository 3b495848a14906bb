//! The parts of the `ccf` global that need the node: `ccf.consensus` (from a
//! [`ConsensusView`] taken when the request starts), `ccf.historical` (through a
//! [`History`] the node provides to readonly and historical endpoints),
//! `ccf.historicalState` (the transaction a historical endpoint was asked about),
//! and the interpreter switches `enableUntrustedDateTime` / `enableMetricsLogging`.
//! Also the JS runtime options governance sets with `set_js_runtime_options`.

use std::sync::Arc;
use std::time::Duration;

use covenant_js::rquickjs::{Ctx, Exception, Function, Object};
use covenant_js::Limits;
use covenant_kv::{Store, WriteSet};
use covenant_types::{SeqNo, TxId, View};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The governance map `set_js_runtime_options` writes (one row, key `"0"`).
pub const RUNTIME_OPTIONS: &str = "public:ccf.gov.js_runtime_options";

/// The limits and error reporting every app handler runs under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeOptions {
    pub max_heap_bytes: u64,
    pub max_stack_bytes: u64,
    pub max_execution_time_ms: u64,
    /// Whether a handler's exception (message and stack) goes to the node's log.
    #[serde(default = "yes")]
    pub log_exception_details: bool,
    /// Whether the 500 answer to a handler's exception carries its message and stack.
    #[serde(default)]
    pub return_exception_details: bool,
    /// Accepted for CCF compatibility; every request gets a fresh interpreter.
    #[serde(default)]
    pub max_cached_interpreters: u64,
}

fn yes() -> bool {
    true
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        let l = Limits::default();
        RuntimeOptions {
            max_heap_bytes: l.max_heap_bytes as u64,
            max_stack_bytes: l.max_stack_bytes as u64,
            max_execution_time_ms: l.max_execution_time.as_millis() as u64,
            log_exception_details: true,
            return_exception_details: false,
            max_cached_interpreters: 0,
        }
    }
}

impl RuntimeOptions {
    /// The options in force in `store` (the defaults when governance set none, or
    /// when the row does not parse: it was validated when it was written).
    pub fn load(store: &Store) -> RuntimeOptions {
        store
            .get(RUNTIME_OPTIONS, b"0")
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default()
    }

    /// The ranges `set_js_runtime_options` enforces (its constitution action checks
    /// the same): heap 64 KiB..4 GiB, stack 16 KiB..256 MiB, time 1..600000 ms.
    pub fn check(&self) -> Result<(), String> {
        for (field, v, lo, hi) in [
            ("max_heap_bytes", self.max_heap_bytes, 64 << 10, 4 << 30),
            ("max_stack_bytes", self.max_stack_bytes, 16 << 10, 256 << 20),
            (
                "max_execution_time_ms",
                self.max_execution_time_ms,
                1,
                600_000,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(format!("{field} must be an integer in {lo}..{hi}"));
            }
        }
        Ok(())
    }

    /// These options with the fields of `patch` (a JSON object of some of them)
    /// replaced, checked.
    pub fn patched(&self, patch: &Value) -> Result<RuntimeOptions, String> {
        let Some(fields) = patch.as_object() else {
            return Err("runtime options must be a JSON object".into());
        };
        let mut merged = serde_json::to_value(self).map_err(|e| e.to_string())?;
        for (k, v) in fields {
            if merged.get(k).is_none() {
                return Err(format!("{k} is not a JS runtime option"));
            }
            merged[k] = v.clone();
        }
        let out: RuntimeOptions =
            serde_json::from_value(merged).map_err(|e| format!("bad runtime options: {e}"))?;
        out.check()?;
        Ok(out)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_execution_time: Duration::from_millis(self.max_execution_time_ms),
            max_heap_bytes: usize::try_from(self.max_heap_bytes).unwrap_or(usize::MAX),
            max_stack_bytes: usize::try_from(self.max_stack_bytes).unwrap_or(usize::MAX),
        }
    }
}

/// What the node knew of consensus when the request started; `ccf.consensus` answers
/// from it, so a handler never waits on (or holds) the node's locks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsensusView {
    /// The last committed transaction (`None` before the first commit).
    pub committed: Option<TxId>,
    /// The last seqno this node holds.
    pub last_seqno: SeqNo,
    /// (first seqno, view) of each run of transactions in one view, in order.
    pub view_runs: Vec<(SeqNo, View)>,
}

impl ConsensusView {
    /// The view of `seqno`, if this node holds it.
    pub fn view_of(&self, seqno: SeqNo) -> Option<View> {
        if seqno == SeqNo::ZERO || seqno > self.last_seqno {
            return None;
        }
        let i = self.view_runs.partition_point(|&(first, _)| first <= seqno);
        i.checked_sub(1).map(|i| self.view_runs[i].1)
    }

    /// CCF's transaction status words.
    pub fn status(&self, txid: TxId) -> &'static str {
        let committed = self.committed.map_or(SeqNo::ZERO, |t| t.seqno);
        match self.view_of(txid.seqno) {
            None => "Unknown",
            Some(v) if v != txid.view => "Invalid",
            Some(_) if txid.seqno <= committed => "Committed",
            Some(_) => "Pending",
        }
    }
}

/// One past transaction as a handler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoricalTx {
    pub view: u64,
    pub seqno: u64,
    /// CCF's JS receipt object: `signature`, `cert`, `proof`, `leaf_components`
    /// (`write_set_digest`, `commit_evidence`, `claims_digest`), `node_id`.
    pub receipt: Value,
    /// What the transaction wrote (`None`: removed).
    pub writes: WriteSet,
}

impl HistoricalTx {
    fn to_json(&self) -> Value {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let kv: serde_json::Map<String, Value> = self
            .writes
            .maps
            .iter()
            .map(|(name, rows)| {
                let rows: Vec<Value> = rows
                    .iter()
                    .map(|(k, v)| json!([b64(k), v.as_deref().map(b64)]))
                    .collect();
                (name.clone(), Value::Array(rows))
            })
            .collect();
        json!({
            "transactionId": format!("{}.{}", self.view, self.seqno),
            "seqno": self.seqno,
            "receipt": self.receipt,
            "kv": kv,
        })
    }
}

/// Past states, read from the node's ledger (`ccf.historical.getStateRange`).
pub trait History: Send + Sync {
    /// The states of seqnos `from..=to`, or `None` while any of them cannot be
    /// served yet (not committed, or no signature covers it yet). `Err`: the
    /// request itself is wrong (the message becomes the JS exception).
    fn states(
        &self,
        handle: u64,
        from: u64,
        to: u64,
        expiry_secs: u64,
    ) -> Result<Option<Vec<HistoricalTx>>, String>;
    /// Forgets `handle`; whether it was known.
    fn drop_states(&self, handle: u64) -> bool;
}

/// What the node lends a handler beyond the maps.
#[derive(Clone, Default)]
pub struct Host {
    pub consensus: ConsensusView,
    /// Given to readonly and historical endpoints (a readwrite handler runs while
    /// the node holds its ledger; reading history from there would wait on itself).
    pub history: Option<Arc<dyn History>>,
    /// The transaction a historical endpoint serves (`ccf.historicalState`).
    pub historical: Option<HistoricalTx>,
    /// ACL's `context` global of a user-defined function: `{request, userId}`,
    /// and for a hook of an append also `{collectionId, contents}`.
    pub context: Option<serde_json::Value>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("consensus", &self.consensus)
            .field("history", &self.history.is_some())
            .field("historical", &self.historical)
            .finish()
    }
}

/// Builds the JS side: read-only maps over a transaction's writes, the consensus
/// and historical objects, and the Date / metrics switches. `n` is the natives.
const HOST_JS: &str = r#"
(n) => {
  const hex = (b) => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, "0")).join("");
  const readOnly = () => { throw new Error("historical state is read-only"); };
  function state(s) {
    const maps = {};
    for (const [name, rows] of Object.entries(s.kv)) {
      const m = new Map();
      for (const [k, v] of rows) m.set(hex(n.b64ToBuf(k)), [n.b64ToBuf(k), v === null ? undefined : n.b64ToBuf(v)]);
      maps[name] = m;
    }
    function table(name) {
      const m = maps[name] ?? new Map();
      const live = () => [...m.values()].filter(([, v]) => v !== undefined);
      const t = {
        get(k) { const r = m.get(hex(k)); return r === undefined || r[1] === undefined ? undefined : r[1].slice(0); },
        has(k) { const r = m.get(hex(k)); return r !== undefined && r[1] !== undefined; },
        getVersionOfPreviousWrite(k) { return m.has(hex(k)) ? s.seqno : undefined; },
        set: readOnly, delete: readOnly, clear: readOnly,
        forEach(cb) { for (const [k, v] of live()) cb(v.slice(0), k.slice(0), t); },
        get size() { return live().length; },
      };
      return t;
    }
    return Object.freeze({
      transactionId: s.transactionId,
      receipt: s.receipt,
      kv: new Proxy({}, { get(_, name) { return typeof name === "string" ? table(name) : undefined; } }),
    });
  }
  const num = (x, what) => {
    if (typeof x !== "number" || !Number.isInteger(x) || x < 0) throw new TypeError(`${what} must be a non-negative integer`);
    return x;
  };
  const consensus = Object.freeze({
    getLastCommittedTxId() { const [view, seqno] = n.committed(); return { view, seqno }; },
    getStatusForTxId(view, seqno) { return n.status(num(view, "view"), num(seqno, "seqno")); },
    getViewForSeqno(seqno) { return n.viewOf(num(seqno, "seqno")) ?? null; },
  });
  const historical = Object.freeze({
    getStateRange(handle, from, to, expiry) {
      num(handle, "handle"); num(from, "startSeqno"); num(to, "endSeqno"); num(expiry, "secondsUntilExpiry");
      if (to < from) throw new RangeError("endSeqno must not be before startSeqno");
      const got = n.states(handle, from, to, expiry);
      return got === undefined ? null : JSON.parse(got).map(state);
    },
    dropCachedStates(handle) { return n.drop(num(handle, "handle")); },
  });
  const RealDate = Date;
  let untrusted = false;
  const now = () => (untrusted ? RealDate.now() : 0);
  function CcfDate(...a) {
    if (!new.target) return new RealDate(now()).toString();
    return a.length === 0 ? new RealDate(now()) : new RealDate(...a);
  }
  CcfDate.prototype = RealDate.prototype;
  CcfDate.now = now;
  CcfDate.parse = RealDate.parse;
  CcfDate.UTC = RealDate.UTC;
  globalThis.Date = CcfDate;
  let metrics = true;
  return {
    consensus, historical,
    historicalState: n.historical === undefined ? undefined : state(JSON.parse(n.historical)),
    enableUntrustedDateTime(on) { const was = untrusted; untrusted = !!on; return was; },
    enableMetricsLogging(on) { const was = metrics; metrics = !!on; return was; },
  };
}
"#;

/// A native `(base64 string) => ArrayBuffer`: how binary data crosses from the
/// host's JSON into a handler.
pub(crate) fn b64_to_buf<'js>(ctx: &Ctx<'js>) -> covenant_js::rquickjs::Result<Function<'js>> {
    Function::new(ctx.clone(), |ctx: Ctx<'js>, s: String| {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(|e| Exception::throw_message(&ctx, &e.to_string()))?;
        covenant_js::rquickjs::ArrayBuffer::new(ctx, raw)
    })
}

fn whole(ctx: &Ctx<'_>, x: f64, what: &str) -> covenant_js::rquickjs::Result<u64> {
    if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x < 9.007_199_254_740_992e15 {
        Ok(x as u64)
    } else {
        Err(Exception::throw_type(
            ctx,
            &format!("{what} must be a non-negative integer"),
        ))
    }
}

/// Sets `consensus`, `historical`, `historicalState` (historical endpoints only),
/// `enableUntrustedDateTime` and `enableMetricsLogging` on `more` (merged into `ccf`).
pub(crate) fn install<'js>(
    ctx: &Ctx<'js>,
    more: &Object<'js>,
    host: Host,
) -> covenant_js::rquickjs::Result<()> {
    let n = Object::new(ctx.clone())?;
    n.set("b64ToBuf", b64_to_buf(ctx)?)?;
    let c = Arc::new(host.consensus);
    let v = c.clone();
    n.set(
        "committed",
        Function::new(ctx.clone(), move || {
            v.committed
                .map_or(vec![0, 0], |t| vec![t.view.0, t.seqno.0])
        })?,
    )?;
    let v = c.clone();
    n.set(
        "status",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, view: f64, seqno: f64| -> covenant_js::rquickjs::Result<String> {
                Ok(v.status(TxId::new(
                    whole(&ctx, view, "view")?,
                    whole(&ctx, seqno, "seqno")?,
                ))
                .to_string())
            },
        )?,
    )?;
    let v = c;
    n.set(
        "viewOf",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, seqno: f64| -> covenant_js::rquickjs::Result<Option<u64>> {
                Ok(v.view_of(SeqNo(whole(&ctx, seqno, "seqno")?)).map(|v| v.0))
            },
        )?,
    )?;
    let h = host.history.clone();
    n.set(
        "states",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  handle: f64,
                  from: f64,
                  to: f64,
                  expiry: f64|
                  -> covenant_js::rquickjs::Result<Option<String>> {
                let Some(h) = h.as_ref() else {
                    return Err(Exception::throw_message(
                        &ctx,
                        "ccf.historical.getStateRange is available in readonly and historical endpoints only",
                    ));
                };
                let got = h
                    .states(
                        whole(&ctx, handle, "handle")?,
                        whole(&ctx, from, "startSeqno")?,
                        whole(&ctx, to, "endSeqno")?,
                        whole(&ctx, expiry, "secondsUntilExpiry")?,
                    )
                    .map_err(|m| Exception::throw_message(&ctx, &m))?;
                Ok(got.map(|states| {
                    Value::Array(states.iter().map(HistoricalTx::to_json).collect()).to_string()
                }))
            },
        )?,
    )?;
    let h = host.history;
    n.set(
        "drop",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, handle: f64| {
            let handle = whole(&ctx, handle, "handle")?;
            Ok::<_, covenant_js::rquickjs::Error>(h.as_ref().is_some_and(|h| h.drop_states(handle)))
        })?,
    )?;
    if let Some(tx) = &host.historical {
        n.set("historical", tx.to_json().to_string())?;
    }
    let build: Function<'js> =
        covenant_js::bytecode::host_value(ctx, "__covenant_host/host", HOST_JS)?;
    let parts: Object<'js> = build.call((n,))?;
    for key in [
        "consensus",
        "historical",
        "historicalState",
        "enableUntrustedDateTime",
        "enableMetricsLogging",
    ] {
        let v: covenant_js::rquickjs::Value<'js> = parts.get(key)?;
        if !v.is_undefined() {
            more.set(key, v)?;
        }
    }
    Ok(())
}
