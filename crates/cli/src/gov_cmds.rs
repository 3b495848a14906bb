//! `covenant gov ...`: a member's side of governance (SPEC §5), every
//! state-changing request signed as COSE Sign1 with the member's key (what
//! `ccf_cose_sign1` produces), and `covenant keygen` for new identities.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use covenant_client::LedgerClient;
use covenant_crypto::{read_pem_file, sign_gov_sign1, Certificate, SigningKeyPair};
use serde_json::{json, Value};

use crate::client_cmds::ok;

/// Where the service is and who the member is.
#[derive(Args, Debug)]
pub struct GovConn {
    /// Any node of the service (backups forward signed requests to the primary).
    #[arg(long, default_value = "https://127.0.0.1:8000", global = true)]
    pub endpoint: String,
    /// The service certificate to trust.
    #[arg(long, default_value = "./covenant-dev/service_cert.pem", global = true)]
    pub service_cert: PathBuf,
    /// The member's certificate (PEM).
    #[arg(long, default_value = "./covenant-dev/member0_cert.pem", global = true)]
    pub member_cert: PathBuf,
    /// The member's private key (PEM).
    #[arg(
        long,
        default_value = "./covenant-dev/member0_privk.pem",
        global = true
    )]
    pub member_key: PathBuf,
    /// Print raw JSON responses.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum GovCommand {
    /// List the consortium's members and their status.
    Members,
    /// Print the constitution (JavaScript).
    Constitution,
    /// Submit a proposal: a JSON file (or '-' for stdin) `{"actions":[{"name","args"}]}`.
    /// `propose set-js-app <bundle>` proposes deploying an app, as `gov set-js-app`.
    Propose {
        /// The proposal file (JSON), '-' for standard input, or `set-js-app`.
        proposal: PathBuf,
        /// The bundle, after `set-js-app`.
        bundle: Option<PathBuf>,
        /// Also vote for it.
        #[arg(long)]
        accept: bool,
    },
    /// Vote on a proposal: --accept, --reject, or a ballot script file.
    Vote {
        /// The proposal's id (as `propose` printed it, or `gov proposals`).
        proposal_id: String,
        /// Vote for it (a ballot that returns true).
        #[arg(long, conflicts_with_all = ["reject", "ballot"])]
        accept: bool,
        /// Vote against it (a ballot that returns false).
        #[arg(long, conflicts_with = "ballot")]
        reject: bool,
        /// A file with `export function vote(proposal, proposerId) { ... }`.
        #[arg(long)]
        ballot: Option<PathBuf>,
    },
    /// Withdraw a proposal you made (while it is Open).
    Withdraw {
        /// The proposal's id.
        proposal_id: String,
    },
    /// Fetch the state digest and ack it: an Accepted member becomes Active.
    Ack,
    /// Show a proposal's state, ballots and outcome (and its actions).
    Proposal {
        /// The proposal's id.
        proposal_id: String,
    },
    /// Propose deploying a JavaScript app (`set_js_app`): a bundle file
    /// (`{"metadata":{"endpoints":...},"modules":[{"name","module"}]}`) or a
    /// directory with `app.json` (the metadata) and the modules under `src/` (or
    /// `js/`), named by their path there. --accept also votes for it.
    SetJsApp {
        /// The bundle file or directory.
        bundle: PathBuf,
        /// Also vote for it (dev's single member then deploys it at once).
        #[arg(long)]
        accept: bool,
    },
    /// A recovery member's share: --fetch gets this member's share (encrypted to its
    /// RSA key), decrypts it with --enc-key and prints it in base64, as CCF's
    /// operators do with `openssl pkeyutl`. The service holds shares once it is open
    /// and has active members with encryption keys (`set_member` with
    /// `encryption_pub_key`, then `gov ack`); any recovery threshold of them rebuild
    /// the key to the ledger secret.
    ///
    /// --submit, during a disaster recovery (service WaitingForRecoveryShares), does
    /// the same and submits the share, COSE-signed as a `recovery_share` message
    /// (`POST /gov/recovery_share`); the share that reaches the threshold opens the
    /// service. The decrypted share never touches the disk.
    Share {
        /// Fetch and decrypt this member's share.
        #[arg(long, required_unless_present = "submit", conflicts_with = "submit")]
        fetch: bool,
        /// Fetch, decrypt and submit it (disaster recovery).
        #[arg(long)]
        submit: bool,
        /// The member's RSA private key (default: next to --member-cert,
        /// `<name>_enc_privk.pem`, as `keygen --enc` and `dev` write it).
        #[arg(long)]
        enc_key: Option<PathBuf>,
        /// Write the share (base64) to this file (0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Where a disaster recovery stands: the service status, how many recovery
    /// shares are in and how many are needed (`GET /gov/recovery/status`, no
    /// credentials needed).
    RecoveryStatus,
    /// List proposals, oldest first.
    Proposals {
        /// Only those in this state (Open, Accepted, Withdrawn, Rejected, Failed, Dropped).
        #[arg(long)]
        state: Option<String>,
    },
}

struct Member {
    key: SigningKeyPair,
    cert: Certificate,
    client: LedgerClient,
}

impl GovConn {
    fn member(&self) -> Result<Member> {
        let service = Certificate::from_pem(&read_pem_file(&self.service_cert)?)
            .with_context(|| format!("service certificate {}", self.service_cert.display()))?;
        let cert = Certificate::from_pem(&read_pem_file(&self.member_cert)?)
            .with_context(|| format!("member certificate {}", self.member_cert.display()))?;
        let key = SigningKeyPair::from_pem(&read_pem_file(&self.member_key)?)
            .with_context(|| format!("member key {}", self.member_key.display()))?;
        // No TLS client certificate: the COSE signature authenticates the member.
        let client = LedgerClient::new(&self.endpoint, &service, None)?;
        Ok(Member { key, cert, client })
    }
}

/// The ballots of `--accept` and `--reject`.
const ACCEPT: &str = "export function vote(proposal, proposerId) { return true; }";
const REJECT: &str = "export function vote(proposal, proposerId) { return false; }";

impl Member {
    /// Casts `script` as this member's ballot on proposal `id`.
    async fn vote(&self, id: &str, script: &str) -> Result<Value> {
        let body = json!({ "ballot": script }).to_string();
        self.signed(
            &format!("/gov/proposals/{id}/ballots"),
            "ballot",
            Some(id),
            body.as_bytes(),
        )
        .await
    }

    async fn signed(
        &self,
        path: &str,
        msg_type: &str,
        proposal_id: Option<&str>,
        payload: &[u8],
    ) -> Result<Value> {
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let envelope = sign_gov_sign1(
            &self.key,
            &self.cert,
            msg_type,
            created_at,
            proposal_id,
            payload,
        )?;
        // 503: no primary at the moment, or a configuration change is committing;
        // nothing was applied, so the same envelope is sent again for a while.
        let mut tries = 0;
        loop {
            let r = self
                .client
                .request_raw("POST", path, Some(envelope.clone()), "application/cose")
                .await?;
            tries += 1;
            if r.status == 503 && tries < 40 {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                continue;
            }
            return ok(r);
        }
    }
}

fn read_input(path: &Path) -> Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        return Ok(buf);
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn summary(v: &Value) -> String {
    let mut s = format!(
        "proposal {}: {} ({} ballot(s))",
        v["proposal_id"].as_str().unwrap_or("?"),
        v["state"].as_str().unwrap_or("?"),
        v["ballot_count"].as_u64().unwrap_or(0)
    );
    if let Some(reason) = v["failure"]["reason"].as_str() {
        s.push_str(&format!("\n  failure: {reason}"));
    }
    s
}

pub fn run(conn: &GovConn, cmd: &GovCommand) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let m = conn.member()?;
        let show = |v: &Value, human: String| {
            if conn.json {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
            } else {
                println!("{human}");
            }
        };
        match cmd {
            GovCommand::Members => {
                let v = ok(m.client.request("GET", "/gov/members", None).await?)?;
                let lines: Vec<String> = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(id, m)| format!("{id}  {}", m["status"].as_str().unwrap_or("?")))
                    .collect();
                show(&v, lines.join("\n"));
            }
            GovCommand::Constitution => {
                let r = m.client.request("GET", "/gov/constitution", None).await?;
                if r.status != 200 {
                    ok(r)?;
                } else {
                    print!("{}", String::from_utf8_lossy(&r.body));
                }
            }
            GovCommand::Propose {
                proposal,
                bundle,
                accept,
            } => {
                let body = match (proposal.to_str(), bundle) {
                    (Some("set-js-app"), Some(b)) => set_js_app_proposal(b)?,
                    (Some("set-js-app"), None) => {
                        bail!("give the bundle: covenant gov propose set-js-app <bundle.json|dir>")
                    }
                    (_, Some(extra)) => bail!(
                        "unexpected argument {}: propose takes one proposal file (or set-js-app <bundle>)",
                        extra.display()
                    ),
                    (_, None) => {
                        let body = read_input(proposal)?;
                        serde_json::from_slice::<Value>(&body)
                            .context("the proposal is not JSON")?;
                        body
                    }
                };
                let v = propose_maybe_accept(&m, &body, *accept).await?;
                show(&v, summary(&v));
            }
            GovCommand::Vote {
                proposal_id,
                accept,
                reject,
                ballot,
            } => {
                let script = match (accept, reject, ballot) {
                    (true, _, _) => ACCEPT.to_string(),
                    (_, true, _) => REJECT.to_string(),
                    (_, _, Some(f)) => {
                        String::from_utf8(read_input(f)?).context("the ballot is not UTF-8 text")?
                    }
                    _ => bail!("give --accept, --reject or --ballot <file.js>"),
                };
                let v = m.vote(proposal_id, &script).await?;
                show(&v, summary(&v));
            }
            GovCommand::Withdraw { proposal_id } => {
                let path = format!("/gov/proposals/{proposal_id}/withdraw");
                let v = m
                    .signed(&path, "withdrawal", Some(proposal_id), b"")
                    .await?;
                show(&v, summary(&v));
            }
            GovCommand::Ack => {
                let d = state_digest(&m).await?;
                let digest = d["state_digest"].as_str().unwrap_or_default().to_string();
                let body = json!({ "state_digest": digest }).to_string();
                let v = m.signed("/gov/ack", "ack", None, body.as_bytes()).await?;
                show(
                    &v,
                    format!(
                        "member {} is {} (acked state digest {digest})",
                        v["member_id"].as_str().unwrap_or("?"),
                        v["status"].as_str().unwrap_or("?")
                    ),
                );
            }
            GovCommand::SetJsApp { bundle, accept } => {
                let body = set_js_app_proposal(bundle)?;
                let v = propose_maybe_accept(&m, &body, *accept).await?;
                show(&v, summary(&v));
            }
            GovCommand::RecoveryStatus => {
                let v = ok(m.client.request("GET", "/gov/recovery/status", None).await?)?;
                let human = match (v["submitted_shares"].as_u64(), v["threshold"].as_u64()) {
                    (Some(n), Some(t)) => format!(
                        "service {}: {n} of {t} recovery shares submitted",
                        v["status"].as_str().unwrap_or("?")
                    ),
                    _ => format!("service {}", v["status"].as_str().unwrap_or("?")),
                };
                show(&v, human);
            }
            GovCommand::Proposals { state } => {
                let path = match state {
                    Some(s) => format!("/gov/proposals?state={s}"),
                    None => "/gov/proposals".to_string(),
                };
                let v = ok(m.client.request("GET", &path, None).await?)?;
                let list = v["proposals"].as_array().cloned().unwrap_or_default();
                let mut human = if list.is_empty() {
                    "no proposals".to_string()
                } else {
                    String::new()
                };
                for p in &list {
                    if !human.is_empty() {
                        human.push('\n');
                    }
                    human.push_str(&format!(
                        "{} (seqno {}, by {})",
                        summary(p),
                        p["seqno"],
                        p["proposer_id"].as_str().unwrap_or("?")
                    ));
                }
                show(&v, human);
            }
            GovCommand::Share {
                fetch: _,
                submit,
                enc_key,
                out,
            } => {
                let enc_key = enc_key
                    .clone()
                    .unwrap_or_else(|| crate::beside_member_cert(&conn.member_cert, "_enc_privk.pem"));
                let key = covenant_crypto::EncryptionKeyPair::from_pem(&read_pem_file(&enc_key)?)
                    .with_context(|| format!("encryption key {}", enc_key.display()))?;
                let id = covenant_crypto::member_id(m.cert.der());
                let v = ok(m
                    .client
                    .request("GET", &format!("/gov/encrypted_recovery_share/{id}"), None)
                    .await?)?;
                let encrypted = v["encrypted_share"]
                    .as_str()
                    .context("the service answered without encrypted_share")?;
                let share = covenant_recovery::decrypt_share(&key, encrypted)
                    .with_context(|| format!("decrypting the share of member {id}"))?;
                let b64 = zeroize::Zeroizing::new(
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, share.to_bytes().as_ref()),
                );
                if *submit {
                    let body = zeroize::Zeroizing::new(json!({ "share": b64.as_str() }).to_string());
                    let v = m
                        .signed("/gov/recovery_share", "recovery_share", None, body.as_bytes())
                        .await?;
                    let msg = v["message"].as_str().unwrap_or("submitted").to_string();
                    show(&v, msg);
                    return Ok(());
                }
                match out {
                    Some(path) => {
                        covenant_crypto::write_private_file(path, b64.as_bytes())?;
                        eprintln!("wrote member {id}'s share to {} (0600)", path.display());
                    }
                    None => println!("{}", b64.as_str()),
                }
            }
            GovCommand::Proposal { proposal_id } => {
                let info = ok(m
                    .client
                    .request("GET", &format!("/gov/proposals/{proposal_id}"), None)
                    .await?)?;
                let actions = ok(m
                    .client
                    .request(
                        "GET",
                        &format!("/gov/proposals/{proposal_id}/actions"),
                        None,
                    )
                    .await?)?;
                let v = json!({"info": info, "proposal": actions});
                show(
                    &v,
                    format!(
                        "{}\n{}",
                        summary(&info),
                        serde_json::to_string_pretty(&actions).unwrap_or_default()
                    ),
                );
            }
        }
        Ok(())
    })
}

/// The `set_js_app` proposal for the bundle at `path`.
fn set_js_app_proposal(path: &Path) -> Result<Vec<u8>> {
    let bundle = read_bundle(path)?;
    Ok(json!({"actions": [{"name": "set_js_app",
        "args": {"bundle": bundle, "disable_bytecode_cache": false}}]})
    .to_string()
    .into_bytes())
}

/// Submits `body` as a proposal; with `accept`, votes for it while it is Open.
async fn propose_maybe_accept(m: &Member, body: &[u8], accept: bool) -> Result<Value> {
    let mut v = m.signed("/gov/proposals", "proposal", None, body).await?;
    if accept && v["state"] == "Open" {
        let id = v["proposal_id"].as_str().unwrap_or_default().to_string();
        v = m.vote(&id, ACCEPT).await?;
    }
    Ok(v)
}

/// An app bundle from a bundle file or an app directory (see `gov set-js-app`).
pub fn read_bundle(path: &Path) -> Result<Value> {
    if path.is_file() {
        let v: Value = serde_json::from_slice(&std::fs::read(path)?)
            .with_context(|| format!("{} is not a JSON bundle", path.display()))?;
        return Ok(v);
    }
    let metadata: Value = serde_json::from_slice(
        &std::fs::read(path.join("app.json"))
            .with_context(|| format!("reading {}/app.json", path.display()))?,
    )
    .context("app.json is not JSON")?;
    let root = ["src", "js"]
        .iter()
        .map(|d| path.join(d))
        .find(|d| d.is_dir())
        .with_context(|| format!("{} has neither src/ nor js/", path.display()))?;
    let mut modules = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let p = entry?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "js" || e == "mjs") {
                let name = p.strip_prefix(&root)?.to_string_lossy().replace('\\', "/");
                let source = std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?;
                modules.push(json!({"name": name, "module": source}));
            }
        }
    }
    if modules.is_empty() {
        bail!("no .js modules under {}", root.display());
    }
    modules.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(json!({"metadata": metadata, "modules": modules}))
}

/// `covenant keygen --name NAME [--enc]`: NAME_cert.pem, NAME_privk.pem (0600) and,
/// with --enc, an RSA-OAEP encryption pair NAME_enc_pubk.pem / NAME_enc_privk.pem
/// (what a recovery member registers), like CCF's keygenerator.sh.
pub fn keygen(dir: &Path, name: &str, enc: bool) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!("--name must be letters, digits, '-' or '_'");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cert_path = dir.join(format!("{name}_cert.pem"));
    if cert_path.exists() {
        bail!(
            "{} exists already; choose another --name",
            cert_path.display()
        );
    }
    crate::write_client_identity(dir, name)?;
    let cert = Certificate::from_pem(&read_pem_file(&cert_path)?)?;
    let digest = covenant_crypto::sha256(cert.der());
    println!(
        "wrote {} and {}_privk.pem\n  id in governance and JS apps (member or user): {}\n  id in the ACL API (`covenant users set`):      {}",
        cert_path.display(),
        name,
        digest.to_hex(),
        covenant_crypto::colon_hex(&digest)
    );
    if enc {
        let pair = covenant_crypto::EncryptionKeyPair::generate()?;
        covenant_crypto::write_public_file(
            &dir.join(format!("{name}_enc_pubk.pem")),
            pair.public_key_pem()?.as_bytes(),
        )?;
        covenant_crypto::write_private_file(
            &dir.join(format!("{name}_enc_privk.pem")),
            pair.to_pem()?.as_bytes(),
        )?;
        println!("wrote {name}_enc_pubk.pem and {name}_enc_privk.pem (RSA-OAEP)");
    }
    Ok(())
}

/// `covenant dev`'s generated members in `dir` (`member<i>_cert.pem` and
/// `member<i>_privk.pem`), with the path of each certificate.
fn dev_members(dir: &Path, client: &LedgerClient) -> Result<Vec<(PathBuf, Member)>> {
    crate::dev_member_certs(dir)?
        .into_iter()
        .map(|cert_path| {
            let name = cert_path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix("_cert.pem"))
                .unwrap_or_default()
                .to_string();
            let member = Member {
                key: SigningKeyPair::from_pem(&read_pem_file(
                    &dir.join(format!("{name}_privk.pem")),
                )?)?,
                cert: Certificate::from_pem(&read_pem_file(&cert_path)?)?,
                client: client.clone(),
            };
            Ok((cert_path, member))
        })
        .collect()
}

/// `covenant dev`'s generated members (`memberN_cert.pem` / `memberN_privk.pem` in
/// `dir`) that are still Accepted ack the state digest and become Active. Returns
/// what was done, for the console.
/// The member's state digest to ack; a service that has not signed anything yet
/// answers 503 `NoSignatureYet` for a moment, so this asks again for up to 10 s.
async fn state_digest(m: &Member) -> Result<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match m
            .signed("/gov/ack/update_state_digest", "state_digest", None, b"")
            .await
        {
            Err(e)
                if format!("{e:#}").contains("NoSignatureYet")
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

pub async fn activate_dev_members(
    endpoint: &str,
    service_cert: &Certificate,
    dir: &Path,
) -> Result<Vec<String>> {
    let client = LedgerClient::new(endpoint, service_cert, None)?;
    let members = ok(client.request("GET", "/gov/members", None).await?)?;
    let mut done = Vec::new();
    for (i, (cert_path, m)) in dev_members(dir, &client)?.into_iter().enumerate() {
        let id = m.cert.member_id();
        if members[&id]["status"] != "Accepted" {
            continue;
        }
        let d = state_digest(&m).await?;
        let body = json!({ "state_digest": d["state_digest"] }).to_string();
        m.signed("/gov/ack", "ack", None, body.as_bytes()).await?;
        done.push(format!(
            "member{i} ({id}) acked the state digest and is Active (covenant gov ... --member-cert {})",
            cert_path.display()
        ));
    }
    Ok(done)
}

/// Proposes `actions` as the first member and has every member accept until the
/// proposal is decided; the proposal id and how many voted, or why it was not accepted.
async fn propose_and_accept(
    first: &Member,
    members: &[Member],
    actions: &Value,
    what: &str,
) -> Result<(String, usize)> {
    let proposal = json!({ "actions": actions }).to_string();
    let v = first
        .signed("/gov/proposals", "proposal", None, proposal.as_bytes())
        .await?;
    let id = v["proposal_id"].as_str().unwrap_or_default().to_string();
    let mut state = v["state"].as_str().unwrap_or_default().to_string();
    let mut failure = v["failure"]["reason"].as_str().map(str::to_string);
    let mut voters = 0;
    for m in members {
        if state != "Open" {
            break;
        }
        let v = m.vote(&id, ACCEPT).await?;
        state = v["state"].as_str().unwrap_or_default().to_string();
        failure = v["failure"]["reason"].as_str().map(str::to_string);
        voters += 1;
    }
    if state != "Accepted" {
        match failure {
            Some(reason) => bail!("{what}: proposal {id} is {state}: {reason}"),
            None => bail!("{what}: proposal {id} is {state}"),
        }
    }
    Ok((id, voters))
}

/// `covenant dev --app`: deploys `bundle` (see [`read_bundle`]) with a `set_js_app`
/// proposal that dev's members accept.
pub async fn deploy_dev_app(
    endpoint: &str,
    service_cert: &Certificate,
    dir: &Path,
    bundle: &Value,
) -> Result<String> {
    let client = LedgerClient::new(endpoint, service_cert, None)?;
    let members: Vec<Member> = dev_members(dir, &client)?
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    let Some(first) = members.first() else {
        bail!("{} holds no member to deploy the app", dir.display());
    };
    let actions = json!([{"name": "set_js_app",
        "args": {"bundle": bundle, "disable_bytecode_cache": false}}]);
    let (id, voters) = propose_and_accept(first, &members, &actions, "deploying the app").await?;
    let endpoints = bundle["metadata"]["endpoints"]
        .as_object()
        .map(|e| {
            e.values()
                .filter_map(Value::as_object)
                .map(|m| m.len())
                .sum::<usize>()
        })
        .unwrap_or(0);
    let modules = bundle["modules"].as_array().map_or(0, Vec::len);
    Ok(format!(
        "deployed the app ({endpoints} endpoint(s), {modules} module(s)) under /app: proposal {id} (set_js_app) accepted by {voters} member vote(s)"
    ))
}

/// `covenant dev`: a service still Opening is opened by its generated members (a
/// `transition_service_to_open` proposal by member0, accepted by their votes).
pub async fn open_dev_service(
    endpoint: &str,
    service_cert: &Certificate,
    dir: &Path,
) -> Result<Option<String>> {
    let client = LedgerClient::new(endpoint, service_cert, None)?;
    let network = ok(client.request("GET", "/node/network", None).await?)?;
    if network["service_status"] == "Open" {
        return Ok(None);
    }
    let members: Vec<Member> = dev_members(dir, &client)?
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    let Some(first) = members.first() else {
        bail!(
            "the service is not open and {} holds no member to open it",
            dir.display()
        );
    };
    let actions = json!([{"name": "transition_service_to_open"}]);
    let (id, voters) = propose_and_accept(first, &members, &actions, "opening the service").await?;
    Ok(Some(format!(
        "the service is open: proposal {id} (transition_service_to_open) accepted by {voters} member vote(s)"
    )))
}
