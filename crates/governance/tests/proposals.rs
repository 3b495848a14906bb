//! Governance over a real store with the default constitution: three members,
//! proposals accepted, rejected, withdrawn, failed and dropped; activation by ack.

use covenant_crypto::{generate_client_identity, Certificate, Curve};
use covenant_governance::{
    proposal, GovError, Governance, ProposalState, CONSTITUTION, CONSTITUTION_KEY,
    DEFAULT_CONSTITUTION, MEMBERS_CERTS, MEMBERS_INFO,
};
use covenant_kv::Store;
use covenant_types::MemberId;
use covenant_types::SeqNo;
use covenant_types::View;
use serde_json::json;

const USERS_INFO: &str = "public:ccf.gov.users.info";

struct Consortium {
    store: Store,
    gov: Governance,
    members: Vec<MemberId>,
}

fn commit(store: &Store, tx: covenant_kv::Tx) {
    store.commit(tx, View(1)).unwrap();
}

impl Consortium {
    fn new(active: usize, accepted: usize) -> Consortium {
        let store = Store::new();
        let mut tx = store.begin();
        let mut members = Vec::new();
        for i in 0..active + accepted {
            let (_, cert) = generate_client_identity(&format!("member{i}"), Curve::P384).unwrap();
            let id = cert.member_id();
            let status = if i < active { "Active" } else { "Accepted" };
            tx.put(MEMBERS_CERTS, id.as_bytes(), cert.to_pem().as_bytes());
            tx.put(
                MEMBERS_INFO,
                id.as_bytes(),
                json!({"status": status, "member_data": null})
                    .to_string()
                    .as_bytes(),
            );
            members.push(MemberId::new(id));
        }
        tx.put(
            CONSTITUTION,
            CONSTITUTION_KEY,
            DEFAULT_CONSTITUTION.as_bytes(),
        );
        commit(&store, tx);
        Consortium {
            store,
            gov: Governance::default(),
            members,
        }
    }

    fn propose(
        &self,
        by: usize,
        body: serde_json::Value,
    ) -> Result<(String, ProposalState), GovError> {
        let mut tx = self.store.begin();
        let seqno = self.store.last_seqno().0 + 1;
        let r = self.gov.propose(
            &mut tx,
            &self.store,
            &self.members[by],
            body.to_string().as_bytes(),
            SeqNo(seqno),
        );
        if r.is_ok() {
            commit(&self.store, tx);
        }
        r.map(|(id, info)| (id, info.state))
    }

    fn vote(
        &self,
        by: usize,
        id: &str,
        ballot: &str,
    ) -> Result<covenant_governance::ProposalInfo, GovError> {
        let mut tx = self.store.begin();
        let r = self
            .gov
            .vote(&mut tx, &self.store, &self.members[by], id, ballot);
        if r.is_ok() {
            commit(&self.store, tx);
        }
        r
    }

    fn info(&self, id: &str) -> covenant_governance::ProposalInfo {
        proposal(&mut self.store.begin(), id).unwrap().1
    }
}

const YES: &str = "export function vote(proposal, proposerId) { return true; }";
const NO: &str = "export function vote(proposal, proposerId) { return false; }";

fn user_cert() -> Certificate {
    generate_client_identity("user1", Curve::P384).unwrap().1
}

fn set_user(cert: &Certificate) -> serde_json::Value {
    json!({"actions": [{"name": "set_user", "args": {"cert": cert.to_pem(), "user_data": {"assignedRoles": ["Contributor"]}}}]})
}

#[test]
fn a_majority_accepts_and_the_action_applies() {
    let c = Consortium::new(3, 0);
    let user = user_cert();
    let (id, state) = c.propose(0, set_user(&user)).unwrap();
    assert_eq!(state, ProposalState::Open);
    assert_eq!(c.vote(0, &id, YES).unwrap().state, ProposalState::Open);
    // A ballot may inspect the proposal.
    let picky =
        "export function vote(p, who) { return JSON.parse(p).actions[0].name === 'set_user'; }";
    let info = c.vote(1, &id, picky).unwrap();
    assert_eq!(info.state, ProposalState::Accepted);
    assert_eq!(info.final_votes.unwrap().len(), 2);
    let row = c
        .store
        .get(USERS_INFO, user.member_id().as_bytes())
        .unwrap();
    let row: serde_json::Value = serde_json::from_slice(&row).unwrap();
    assert_eq!(
        row,
        json!({"user_data": {"assignedRoles": ["Contributor"]}})
    );
    assert!(matches!(c.vote(2, &id, YES), Err(GovError::NotOpen { .. })));
}

#[test]
fn rejected_and_withdrawn_proposals_change_nothing() {
    let c = Consortium::new(3, 0);
    let user = user_cert();
    let (id, _) = c.propose(0, set_user(&user)).unwrap();
    c.vote(1, &id, NO).unwrap();
    assert_eq!(c.vote(2, &id, NO).unwrap().state, ProposalState::Rejected);
    let (id2, _) = c.propose(0, set_user(&user)).unwrap();
    assert_ne!(id, id2);
    assert!(matches!(
        c.gov.withdraw(&mut c.store.begin(), &c.members[1], &id2),
        Err(GovError::NotProposer(_))
    ));
    let mut tx = c.store.begin();
    assert_eq!(
        c.gov.withdraw(&mut tx, &c.members[0], &id2).unwrap().state,
        ProposalState::Withdrawn
    );
    commit(&c.store, tx);
    assert!(matches!(
        c.vote(1, &id2, YES),
        Err(GovError::NotOpen { .. })
    ));
    assert!(c
        .store
        .get(USERS_INFO, user.member_id().as_bytes())
        .is_none());
}

#[test]
fn bad_ballots_and_constitution_errors_fail_the_proposal_cleanly() {
    let c = Consortium::new(3, 0);
    let user = user_cert();
    for (ballot, needle) in [
        (
            "export function vote() { throw new Error('I object'); }",
            "I object",
        ),
        ("export function vote() { for (;;) {} }", "limit"),
        ("export function vote() { return 'yes'; }", "not a boolean"),
        ("this is not javascript", "ballot"),
    ] {
        let (id, _) = c.propose(0, set_user(&user)).unwrap();
        let info = c.vote(1, &id, ballot).unwrap();
        assert_eq!(info.state, ProposalState::Failed, "{ballot}");
        let reason = info.failure.unwrap().reason;
        assert!(reason.contains(needle), "{ballot}: {reason}");
    }
    assert!(c
        .store
        .get(USERS_INFO, user.member_id().as_bytes())
        .is_none());
    // The service is healthy: the next proposal goes through.
    let (id, _) = c.propose(0, set_user(&user)).unwrap();
    c.vote(0, &id, YES).unwrap();
    assert_eq!(c.vote(1, &id, YES).unwrap().state, ProposalState::Accepted);

    // A constitution whose apply throws: Failed, and none of its writes remain.
    let broken = DEFAULT_CONSTITUTION.replace(
        "export function apply(proposal, proposalId) {",
        "export function apply(proposal, proposalId) {\n  ccf.kv['public:ccf.gov.members.info'].delete(ccf.strToBuf('x'));\n  throw new Error('apply is broken');",
    );
    let (id, _) = c
        .propose(
            0,
            json!({"actions": [{"name": "set_constitution", "args": {"constitution": broken}}]}),
        )
        .unwrap();
    c.vote(0, &id, YES).unwrap();
    assert_eq!(c.vote(1, &id, YES).unwrap().state, ProposalState::Accepted);
    let (id, _) = c
        .propose(
            0,
            set_user(&generate_client_identity("u2", Curve::P384).unwrap().1),
        )
        .unwrap();
    c.vote(0, &id, YES).unwrap();
    let info = c.vote(1, &id, YES).unwrap();
    assert_eq!(info.state, ProposalState::Failed);
    assert!(info.failure.unwrap().reason.contains("apply is broken"));
}

#[test]
fn invalid_proposals_are_refused_with_the_constitutions_reason() {
    let c = Consortium::new(1, 1);
    for (body, needle) in [
        (json!({"actions": []}), "non-empty"),
        (
            json!({"actions": [{"name": "no_such_action"}]}),
            "unknown action",
        ),
        (
            json!({"actions": [{"name": "set_user", "args": {"cert": "not a pem"}}]}),
            "PEM",
        ),
        (
            json!({"actions": [{"name": "set_user", "args": {"cert": user_cert().to_pem(), "user_data": {"assignedRoles": ["Owner"]}}}]}),
            "roles",
        ),
    ] {
        match c.propose(0, body.clone()) {
            Err(GovError::Invalid(why)) => assert!(why.contains(needle), "{body}: {why}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    let mut tx = c.store.begin();
    assert!(matches!(
        c.gov
            .propose(&mut tx, &c.store, &c.members[0], b"{not json", SeqNo(9)),
        Err(GovError::NotJson(_))
    ));
    // An Accepted member neither proposes nor votes; nor does a stranger.
    assert!(matches!(
        c.propose(1, set_user(&user_cert())),
        Err(GovError::NotActive(_))
    ));
    assert!(matches!(
        c.gov
            .propose(&mut tx, &c.store, &MemberId::new("0123"), b"{}", SeqNo(9)),
        Err(GovError::NotAMember(_))
    ));
}

#[test]
fn a_member_becomes_active_by_acking_its_state_digest() {
    let c = Consortium::new(1, 1);
    let m = &c.members[1];
    let mut tx = c.store.begin();
    assert!(matches!(
        c.gov.ack(&mut tx, m, "ab"),
        Err(GovError::NoDigest(_))
    ));
    c.gov.update_state_digest(&mut tx, m, "abcd").unwrap();
    assert!(matches!(
        c.gov.ack(&mut tx, m, "ffff"),
        Err(GovError::WrongDigest { .. })
    ));
    assert_eq!(
        c.gov.ack(&mut tx, m, "abcd").unwrap().status,
        covenant_governance::MemberStatus::Active
    );
    commit(&c.store, tx);
    // Now two active members: one vote is no longer a majority.
    let (id, _) = c.propose(1, set_user(&user_cert())).unwrap();
    assert_eq!(c.vote(1, &id, YES).unwrap().state, ProposalState::Open);
    assert_eq!(c.vote(0, &id, YES).unwrap().state, ProposalState::Accepted);
}

#[test]
fn a_new_constitution_drops_the_proposals_still_open() {
    let c = Consortium::new(1, 0);
    let (open, _) = c.propose(0, set_user(&user_cert())).unwrap();
    let (id, _) = c
        .propose(0, json!({"actions": [{"name": "set_constitution", "args": {"constitution": DEFAULT_CONSTITUTION}}]}))
        .unwrap();
    assert_eq!(c.vote(0, &id, YES).unwrap().state, ProposalState::Accepted);
    assert_eq!(c.info(&open).state, ProposalState::Dropped);
}

#[test]
fn member_actions_and_scripts_cannot_write_outside_governance() {
    let c = Consortium::new(1, 0);
    let (_, new_member) = generate_client_identity("member9", Curve::P384).unwrap();
    let (id, _) = c
        .propose(0, json!({"actions": [{"name": "set_member", "args": {"cert": new_member.to_pem(), "member_data": {"role": "operator"}}}]}))
        .unwrap();
    assert_eq!(c.vote(0, &id, YES).unwrap().state, ProposalState::Accepted);
    let row = c
        .store
        .get(MEMBERS_INFO, new_member.member_id().as_bytes())
        .unwrap();
    let row: serde_json::Value = serde_json::from_slice(&row).unwrap();
    assert_eq!(
        row,
        json!({"status": "Accepted", "member_data": {"role": "operator"}})
    );
    // A ballot that tries to write is refused (Failed), as is an apply writing app data.
    let (id, _) = c.propose(0, set_user(&user_cert())).unwrap();
    let sneaky = "export function vote() { ccf.kv['public:ccf.gov.users.info'].set(ccf.strToBuf('x'), ccf.strToBuf('y')); return true; }";
    let info = c.vote(0, &id, sneaky).unwrap();
    assert_eq!(info.state, ProposalState::Failed);
    assert!(info.failure.unwrap().reason.contains("read-only"));
}

fn accept(c: &Consortium, body: serde_json::Value) -> covenant_governance::ProposalInfo {
    let (id, _) = c.propose(0, body).unwrap();
    c.vote(0, &id, YES).unwrap();
    c.vote(1, &id, YES).unwrap()
}

#[test]
fn the_constitution_decides_how_joining_nodes_are_admitted() {
    use covenant_governance::JoinDecision;
    let c = Consortium::new(3, 0);
    let node = json!({"node_id": "ab", "status": "Pending", "cert": "PEM"});
    // No join_policy recorded: the default constitution keeps joiners Pending.
    assert_eq!(
        c.gov.join_decision(&c.store, &node).unwrap(),
        JoinDecision::Pending
    );
    let digest = "ab".repeat(32);
    let auto = json!({"actions": [{"name": "set_join_policy",
        "args": {"join_policy": "auto", "join_token_sha256": digest}}]});
    assert_eq!(accept(&c, auto).state, ProposalState::Accepted);
    let config = |c: &Consortium| -> serde_json::Value {
        serde_json::from_slice(&c.store.get("public:ccf.gov.service.config", b"0").unwrap())
            .unwrap()
    };
    assert_eq!(config(&c)["join_token_sha256"], json!(digest));
    // "auto" trusts at once only a node that presented the join token.
    assert_eq!(
        c.gov.join_decision(&c.store, &node).unwrap(),
        JoinDecision::Pending
    );
    let with_token = json!({"node_id": "ab", "status": "Pending", "cert": "PEM",
        "join_token_verified": true});
    assert_eq!(
        c.gov.join_decision(&c.store, &with_token).unwrap(),
        JoinDecision::Trusted
    );
    // Changing the policy alone keeps the digest; null removes it.
    let keep = json!({"actions": [{"name": "set_join_policy", "args": {"join_policy": "auto"}}]});
    assert_eq!(accept(&c, keep).state, ProposalState::Accepted);
    assert_eq!(config(&c)["join_token_sha256"], json!(digest));
    let drop = json!({"actions": [{"name": "set_join_policy",
        "args": {"join_policy": "pending", "join_token_sha256": null}}]});
    assert_eq!(accept(&c, drop).state, ProposalState::Accepted);
    assert!(config(&c).get("join_token_sha256").is_none());
    assert_eq!(
        c.gov.join_decision(&c.store, &with_token).unwrap(),
        JoinDecision::Pending
    );
    for bad in [
        json!({"join_policy": "sometimes"}),
        json!({"join_policy": "auto", "join_token_sha256": "not hex"}),
        json!({"join_policy": "auto", "join_token_sha256": "AB".repeat(32)}),
    ] {
        let bad = json!({"actions": [{"name": "set_join_policy", "args": bad}]});
        assert!(matches!(c.propose(0, bad), Err(GovError::Invalid(_))));
    }

    // A constitution may decide by the node itself; one without join_policy keeps
    // every joiner Pending; one whose join_policy throws refuses the join.
    let set = |script: &str| {
        let mut tx = c.store.begin();
        tx.put(CONSTITUTION, CONSTITUTION_KEY, script.as_bytes());
        commit(&c.store, tx);
    };
    set("export function join_policy(n) { return n.node_id === 'ab' ? 'Trusted' : 'Pending'; }");
    assert_eq!(
        c.gov.join_decision(&c.store, &node).unwrap(),
        JoinDecision::Trusted
    );
    assert_eq!(
        c.gov
            .join_decision(&c.store, &json!({"node_id": "cd"}))
            .unwrap(),
        JoinDecision::Pending
    );
    set("export function validate() {}");
    assert_eq!(
        c.gov.join_decision(&c.store, &node).unwrap(),
        JoinDecision::Pending
    );
    set("export function join_policy() { throw new Error('no joins today'); }");
    let e = c.gov.join_decision(&c.store, &node).unwrap_err();
    assert!(e.to_string().contains("no joins today"), "{e}");
    set("export function join_policy() { return 7; }");
    assert!(c.gov.join_decision(&c.store, &node).is_err());
}

#[test]
fn jwt_issuers_are_validated_and_recorded_with_their_keys() {
    let c = Consortium::new(3, 0);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]});
    let set = json!({"actions": [{"name": "set_jwt_issuer",
        "args": {"issuer": "https://login.test", "jwks": jwks, "audience": "app"}}]});
    assert_eq!(accept(&c, set).state, ProposalState::Accepted);
    let row = c
        .store
        .get(covenant_governance::JWT_ISSUERS, b"https://login.test")
        .unwrap();
    let row: serde_json::Value = serde_json::from_slice(&row).unwrap();
    assert_eq!(row["jwks"]["keys"][0]["kid"], json!("k1"));
    assert_eq!(row["audience"], json!("app"));
    // As in CCF, an issuer may be set first and its keys later.
    let bare =
        json!({"actions": [{"name": "set_jwt_issuer", "args": {"issuer": "https://later.test"}}]});
    assert_eq!(accept(&c, bare).state, ProposalState::Accepted);
    let keys = json!({"actions": [{"name": "set_jwt_public_signing_keys",
        "args": {"issuer": "https://later.test", "jwks": jwks}}]});
    assert_eq!(accept(&c, keys).state, ProposalState::Accepted);
    let row: serde_json::Value = serde_json::from_slice(
        &c.store
            .get(covenant_governance::JWT_ISSUERS, b"https://later.test")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(row["jwks"]["keys"][0]["kid"], json!("k1"));
    let orphan = json!({"actions": [{"name": "set_jwt_public_signing_keys",
        "args": {"issuer": "https://nobody.test", "jwks": jwks}}]});
    assert_eq!(accept(&c, orphan).state, ProposalState::Failed);
    for (what, args) in [
        (
            "empty keys",
            json!({"issuer": "https://x.test", "jwks": {"keys": []}}),
        ),
        (
            "symmetric",
            json!({"issuer": "https://x.test", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}),
        ),
        (
            "auto refresh",
            json!({"issuer": "https://x.test", "jwks": jwks, "auto_refresh": true}),
        ),
    ] {
        let body = json!({"actions": [{"name": "set_jwt_issuer", "args": args}]});
        assert!(
            matches!(c.propose(0, body), Err(GovError::Invalid(_))),
            "{what}"
        );
    }
    let remove = json!({"actions": [{"name": "remove_jwt_issuer", "args": {"issuer": "https://login.test"}}]});
    assert_eq!(accept(&c, remove).state, ProposalState::Accepted);
    assert!(c
        .store
        .get(covenant_governance::JWT_ISSUERS, b"https://login.test")
        .is_none());
}

/// A constitution in CCF's style: single-row tables keyed by 8 zero bytes, the
/// constitution written as a JSON string, the snapshot host call, and a
/// transition to open that must name the service's certificate.
const CCF_STYLE: &str = r#"
const S = new ArrayBuffer(8);
export function validate(input) { return { valid: true, description: "" }; }
export function resolve(proposal, proposerId, votes, proposalId) {
  return votes.filter((v) => v.vote).length >= 1 ? "Accepted" : "Open";
}
export function apply(proposal, proposalId) {
  for (const a of JSON.parse(proposal).actions) {
    if (a.name === "config") {
      const cfg = ccf.bufToJsonCompatible(ccf.kv["public:ccf.gov.service.config"].get(S));
      cfg.recent_cose_proposals_window_size = a.args.n;
      ccf.kv["public:ccf.gov.service.config"].set(S, ccf.jsonCompatibleToBuf(cfg));
    } else if (a.name === "set_constitution") {
      ccf.gov.validateConstitution(a.args.constitution);
      ccf.kv["public:ccf.gov.constitution"].set(S, ccf.jsonCompatibleToBuf(a.args.constitution));
    } else if (a.name === "snapshot") {
      ccf.node.triggerSnapshot();
    } else if (a.name === "open") {
      ccf.node.transitionServiceToOpen(undefined, ccf.strToBuf(a.args.next));
    } else if (a.name === "rekey") {
      ccf.node.triggerLedgerRekey();
    }
  }
}
"#;

#[test]
fn a_ccf_style_constitution_reads_and_writes_covenants_rows() {
    let mut c = Consortium::new(1, 0);
    let service = generate_client_identity("service", Curve::P384).unwrap().1;
    c.gov = Governance::for_service(Some(service.to_pem()));
    let mut tx = c.store.begin();
    tx.put(CONSTITUTION, CONSTITUTION_KEY, CCF_STYLE.as_bytes());
    tx.put(
        "public:ccf.gov.service.config",
        b"0",
        br#"{"recovery_threshold":1}"#,
    );
    tx.put(
        "public:ccf.gov.service.info",
        b"0",
        br#"{"status":"Opening"}"#,
    );
    commit(&c.store, tx);
    let run = |c: &Consortium, actions: serde_json::Value| {
        let (id, _) = c.propose(0, json!({ "actions": actions })).unwrap();
        c.vote(0, &id, YES).unwrap()
    };
    let row = |c: &Consortium, map: &str| -> serde_json::Value {
        serde_json::from_slice(&c.store.get(map, b"0").unwrap()).unwrap()
    };

    // The 8-zero-byte key is covenant's "0" row, read and written.
    let info = run(&c, json!([{"name": "config", "args": {"n": 7}}]));
    assert_eq!(info.state, ProposalState::Accepted, "{info:?}");
    assert_eq!(
        row(&c, "public:ccf.gov.service.config"),
        json!({"recovery_threshold": 1, "recent_cose_proposals_window_size": 7})
    );
    assert!(c.gov.take_effects().is_empty());

    let info = run(&c, json!([{"name": "snapshot"}]));
    assert_eq!(info.state, ProposalState::Accepted, "{info:?}");
    assert_eq!(
        c.gov.take_effects(),
        vec![covenant_governance::GovEffect::Snapshot]
    );

    // Opening names this service's certificate, or fails.
    let other = user_cert().to_pem();
    let info = run(&c, json!([{"name": "open", "args": {"next": other}}]));
    assert_eq!(info.state, ProposalState::Failed);
    assert!(info.failure.unwrap().reason.contains("not this service"));
    let info = run(
        &c,
        json!([{"name": "open", "args": {"next": service.to_pem()}}]),
    );
    assert_eq!(info.state, ProposalState::Accepted, "{info:?}");
    assert_eq!(row(&c, "public:ccf.gov.service.info")["status"], "Open");

    // A rekey is asked of the service, which makes it in the proposal's transaction.
    let info = run(&c, json!([{"name": "rekey"}]));
    assert_eq!(info.state, ProposalState::Accepted, "{info:?}");
    assert_eq!(
        c.gov.take_effects(),
        vec![covenant_governance::GovEffect::LedgerRekey]
    );

    // A constitution written as a JSON string is stored as its text, once it
    // validates; a broken one fails the proposal.
    let info = run(
        &c,
        json!([{"name": "set_constitution", "args": {"constitution": "export function validate(i) {"}}]),
    );
    assert_eq!(info.state, ProposalState::Failed);
    let info = run(
        &c,
        json!([{"name": "set_constitution", "args": {"constitution": DEFAULT_CONSTITUTION}}]),
    );
    assert_eq!(info.state, ProposalState::Accepted, "{info:?}");
    assert_eq!(
        c.store.get(CONSTITUTION, CONSTITUTION_KEY).unwrap(),
        DEFAULT_CONSTITUTION.as_bytes()
    );
}
