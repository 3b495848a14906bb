//! Consortium governance (SPEC §5): members propose, vote with JavaScript ballots,
//! and the constitution (JavaScript: `validate`, `resolve`, `apply`) decides.
//!
//! Everything is state in public maps with CCF's names and encodings, written by
//! ordinary transactions, so the governance history is in the ledger:
//! `public:ccf.gov.proposals` (id → the proposal as submitted),
//! `public:ccf.gov.proposals_info` (id → [`ProposalInfo`]), members in
//! `public:ccf.gov.members.{certs,info,encryption_public_keys,acks}`, the
//! constitution in `public:ccf.gov.constitution`.
//!
//! The functions here take the transaction to write into and run every script
//! through [`covenant_js`] (fresh runtime, time and memory limits). An accepted
//! proposal's `apply` runs on a buffer of writes that reaches the transaction only if
//! it succeeds, so a failing action leaves nothing behind but the Failed state.

#![forbid(unsafe_code)]

mod kv;

use std::collections::BTreeMap;

use covenant_js::{JsError, Limits};
use covenant_kv::{Store, Tx};
use covenant_types::{MemberId, SeqNo};
use serde::{Deserialize, Serialize};

pub use kv::GovKv;

pub const MEMBERS_CERTS: &str = "public:ccf.gov.members.certs";
pub const MEMBERS_INFO: &str = "public:ccf.gov.members.info";
pub const MEMBERS_ENCRYPTION_KEYS: &str = "public:ccf.gov.members.encryption_public_keys";
/// Member id → `{"state_digest"}` the member must sign to become Active.
pub const MEMBERS_ACKS: &str = "public:ccf.gov.members.acks";
pub const CONSTITUTION: &str = "public:ccf.gov.constitution";
pub const CONSTITUTION_KEY: &[u8] = b"0";
pub const PROPOSALS: &str = "public:ccf.gov.proposals";
/// The service's status (key `0`, `{"status": "Opening" | "Open", ...}`): users are
/// served only once it is Open (`transition_service_to_open`). A service without the
/// row (one created without a consortium) is open.
pub const SERVICE_INFO: &str = "public:ccf.gov.service.info";
pub const SERVICE_INFO_KEY: &[u8] = b"0";
/// The identity (certificate PEM) of the service a disaster recovery recovered
/// (CCF's name); singleton key "0".
pub const PREVIOUS_SERVICE_IDENTITY: &str = "public:ccf.gov.service.previous_service_identity";

/// Where the service is in its life, as [`SERVICE_INFO`] records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceStatus {
    /// Created; users are refused until the consortium opens it.
    Opening,
    /// `transition_service_to_open` was accepted: users are served.
    Open,
    /// A disaster recovery replayed the old ledger's public domain; members must
    /// confirm the identities with `transition_service_to_open`.
    Recovering,
    /// The members confirmed: the recovery members' shares are awaited.
    WaitingForRecoveryShares,
}

impl ServiceStatus {
    /// CCF's word for the status, as in `/node/network` and `/gov/service/info`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Opening => "Opening",
            ServiceStatus::Open => "Open",
            ServiceStatus::Recovering => "Recovering",
            ServiceStatus::WaitingForRecoveryShares => "WaitingForRecoveryShares",
        }
    }
}

impl std::fmt::Display for ServiceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The service's status; `None` when the service has no status row (one created
/// without a consortium, which is open). A row this build cannot read counts as
/// `Opening`: users are refused rather than served by mistake.
pub fn service_status(store: &Store) -> Option<ServiceStatus> {
    #[derive(Deserialize)]
    struct Row {
        status: ServiceStatus,
    }
    let raw = store.get(SERVICE_INFO, SERVICE_INFO_KEY)?;
    Some(serde_json::from_slice::<Row>(&raw).map_or(ServiceStatus::Opening, |r| r.status))
}
pub const PROPOSALS_INFO: &str = "public:ccf.gov.proposals_info";
/// Service configuration (key `0`, JSON): `join_policy` ("auto" | "pending", seeded
/// at genesis from the first node's config, changed by `set_join_policy`),
/// `join_token_sha256` (hex SHA-256 of the secret a joining node presents to be
/// trusted at once; seeded and changed the same way),
/// `recovery_threshold`, `recent_cose_proposals_window_size`.
pub const SERVICE_CONFIG: &str = "public:ccf.gov.service.config";
pub const SERVICE_CONFIG_KEY: &[u8] = b"0";
/// Issuer URL → `{issuer, jwks, audience?}` (set by `set_jwt_issuer`): tokens these
/// issuers sign authenticate users.
pub const JWT_ISSUERS: &str = "public:ccf.gov.jwt.issuers";

/// What the constitution decided for a node that asks to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinDecision {
    /// Trusted at once: it is endorsed and joins the configuration.
    Trusted,
    /// Recorded Pending until `transition_node_to_trusted` passes.
    Pending,
}

pub mod host;
pub use host::{GovContext, GovEffect, JWT_ISSUER_KEYS};

/// The constitution a new covenant service starts with (majority of active members).
pub const DEFAULT_CONSTITUTION: &str = include_str!("default_constitution.js");
/// The action table every constitution can use (`covenant.actions`).
const ACTIONS: &str = include_str!("actions.js");

/// Where a proposal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposalState {
    Open,
    Accepted,
    Withdrawn,
    Rejected,
    /// A ballot, `resolve` or `apply` threw: see [`ProposalInfo::failure`].
    Failed,
    /// Still open when the constitution changed.
    Dropped,
}

/// Why a proposal Failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// A proposal's row in [`PROPOSALS_INFO`] (CCF's shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalInfo {
    pub proposer_id: String,
    pub state: ProposalState,
    /// Member id → ballot script.
    #[serde(default)]
    pub ballots: BTreeMap<String, String>,
    /// Member id → vote, recorded once the proposal is no longer Open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_votes: Option<BTreeMap<String, bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// A member's standing: an Accepted member may not vote or propose until it acks
/// the state digest and becomes Active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberStatus {
    Accepted,
    Active,
}

/// A member's row in [`MEMBERS_INFO`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub status: MemberStatus,
    #[serde(default)]
    pub member_data: serde_json::Value,
}

/// Why governance refused a request (all of them the caller's 4xx, but `Internal`).
#[derive(Debug, thiserror::Error)]
pub enum GovError {
    #[error("{0} is not a member of the consortium")]
    NotAMember(MemberId),
    #[error("member {0} is not Active yet: it must ack the state digest first")]
    NotActive(MemberId),
    #[error("no proposal {0}")]
    NoSuchProposal(String),
    #[error("proposal {id} is {state:?}, not Open")]
    NotOpen { id: String, state: ProposalState },
    #[error("only the proposer may withdraw proposal {0}")]
    NotProposer(String),
    #[error("the proposal is invalid: {0}")]
    Invalid(String),
    #[error("the proposal is not JSON text: {0}")]
    NotJson(String),
    #[error("the ack names state digest {got}, but the member's digest is {want}")]
    WrongDigest { got: String, want: String },
    #[error("member {0} has not asked for a state digest to ack")]
    NoDigest(MemberId),
    #[error("the service has no constitution")]
    NoConstitution,
    /// The constitution's `validate` failed to run (threw, timed out): the
    /// constitution's fault, reported to the proposer.
    #[error("the constitution's validate failed: {0}")]
    Validate(JsError),
    /// The constitution's `join_policy` threw or answered something else.
    #[error("the constitution's join_policy failed: {0}")]
    JoinPolicy(String),
    #[error("governance state is corrupt: {0}")]
    Internal(String),
}

/// Runs governance with the script limits of `limits`, telling scripts what
/// `context` holds; what accepted proposals ask of the node collects in `effects`.
#[derive(Debug, Clone, Default)]
pub struct Governance {
    pub limits: Limits,
    pub context: GovContext,
    effects: std::rc::Rc<std::cell::RefCell<Vec<GovEffect>>>,
    /// Ballot results computed before the step (see [`Governance::prepare_ballots`]).
    prepared: std::rc::Rc<std::cell::RefCell<Option<PreparedBallots>>>,
}

/// The ballots of one proposal, run against the store outside the step's
/// transaction (and so outside the node's locks: a member's ballot may compute
/// for up to its time limit), with what they read. The step uses the results
/// only if the proposal, its ballots, the context and everything read are
/// unchanged when it runs; otherwise it runs the ballots again itself.
#[derive(Debug)]
pub struct PreparedBallots {
    id: String,
    body: String,
    proposer: String,
    ballots: BTreeMap<String, String>,
    context: GovContext,
    outcome: BallotOutcome,
    reads: covenant_kv::ReadSet,
}

/// Each member's vote, in member order, up to the first ballot that failed.
#[derive(Debug, Clone)]
struct BallotOutcome {
    votes: Vec<(String, bool)>,
    failure: Option<Failure>,
}

fn text(tx: &mut Tx, map: &str, key: &[u8]) -> Option<String> {
    tx.get(map, key)
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, GovError> {
    serde_json::from_slice(bytes).map_err(|e| GovError::Internal(format!("{what}: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain data structs always serialize.
    serde_json::to_vec(v).unwrap_or_default()
}

/// The member row of `id`, if it is a member.
pub fn member(tx: &mut Tx, id: &str) -> Result<Option<MemberInfo>, GovError> {
    match tx.get(MEMBERS_INFO, id.as_bytes()) {
        Some(v) => Ok(Some(decode("member info", &v)?)),
        None => Ok(None),
    }
}

/// The row of member `id`; refused if it is no member.
fn require_member(tx: &mut Tx, id: &MemberId) -> Result<MemberInfo, GovError> {
    member(tx, id.as_str())?.ok_or_else(|| GovError::NotAMember(id.clone()))
}

fn require_active(tx: &mut Tx, id: &MemberId) -> Result<(), GovError> {
    if require_member(tx, id)?.status != MemberStatus::Active {
        return Err(GovError::NotActive(id.clone()));
    }
    Ok(())
}

/// The stored proposal and its info.
pub fn proposal(tx: &mut Tx, id: &str) -> Result<(String, ProposalInfo), GovError> {
    let body = text(tx, PROPOSALS, id.as_bytes())
        .ok_or_else(|| GovError::NoSuchProposal(id.to_string()))?;
    let info = tx
        .get(PROPOSALS_INFO, id.as_bytes())
        .ok_or_else(|| GovError::Internal(format!("proposal {id} has no info")))?;
    Ok((body, decode("proposal info", &info)?))
}

/// A proposal's id: SHA-256 of the seqno it is recorded at and its text, so equal
/// proposals submitted twice get two ids.
pub fn proposal_id(seqno: SeqNo, body: &[u8]) -> String {
    covenant_crypto::sha256_concat(&[&seqno.0.to_le_bytes(), body]).to_hex()
}

impl Governance {
    /// Records a proposal by `proposer` (an Active member) after the constitution's
    /// `validate` accepted it, and resolves it once (a constitution may accept a
    /// proposal with no votes). `seqno` is the seqno the transaction will get.
    pub fn propose(
        &self,
        tx: &mut Tx,
        store: &Store,
        proposer: &MemberId,
        body: &[u8],
        seqno: SeqNo,
    ) -> Result<(String, ProposalInfo), GovError> {
        require_active(tx, proposer)?;
        let proposer = proposer.as_str();
        let text = std::str::from_utf8(body)
            .map_err(|e| GovError::NotJson(e.to_string()))?
            .to_string();
        serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| GovError::NotJson(e.to_string()))?;
        let constitution = self.constitution(tx)?;
        let verdict = self
            .run(
                store,
                tx,
                &constitution,
                "validate",
                &[serde_json::Value::String(text.clone())],
                false,
            )
            .map_err(GovError::Validate)?
            .0;
        if verdict["valid"] != serde_json::Value::Bool(true) {
            let why = verdict["description"]
                .as_str()
                .unwrap_or("the constitution's validate refused it")
                .to_string();
            return Err(GovError::Invalid(why));
        }
        let id = proposal_id(seqno, body);
        tx.put(PROPOSALS, id.as_bytes(), text.as_bytes());
        let info = ProposalInfo {
            proposer_id: proposer.to_string(),
            state: ProposalState::Open,
            ballots: BTreeMap::new(),
            final_votes: None,
            failure: None,
        };
        let info = self.resolve(tx, store, &id, &text, info, &constitution)?;
        Ok((id, info))
    }

    /// Runs the ballots proposal `id` would have once `vote` (a member and its
    /// ballot) is recorded, against `store` as it is now, for a later step's
    /// [`Governance::use_prepared`]. `None` when there is nothing to run (no such
    /// Open proposal): the step itself then answers.
    pub fn prepare_ballots(
        &self,
        store: &Store,
        id: &str,
        vote: Option<(&MemberId, &str)>,
    ) -> Option<PreparedBallots> {
        let mut tx = store.begin();
        let (body, mut info) = proposal(&mut tx, id).ok()?;
        if info.state != ProposalState::Open {
            return None;
        }
        if let Some((member, ballot)) = vote {
            info.ballots
                .insert(member.as_str().to_string(), ballot.to_string());
        }
        let (outcome, reads) = self.run_ballots(store, &tx, &body, &info);
        Some(PreparedBallots {
            id: id.to_string(),
            body,
            proposer: info.proposer_id,
            ballots: info.ballots,
            context: self.context.clone(),
            outcome,
            reads,
        })
    }

    /// Offers results of [`Governance::prepare_ballots`] to the next resolution.
    pub fn use_prepared(&self, prepared: PreparedBallots) {
        *self.prepared.borrow_mut() = Some(prepared);
    }

    /// Records `member`'s ballot on proposal `id` and resolves the proposal again
    /// with every ballot.
    pub fn vote(
        &self,
        tx: &mut Tx,
        store: &Store,
        member: &MemberId,
        id: &str,
        ballot: &str,
    ) -> Result<ProposalInfo, GovError> {
        require_active(tx, member)?;
        let member = member.as_str();

        let (body, mut info) = proposal(tx, id)?;
        if info.state != ProposalState::Open {
            return Err(GovError::NotOpen {
                id: id.to_string(),
                state: info.state,
            });
        }
        info.ballots.insert(member.to_string(), ballot.to_string());
        let constitution = self.constitution(tx)?;
        self.resolve(tx, store, id, &body, info, &constitution)
    }

    /// The proposer takes back an Open proposal.
    pub fn withdraw(
        &self,
        tx: &mut Tx,
        member: &MemberId,
        id: &str,
    ) -> Result<ProposalInfo, GovError> {
        require_member(tx, member)?;
        let (_, mut info) = proposal(tx, id)?;
        if info.proposer_id != member.as_str() {
            return Err(GovError::NotProposer(id.to_string()));
        }
        if info.state != ProposalState::Open {
            return Err(GovError::NotOpen {
                id: id.to_string(),
                state: info.state,
            });
        }
        info.state = ProposalState::Withdrawn;
        tx.put(PROPOSALS_INFO, id.as_bytes(), &encode(&info));
        Ok(info)
    }

    /// Step one of a member's activation: the digest it must sign and send back
    /// (`digest` is the caller's choice: the current state's Merkle root).
    pub fn update_state_digest(
        &self,
        tx: &mut Tx,
        member: &MemberId,
        digest: &str,
    ) -> Result<(), GovError> {
        require_member(tx, member)?;
        let row = serde_json::json!({ "state_digest": digest });
        tx.put(
            MEMBERS_ACKS,
            member.as_str().as_bytes(),
            row.to_string().as_bytes(),
        );
        Ok(())
    }

    /// Step two: the member acks the digest it was given and becomes Active.
    pub fn ack(
        &self,
        tx: &mut Tx,
        member: &MemberId,
        digest: &str,
    ) -> Result<MemberInfo, GovError> {
        let mut info = require_member(tx, member)?;
        let (who, member) = (member, member.as_str());
        let want = tx
            .get(MEMBERS_ACKS, member.as_bytes())
            .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
            .and_then(|v| v["state_digest"].as_str().map(str::to_string))
            .ok_or_else(|| GovError::NoDigest(who.clone()))?;
        if want != digest {
            return Err(GovError::WrongDigest {
                got: digest.to_string(),
                want,
            });
        }
        info.status = MemberStatus::Active;
        tx.put(MEMBERS_INFO, member.as_bytes(), &encode(&info));
        Ok(info)
    }

    /// Asks the constitution about a node asking to join: its optional export
    /// `join_policy(node)` returns "Trusted" or "Pending"; a constitution without it
    /// leaves every joining node Pending (as CCF does). `node` is the node's row as
    /// it would be recorded, plus its `node_id`.
    pub fn join_decision(
        &self,
        store: &Store,
        node: &serde_json::Value,
    ) -> Result<JoinDecision, GovError> {
        let tx = store.begin();
        let constitution = self.constitution(&mut store.begin())?;
        match self.run(
            store,
            &tx,
            &constitution,
            "join_policy",
            std::slice::from_ref(node),
            false,
        ) {
            Ok((serde_json::Value::String(s), _)) if s == "Trusted" => Ok(JoinDecision::Trusted),
            Ok((serde_json::Value::String(s), _)) if s == "Pending" => Ok(JoinDecision::Pending),
            Ok((other, _)) => Err(GovError::JoinPolicy(format!(
                "returned {other}, not \"Trusted\" or \"Pending\""
            ))),
            Err(JsError::NoSuchFunction { .. }) => Ok(JoinDecision::Pending),
            Err(e) => Err(GovError::JoinPolicy(e.to_string())),
        }
    }

    /// Governance for a service whose certificate is `service_cert_pem`.
    pub fn for_service(service_cert_pem: Option<String>) -> Governance {
        Governance {
            context: GovContext {
                service_cert_pem,
                latest_ledger_secret_seqno: 1,
            },
            ..Governance::default()
        }
    }

    /// What the proposals accepted so far asked of the node (see [`GovEffect`]).
    pub fn take_effects(&self) -> Vec<GovEffect> {
        std::mem::take(&mut self.effects.borrow_mut())
    }

    fn constitution(&self, tx: &mut Tx) -> Result<String, GovError> {
        text(tx, CONSTITUTION, CONSTITUTION_KEY).ok_or(GovError::NoConstitution)
    }

    /// Runs `function` of `module` with the governance host (ccf.kv over the store
    /// and `tx`'s writes, writable when `write`); returns the result and the writes.
    fn run(
        &self,
        store: &Store,
        tx: &Tx,
        module: &str,
        function: &str,
        args: &[serde_json::Value],
        write: bool,
    ) -> Result<(serde_json::Value, GovKv), JsError> {
        let (out, kv) = self.run_keeping_reads(store, tx, module, function, args, write);
        out.map(|v| (v, kv))
    }

    /// [`Governance::run`], giving back the script's view of the maps (what it
    /// read) whether it succeeded or not.
    fn run_keeping_reads(
        &self,
        store: &Store,
        tx: &Tx,
        module: &str,
        function: &str,
        args: &[serde_json::Value],
        write: bool,
    ) -> (Result<serde_json::Value, JsError>, GovKv) {
        let kv = std::rc::Rc::new(std::cell::RefCell::new(GovKv::new(
            store.clone(),
            tx.write_set().clone(),
            kv::policy(write),
        )));
        let host_kv = kv.clone();
        let context = self.context.clone();
        let effects = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let host_effects = effects.clone();
        let out = covenant_js::call_with_host(
            &self.limits,
            None,
            if function == "vote" {
                "ballot"
            } else {
                "constitution"
            },
            module,
            function,
            args,
            move |ctx| {
                // ccf.pemToId (and ccf.crypto) come with covenant-js's ccf; CCF's
                // governance host functions with host::install.
                let tables: covenant_js::ccf::SharedKv<'_> =
                    std::rc::Rc::new(std::cell::RefCell::new(host::CcfTables(
                        host_kv.clone(),
                        context.service_cert_pem.clone(),
                    )));
                covenant_js::ccf::install_with(ctx, tables, |extra| {
                    host::install(ctx, extra, host_kv, &context, host_effects, write)
                })?;
                ctx.eval::<(), _>(ACTIONS)
            },
        );
        // Effects count only from an apply that succeeded (its writes are kept).
        if out.is_ok() {
            self.effects.borrow_mut().extend(effects.take());
        }
        (out, GovKv::take(kv))
    }

    /// Evaluates every ballot, asks `resolve`, applies an accepted proposal, and
    /// records the outcome (a script that throws makes the proposal Failed).
    fn resolve(
        &self,
        tx: &mut Tx,
        store: &Store,
        id: &str,
        body: &str,
        mut info: ProposalInfo,
        constitution: &str,
    ) -> Result<ProposalInfo, GovError> {
        let raw = serde_json::Value::String(body.to_string());
        let proposer = serde_json::Value::String(info.proposer_id.clone());
        let prepared = self.prepared.borrow_mut().take().filter(|p| {
            p.id == id
                && p.body == body
                && p.proposer == info.proposer_id
                && p.ballots == info.ballots
                && p.context == self.context
                && !p.reads.overlaps(tx.write_set())
                && store.validate(&p.reads).is_ok()
        });
        let BallotOutcome { votes, mut failure } = match prepared {
            Some(p) => p.outcome,
            None => self.run_ballots(store, tx, body, &info).0,
        };
        if failure.is_none() {
            let js_votes: Vec<serde_json::Value> = votes
                .iter()
                .map(|(m, v)| serde_json::json!({"member_id": m, "vote": v}))
                .collect();
            match self.run(
                store,
                tx,
                constitution,
                "resolve",
                &[raw.clone(), proposer, serde_json::Value::Array(js_votes)],
                false,
            ) {
                Ok((serde_json::Value::String(s), _)) if s == "Open" => {}
                Ok((serde_json::Value::String(s), _)) if s == "Rejected" => {
                    info.state = ProposalState::Rejected;
                }
                Ok((serde_json::Value::String(s), _)) if s == "Accepted" => {
                    match self.run(
                        store,
                        tx,
                        constitution,
                        "apply",
                        &[raw, serde_json::Value::String(id.to_string())],
                        true,
                    ) {
                        Ok((_, writes)) => {
                            let constitution_changed = writes.writes_to(CONSTITUTION);
                            writes.apply_to(tx);
                            info.state = ProposalState::Accepted;
                            if constitution_changed {
                                drop_open_proposals(tx, store, id)?;
                            }
                        }
                        Err(e) => {
                            failure = Some(Failure {
                                reason: format!("applying the proposal failed: {e}"),
                                trace: e.stack().map(str::to_string),
                            })
                        }
                    }
                }
                Ok((other, _)) => {
                    failure = Some(Failure {
                        reason: format!(
                            "the constitution's resolve returned {other}, not \"Open\", \"Accepted\" or \"Rejected\""
                        ),
                        trace: None,
                    })
                }
                Err(e) => {
                    failure = Some(Failure {
                        reason: format!("the constitution's resolve failed: {e}"),
                        trace: e.stack().map(str::to_string),
                    })
                }
            }
        }
        if let Some(f) = failure {
            info.state = ProposalState::Failed;
            info.failure = Some(f);
        }
        if info.state != ProposalState::Open {
            info.final_votes = Some(votes.into_iter().collect());
        }
        tx.put(PROPOSALS_INFO, id.as_bytes(), &encode(&info));
        Ok(info)
    }

    /// Runs every ballot of `info` on `body` (in member order, stopping at the
    /// first that fails), with what they read.
    fn run_ballots(
        &self,
        store: &Store,
        tx: &Tx,
        body: &str,
        info: &ProposalInfo,
    ) -> (BallotOutcome, covenant_kv::ReadSet) {
        let raw = serde_json::Value::String(body.to_string());
        let proposer = serde_json::Value::String(info.proposer_id.clone());
        let mut reads = covenant_kv::ReadSet::default();
        let mut votes = Vec::new();
        let mut failure = None;
        for (member, ballot) in &info.ballots {
            let (ran, kv) = self.run_keeping_reads(
                store,
                tx,
                ballot,
                "vote",
                &[raw.clone(), proposer.clone()],
                false,
            );
            reads.extend(&kv.reads());
            match ran {
                Ok(serde_json::Value::Bool(v)) => votes.push((member.clone(), v)),
                Ok(other) => {
                    failure = Some(Failure {
                        reason: format!("the ballot of {member} returned {other}, not a boolean"),
                        trace: None,
                    });
                    break;
                }
                Err(e) => {
                    failure = Some(Failure {
                        reason: format!("the ballot of {member} failed: {e}"),
                        trace: e.stack().map(str::to_string),
                    });
                    break;
                }
            }
        }
        (BallotOutcome { votes, failure }, reads)
    }
}

/// After the constitution changed, proposals still Open were judged by the old
/// one: they become Dropped.
fn drop_open_proposals(tx: &mut Tx, store: &Store, except: &str) -> Result<(), GovError> {
    let ids: Vec<Vec<u8>> = store
        .entries(PROPOSALS_INFO)
        .into_iter()
        .map(|(k, _)| k)
        .chain(
            tx.write_set()
                .maps
                .get(PROPOSALS_INFO)
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default(),
        )
        .collect();
    for key in ids {
        if key == except.as_bytes() {
            continue;
        }
        if let Some(v) = tx.get(PROPOSALS_INFO, &key) {
            let mut info: ProposalInfo = decode("proposal info", &v)?;
            if info.state == ProposalState::Open {
                info.state = ProposalState::Dropped;
                tx.put(PROPOSALS_INFO, &key, &encode(&info));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use covenant_types::View;

    const SCRATCH: &str = "public:ccf.gov.scratch";
    /// Votes yes while the scratch key is absent.
    const WHILE_ABSENT: &str = "export function vote(p, who) { \
        return ccf.kv['public:ccf.gov.scratch'].get(ccf.strToBuf('k')) === undefined; }";
    const NO: &str = "export function vote(p, who) { return false; }";

    /// A store with the default constitution, one active member (whose vote
    /// decides) and one open proposal from it; the member and the proposal id.
    fn consortium(gov: &Governance) -> (Store, MemberId, String) {
        let store = Store::new();
        let mut tx = store.begin();
        let member = MemberId::new(format!("{:064x}", 7));
        let row = serde_json::json!({"status": "Active", "member_data": null});
        tx.put(
            MEMBERS_INFO,
            member.as_str().as_bytes(),
            row.to_string().as_bytes(),
        );
        tx.put(
            CONSTITUTION,
            CONSTITUTION_KEY,
            DEFAULT_CONSTITUTION.as_bytes(),
        );
        store.commit(tx, View(1)).unwrap();
        let mut tx = store.begin();
        let body = serde_json::json!({"actions": [{"name": "trigger_recovery_shares_refresh", "args": {}}]});
        let (id, _) = gov
            .propose(
                &mut tx,
                &store,
                &member,
                body.to_string().as_bytes(),
                SeqNo(2),
            )
            .unwrap();
        store.commit(tx, View(1)).unwrap();
        (store, member, id)
    }

    fn vote(
        gov: &Governance,
        store: &Store,
        m: &MemberId,
        id: &str,
        ballot: &str,
    ) -> ProposalState {
        let mut tx = store.begin();
        let info = gov.vote(&mut tx, store, m, id, ballot).unwrap();
        store.commit(tx, View(1)).unwrap();
        info.state
    }

    /// A fresh consortium and its proposal, with the member's `WHILE_ABSENT`
    /// ballot prepared.
    fn prepared(gov: &Governance) -> (Store, MemberId, String, PreparedBallots) {
        let (store, member, id) = consortium(gov);
        let p = gov
            .prepare_ballots(&store, &id, Some((&member, WHILE_ABSENT)))
            .unwrap();
        (store, member, id, p)
    }

    /// Results prepared outside the step stand while what the ballots read is
    /// unchanged (shown by a doctored result the step then follows), and are run
    /// again once it changed or the ballots differ.
    #[test]
    fn prepared_ballots_are_used_only_while_they_still_hold() {
        let gov = Governance::default();
        let (store, member, id, mut p) = prepared(&gov);
        assert_eq!(p.outcome.votes, vec![(member.as_str().to_string(), true)]);
        p.outcome.votes[0].1 = false;
        gov.use_prepared(p);
        assert_eq!(
            vote(&gov, &store, &member, &id, WHILE_ABSENT),
            ProposalState::Rejected
        );

        // The key the ballot read is written after it ran: run again (no).
        let (store, member, id, p) = prepared(&gov);
        assert!(p.outcome.votes[0].1);
        let mut tx = store.begin();
        tx.put(SCRATCH, b"k", b"v");
        store.commit(tx, View(1)).unwrap();
        gov.use_prepared(p);
        assert_eq!(
            vote(&gov, &store, &member, &id, WHILE_ABSENT),
            ProposalState::Rejected
        );

        // Prepared for another ballot than the one voted: run again (no).
        let (store, member, id, p) = prepared(&gov);
        gov.use_prepared(p);
        assert_eq!(
            vote(&gov, &store, &member, &id, NO),
            ProposalState::Rejected
        );

        // And unchanged, the prepared yes stands.
        let (store, member, id, p) = prepared(&gov);
        gov.use_prepared(p);
        assert_eq!(
            vote(&gov, &store, &member, &id, WHILE_ABSENT),
            ProposalState::Accepted
        );
    }
}
