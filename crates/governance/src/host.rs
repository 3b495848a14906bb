//! The governance host API beyond `ccf.kv` that CCF's own constitutions call
//! (CCF 5 and 6 default `actions.js`), so a consortium can deploy CCF's
//! constitution unchanged:
//!
//! - everywhere: `ccf.gov.validateConstitution`;
//! - in `apply` only (as in CCF): `ccf.refreshAppBytecodeCache`,
//!   `ccf.setJwtPublicSigningKeys`, `ccf.removeJwtPublicSigningKeys`, `ccf.node.*`
//!   and `ccf.network.*`.
//!
//! CCF's constitution also keys single-row tables by 8 zero bytes (covenant keys
//! them `"0"`) and stores the constitution as a JSON string (covenant: the text);
//! [`CcfTables`] translates both, so either kind of constitution reads and writes
//! the same rows.
//!
//! What only the node can do (a snapshot) is returned as a [`GovEffect`].

use std::cell::RefCell;
use std::rc::Rc;

use covenant_js::ccf::KvAccess;
use covenant_js::rquickjs::{self, ArrayBuffer, Ctx, Exception, Function, Object};

use crate::kv::GovKv;

/// What the service knows that governance scripts may ask about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GovContext {
    /// The service certificate (PEM): `transition_service_to_open` names it.
    pub service_cert_pem: Option<String>,
    /// The seqno the newest ledger secret applies from
    /// (`ccf.network.getLatestLedgerSecretSeqno()`).
    pub latest_ledger_secret_seqno: u64,
}

/// Something an accepted proposal asked of the node, done after it commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GovEffect {
    /// `ccf.node.triggerSnapshot()`.
    Snapshot,
    /// `ccf.node.triggerRecoverySharesRefresh()`: new shares of the same ledger
    /// secret, in the proposal's own transaction.
    RecoverySharesRefresh,
    /// `ccf.node.triggerLedgerRekey()`: a new ledger secret from the transaction
    /// after the proposal's on (and new recovery shares for it).
    LedgerRekey,
}

/// Where a JWT issuer's keys go when a constitution sets them through
/// `ccf.setJwtPublicSigningKeys` (issuer → JWKS document); covenant's own
/// `set_jwt_issuer` keeps them in the issuer's row instead. The node reads both.
pub const JWT_ISSUER_KEYS: &str = "public:ccf.gov.jwt.issuer_keys";
/// The app's modules, and the two bytecode tables CCF's `refreshAppBytecodeCache` keeps.
const MODULES: &str = "public:ccf.gov.modules";
const MODULES_BYTECODE: &str = "public:ccf.gov.modules_quickjs_bytecode";
const MODULES_VERSION: &str = "public:ccf.gov.modules_quickjs_version";
/// What covenant writes as the compiled-module version: it caches no bytecode in
/// the ledger (each node compiles modules itself), so the table stays empty.
const BYTECODE_VERSION: &str = "covenant (modules compiled by each node)";

/// CCF's key of a single-row table (a u64 0).
const CCF_SINGLETON_KEY: [u8; 8] = [0; 8];
/// covenant's key of a single-row table.
const SINGLETON_KEY: &[u8] = b"0";

fn singleton(key: &[u8]) -> &[u8] {
    if key == CCF_SINGLETON_KEY {
        SINGLETON_KEY
    } else {
        key
    }
}

/// The governance maps with CCF's encodings translated (see the module doc);
/// the second field fills the `cert` of `public:ccf.gov.service.info` (the service
/// certificate), which CCF's row carries and covenant's does not.
pub struct CcfTables(pub Rc<RefCell<GovKv>>, pub Option<String>);

impl KvAccess for CcfTables {
    fn get(&self, map: &str, key: &[u8]) -> Option<Vec<u8>> {
        let key = singleton(key);
        let value = self.0.borrow().get(map, key);
        match (value, &self.1) {
            (Some(v), Some(cert)) if map == crate::SERVICE_INFO && key == SINGLETON_KEY => {
                Some(with_service_cert(&v, cert))
            }
            (v, _) => v,
        }
    }

    fn set(&mut self, map: &str, key: &[u8], value: &[u8]) -> Result<(), String> {
        let key = singleton(key);
        if map == crate::CONSTITUTION {
            // CCF stores the constitution as a JSON string; covenant as its text.
            if let Ok(serde_json::Value::String(text)) = serde_json::from_slice(value) {
                return self.0.borrow_mut().set(map, key, text.as_bytes());
            }
        }
        self.0.borrow_mut().set(map, key, value)
    }

    fn delete(&mut self, map: &str, key: &[u8]) -> Result<(), String> {
        self.0.borrow_mut().delete(map, singleton(key))
    }

    fn entries(&self, map: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.0.borrow().entries(map)
    }

    fn version(&self, map: &str, key: &[u8]) -> Option<u64> {
        self.0.borrow().version(map, singleton(key))
    }
}

/// A `service.info` row with the service certificate as its `cert` (kept if set).
pub fn with_service_cert(row: &[u8], cert: &str) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(row) {
        Ok(serde_json::Value::Object(mut o)) => {
            o.entry("cert")
                .or_insert_with(|| serde_json::Value::String(cert.to_string()));
            serde_json::Value::Object(o).to_string().into_bytes()
        }
        _ => row.to_vec(),
    }
}

fn throw(ctx: &Ctx<'_>, message: impl AsRef<str>) -> rquickjs::Error {
    Exception::throw_message(ctx, message.as_ref())
}

/// Installs the members of `ccf` listed in the module doc on `extra` (merged into
/// `ccf`); the apply-only ones only when `apply`.
pub fn install<'js>(
    ctx: &Ctx<'js>,
    extra: &Object<'js>,
    kv: Rc<RefCell<GovKv>>,
    context: &GovContext,
    effects: Rc<RefCell<Vec<GovEffect>>>,
    apply: bool,
) -> rquickjs::Result<()> {
    extra.set(
        "tcbHexToPolicy",
        Function::new(ctx.clone(), |ctx: Ctx<'js>| -> rquickjs::Result<()> {
            Err(throw(
                &ctx,
                "ccf.tcbHexToPolicy: covenant has no SEV-SNP attestation yet",
            ))
        })?,
    )?;
    let gov = Object::new(ctx.clone())?;
    gov.set(
        "validateConstitution",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, source: rquickjs::Value<'js>| {
                let Some(source) = source
                    .as_string()
                    .and_then(|s| s.to_string().ok())
                    .filter(|s| !s.is_empty())
                else {
                    return Err(throw(
                        &ctx,
                        "validateConstitution: the constitution must be a string",
                    ));
                };
                validate_constitution(&source).map_err(|m| throw(&ctx, m))?;
                Ok(true)
            },
        )?,
    )?;
    extra.set("gov", gov)?;
    if !apply {
        return Ok(());
    }

    let k = kv.clone();
    extra.set(
        "refreshAppBytecodeCache",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>| {
            refresh_bytecode(&k).map_err(|m| throw(&ctx, m))
        })?,
    )?;
    let k = kv.clone();
    extra.set(
        "setJwtPublicSigningKeys",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  issuer: String,
                  _metadata: rquickjs::Value<'js>,
                  jwks: rquickjs::Value<'js>| {
                let jwks = ctx
                    .json_stringify(jwks)?
                    .and_then(|s| s.to_string().ok())
                    .unwrap_or_default();
                set_jwt_keys(&k, &issuer, &jwks).map_err(|m| throw(&ctx, m))
            },
        )?,
    )?;
    let k = kv.clone();
    extra.set(
        "removeJwtPublicSigningKeys",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, issuer: String| {
            k.borrow_mut()
                .delete(JWT_ISSUER_KEYS, issuer.as_bytes())
                .map_err(|m| throw(&ctx, m))
        })?,
    )?;

    let node = Object::new(ctx.clone())?;
    let k = kv.clone();
    let cert = context.service_cert_pem.clone();
    node.set(
        "transitionServiceToOpen",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, previous: rquickjs::Value<'js>, next: rquickjs::Value<'js>| {
                let next = ArrayBuffer::from_value(next)
                    .map(|b| covenant_js::ccf::bytes(&b))
                    .ok_or_else(|| {
                        throw(&ctx, "transitionServiceToOpen: the next service identity must be an ArrayBuffer of its PEM")
                    })?;
                let previous = ArrayBuffer::from_value(previous).map(|b| covenant_js::ccf::bytes(&b));
                open_service(&k, cert.as_deref(), previous.as_deref(), &next)
                    .map_err(|m| throw(&ctx, m))
            },
        )?,
    )?;
    for (name, effect) in [
        ("triggerSnapshot", GovEffect::Snapshot),
        (
            "triggerRecoverySharesRefresh",
            GovEffect::RecoverySharesRefresh,
        ),
        ("triggerLedgerRekey", GovEffect::LedgerRekey),
    ] {
        let e = effects.clone();
        node.set(
            name,
            Function::new(ctx.clone(), move || e.borrow_mut().push(effect))?,
        )?;
    }
    for (name, why) in [
        (
            "triggerLedgerChunk",
            "covenant closes ledger chunks by size (chunk_threshold_bytes), not on request",
        ),
        ("triggerACMERefresh", "covenant has no ACME client"),
    ] {
        node.set(
            name,
            Function::new(ctx.clone(), move |ctx: Ctx<'js>| -> rquickjs::Result<()> {
                Err(throw(&ctx, format!("ccf.node.{name}: {why}")))
            })?,
        )?;
    }
    extra.set("node", node)?;

    let network = Object::new(ctx.clone())?;
    let latest = context.latest_ledger_secret_seqno.max(1);
    network.set(
        "getLatestLedgerSecretSeqno",
        Function::new(ctx.clone(), move || latest)?,
    )?;
    for (name, why) in [
        (
            "generateEndorsedCertificate",
            "covenant endorses a node's certificate itself when the node becomes Trusted (it keeps no CSR)",
        ),
        (
            "generateNetworkCertificate",
            "covenant does not renew the service certificate through governance yet",
        ),
    ] {
        network.set(
            name,
            Function::new(ctx.clone(), move |ctx: Ctx<'js>| -> rquickjs::Result<()> {
                Err(throw(&ctx, format!("ccf.network.{name}: {why}")))
            })?,
        )?;
    }
    extra.set("network", network)?;
    Ok(())
}

/// Compiles a constitution and checks its exports have CCF's arities:
/// `validate(input)`, `resolve(proposal, proposerId, votes[, proposalId])`,
/// `apply(proposal, proposalId)`.
pub fn validate_constitution(source: &str) -> Result<(), String> {
    if source.trim().is_empty() {
        return Err("the constitution is empty".into());
    }
    let bundle: covenant_js::Bundle = std::sync::Arc::new(
        [("constitution.js".to_string(), source.to_string())]
            .into_iter()
            .collect(),
    );
    let probe = r#"import * as c from "constitution.js";
export function arities() {
  const a = (f) => (typeof c[f] === "function" ? c[f].length : -1);
  return { validate: a("validate"), resolve: a("resolve"), apply: a("apply") };
}"#;
    let got = covenant_js::call_with_host(
        &covenant_js::Limits::default(),
        Some(bundle),
        "constitution-check",
        probe,
        "arities",
        &[],
        |_| Ok(()),
    )
    .map_err(|e| format!("the constitution does not load: {e}"))?;
    let arity = |f: &str| got[f].as_i64().unwrap_or(-1);
    let checks = [
        ("validate", arity("validate") == 1, "validate(input)"),
        (
            "resolve",
            matches!(arity("resolve"), 3 | 4),
            "resolve(proposal, proposerId, votes[, proposalId])",
        ),
        ("apply", arity("apply") == 2, "apply(proposal, proposalId)"),
    ];
    for (name, ok, shape) in checks {
        if !ok {
            return Err(format!(
                "the constitution must export {shape}; its {name} {}",
                if arity(name) < 0 {
                    "is missing".to_string()
                } else {
                    format!("takes {} arguments", arity(name))
                }
            ));
        }
    }
    Ok(())
}

/// CCF compiles every module into a bytecode table here; covenant checks each
/// module compiles (a broken app fails its proposal, as in CCF) and records that
/// nodes compile modules themselves.
fn refresh_bytecode(kv: &Rc<RefCell<GovKv>>) -> Result<(), String> {
    let modules: std::collections::BTreeMap<String, String> = kv
        .borrow()
        .entries(MODULES)
        .into_iter()
        .map(|(name, source)| {
            (
                String::from_utf8_lossy(&name)
                    .trim_start_matches('/')
                    .to_string(),
                String::from_utf8_lossy(&source).into_owned(),
            )
        })
        .collect();
    covenant_js::check_bundle(std::sync::Arc::new(modules))
        .map_err(|(name, e)| format!("Failed to refresh bytecode: module /{name}: {e}"))?;
    let mut kv = kv.borrow_mut();
    for (key, _) in kv.entries(MODULES_BYTECODE) {
        kv.delete(MODULES_BYTECODE, &key)?;
    }
    kv.set(MODULES_VERSION, SINGLETON_KEY, BYTECODE_VERSION.as_bytes())
}

fn set_jwt_keys(kv: &Rc<RefCell<GovKv>>, issuer: &str, jwks: &str) -> Result<(), String> {
    let doc: serde_json::Value =
        serde_json::from_str(jwks).map_err(|e| format!("setJwtPublicSigningKeys: jwks: {e}"))?;
    let keys = doc["keys"]
        .as_array()
        .filter(|k| !k.is_empty())
        .ok_or("setJwtPublicSigningKeys: jwks.keys must be a non-empty list")?;
    if keys.iter().any(|k| !k["kid"].is_string()) {
        return Err("setJwtPublicSigningKeys: every key needs a kid".into());
    }
    kv.borrow_mut().set(
        JWT_ISSUER_KEYS,
        issuer.as_bytes(),
        doc.to_string().as_bytes(),
    )
}

/// Opens the service, once the constitution named the service's own identity.
/// `transition_service_to_open`: Opening → Open; after a disaster recovery,
/// Recovering → WaitingForRecoveryShares, naming the previous identity too (the
/// shares then open the service).
fn open_service(
    kv: &Rc<RefCell<GovKv>>,
    service_cert: Option<&str>,
    previous: Option<&[u8]>,
    next: &[u8],
) -> Result<(), String> {
    let next = String::from_utf8_lossy(next);
    if let Some(cert) = service_cert {
        let same = covenant_crypto::Certificate::from_pem(&next)
            .ok()
            .zip(covenant_crypto::Certificate::from_pem(cert).ok())
            .is_some_and(|(a, b)| a.der() == b.der());
        if !same {
            return Err(
                "Unable to open service: next_service_identity is not this service's certificate"
                    .into(),
            );
        }
    }
    let mut kv = kv.borrow_mut();
    let mut info: serde_json::Value = kv
        .get(crate::SERVICE_INFO, SINGLETON_KEY)
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    let same_cert = |a: &[u8], b: &[u8]| {
        covenant_crypto::Certificate::from_pem(&String::from_utf8_lossy(a))
            .ok()
            .zip(covenant_crypto::Certificate::from_pem(&String::from_utf8_lossy(b)).ok())
            .is_some_and(|(a, b)| a.der() == b.der())
    };
    let status = info["status"].as_str().unwrap_or_default().to_string();
    let target = match status.as_str() {
        "Open" => return Ok(()),
        "WaitingForRecoveryShares" => {
            return Err("Unable to open service: it waits for the recovery members' shares".into())
        }
        "Recovering" => {
            let recorded = kv
                .get(crate::PREVIOUS_SERVICE_IDENTITY, SINGLETON_KEY)
                .unwrap_or_default();
            match previous {
                None => {
                    return Err(
                        "Unable to open service: a recovering service needs previous_service_identity"
                            .into(),
                    )
                }
                Some(p) if !same_cert(p, &recorded) => {
                    return Err("Unable to open service: previous_service_identity is not the identity of the recovered ledger".into())
                }
                Some(_) => crate::ServiceStatus::WaitingForRecoveryShares.as_str(),
            }
        }
        _ => crate::ServiceStatus::Open.as_str(),
    };
    info["status"] = serde_json::Value::String(target.into());
    kv.set(
        crate::SERVICE_INFO,
        SINGLETON_KEY,
        info.to_string().as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constitutions_need_ccf_arities() {
        let ok = "export function validate(i) { return {valid: true}; }\n\
                  export function resolve(p, m, v) { return \"Open\"; }\n\
                  export function apply(p, id) {}";
        validate_constitution(ok).unwrap();
        let bad = ok.replace("apply(p, id)", "apply(p)");
        assert!(validate_constitution(&bad).unwrap_err().contains("apply"));
        assert!(validate_constitution("export function validate(i) {")
            .unwrap_err()
            .contains("does not load"));
        assert!(validate_constitution("  ").is_err());
    }
}
