//! `covenant append|get|list|status|receipt|collections|users`: the ledger API from
//! the command line. Human output by default, `--json` for scripts; every error is
//! the server's `{"error":{"code","message"}}` made readable, with exit code 1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use covenant_client::{HttpResponse, LedgerClient, ReceiptVerifier};
use covenant_crypto::{read_pem_file, Certificate, SigningKeyPair};
use covenant_receipt::ReceiptResponse;
use serde_json::{json, Value};

/// How to reach and authenticate to a ledger.
#[derive(Args, Clone, Debug)]
pub struct Conn {
    /// The ledger endpoint.
    #[arg(long, default_value = "https://127.0.0.1:8000", global = true)]
    pub endpoint: String,
    /// The service certificate to trust (and to verify receipts against).
    #[arg(long, default_value = "./covenant-dev/service_cert.pem", global = true)]
    pub service_cert: PathBuf,
    /// Client certificate (PEM; may also hold the key, like user0.pem).
    #[arg(long, default_value = "./covenant-dev/user0.pem", global = true)]
    pub cert: PathBuf,
    /// Private key of --cert (EC P-256/P-384), if not in the --cert file.
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,
    /// Authenticate with this JWT (or @file) instead of a client certificate.
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// api-version to send.
    #[arg(long, default_value = "2022-05-13", global = true)]
    pub api_version: String,
    /// Print the raw JSON response.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// List users and their roles.
    List,
    /// Show one user's roles.
    Get {
        /// Certificate fingerprint (either spelling) or JWT object id.
        user_id: String,
    },
    /// Give a user (certificate fingerprint or JWT object id) exactly one role.
    Set {
        /// The certificate's SHA-256 fingerprint, as `covenant keygen` prints it
        /// (AB:CD:... or 64 hex digits), or a JWT user's object id (`oid`).
        user_id: String,
        /// The built-in role.
        #[arg(long, value_parser = ["Reader", "Contributor", "Administrator"])]
        role: String,
        /// For a JWT user: the token issuer (its `iss`) whose tokens name this user.
        /// Tokens of other issuers never do. Without it a new user is bound to the
        /// issuer trusted at the time when exactly one is.
        #[arg(long)]
        issuer: Option<String>,
    },
    /// Remove a user.
    Delete {
        /// Certificate fingerprint (either spelling) or JWT object id.
        user_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum NodesCommand {
    /// List the network's nodes: node id, Raft id, status, consensus role, primary.
    /// (The consortium trusts and retires nodes with `covenant gov propose`:
    /// `transition_node_to_trusted`, `remove_node`.)
    List,
}

impl Conn {
    fn client(&self) -> Result<LedgerClient> {
        self.client_at(&self.endpoint)
    }

    fn client_at(&self, endpoint: &str) -> Result<LedgerClient> {
        let service =
            Certificate::from_pem(&read_pem_file(&self.service_cert)?).with_context(|| {
                format!(
                    "reading the service certificate {}",
                    self.service_cert.display()
                )
            })?;
        if let Some(token) = &self.token {
            let token = match token.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading token file {path}"))?,
                None => token.clone(),
            };
            return Ok(LedgerClient::new(endpoint, &service, None)?.with_bearer_token(&token));
        }
        let cert_pem = read_pem_file(&self.cert)
            .with_context(|| format!("reading {}", self.cert.display()))?;
        let cert = Certificate::from_pem(&cert_pem)?;
        let key_pem = match &self.key {
            Some(k) => read_pem_file(k)?,
            None => cert_pem,
        };
        let key = SigningKeyPair::from_pem(&key_pem)
            .context("reading the client key (pass --key if it is in another file)")?;
        Ok(LedgerClient::new(endpoint, &service, Some((&cert, &key)))?)
    }

    fn v(&self) -> String {
        format!("api-version={}", enc(&self.api_version))
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The body of a successful response, or the server's error as an error.
pub(crate) fn ok(r: HttpResponse) -> Result<Value> {
    if (200..300).contains(&r.status) {
        return Ok(r.json());
    }
    let j = r.json();
    let code = j["error"]["code"].as_str().unwrap_or("HTTP error");
    let msg = j["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&r.body).to_string());
    bail!("{} {code}: {msg}", r.status)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn print(conn: &Conn, v: &Value, human: impl FnOnce(&Value) -> String) {
    if conn.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{}", human(v));
    }
}

async fn wait_committed(c: &LedgerClient, conn: &Conn, txid: &str) -> Result<()> {
    for _ in 0..600 {
        let s = ok(c
            .request(
                "GET",
                &format!("/app/transactions/{}/status?{}", enc(txid), conn.v()),
                None,
            )
            .await?)?;
        if s["state"] == "Committed" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{txid} did not commit within 30 s")
}

pub fn append(conn: &Conn, contents: &str, collection: Option<&str>, wait: bool) -> Result<()> {
    let contents = if contents == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        s
    } else {
        contents.to_string()
    };
    runtime()?.block_on(async {
        let c = conn.client()?;
        let mut path = format!("/app/transactions?{}", conn.v());
        if let Some(col) = collection {
            path.push_str(&format!("&collectionId={}", enc(col)));
        }
        let r = c
            .request("POST", &path, Some(&json!({"contents": contents})))
            .await?;
        let txid = r.transaction_id.clone().unwrap_or_default();
        let body = ok(r)?;
        if wait {
            wait_committed(&c, conn, &txid).await?;
        }
        let out = json!({"collectionId": body["collectionId"], "transactionId": txid,
                          "state": if wait { "Committed" } else { "Pending" }});
        print(conn, &out, |o| {
            format!(
                "appended to {} as {} ({})",
                o["collectionId"].as_str().unwrap_or(""),
                txid,
                o["state"].as_str().unwrap_or("")
            )
        });
        Ok(())
    })
}

pub fn get(conn: &Conn, txid: &str, collection: Option<&str>) -> Result<()> {
    runtime()?.block_on(async {
        let c = conn.client()?;
        let mut path = format!("/app/transactions/{}?{}", enc(txid), conn.v());
        if let Some(col) = collection {
            path.push_str(&format!("&collectionId={}", enc(col)));
        }
        for _ in 0..600 {
            let body = ok(c.request("GET", &path, None).await?)?;
            if body["state"] == "Ready" {
                print(conn, &body, |b| {
                    b["entry"]["contents"].as_str().unwrap_or("").to_string()
                });
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{txid} is still loading after 30 s")
    })
}

pub fn list(
    conn: &Conn,
    collection: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<()> {
    runtime()?.block_on(async {
        let c = conn.client()?;
        let mut path = format!("/app/transactions?{}", conn.v());
        for (k, v) in [
            ("collectionId", collection),
            ("fromTransactionId", from),
            ("toTransactionId", to),
        ] {
            if let Some(v) = v {
                path.push_str(&format!("&{k}={}", enc(v)));
            }
        }
        let mut all = Vec::new();
        loop {
            let body = ok(c.request("GET", &path, None).await?)?;
            if let Some(entries) = body["entries"].as_array() {
                all.extend(entries.iter().cloned());
            }
            match body["nextLink"].as_str() {
                Some(next) => path = next.to_string(),
                None => break,
            }
        }
        let out = Value::Array(all);
        print(conn, &out, |v| {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            format!(
                                "{}\t{}",
                                e["transactionId"].as_str().unwrap_or(""),
                                e["contents"].as_str().unwrap_or("")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default()
        });
        Ok(())
    })
}

pub fn status(conn: &Conn, txid: &str) -> Result<()> {
    runtime()?.block_on(async {
        let c = conn.client()?;
        let body = ok(c
            .request(
                "GET",
                &format!("/app/transactions/{}/status?{}", enc(txid), conn.v()),
                None,
            )
            .await?)?;
        print(conn, &body, |b| {
            format!("{txid}: {}", b["state"].as_str().unwrap_or(""))
        });
        Ok(())
    })
}

pub fn receipt(conn: &Conn, txid: &str, verify: bool, out: Option<&Path>) -> Result<()> {
    runtime()?.block_on(async {
        let c = conn.client()?;
        let path = format!("/app/transactions/{}/receipt?{}", enc(txid), conn.v());
        let mut body = Value::Null;
        for _ in 0..600 {
            body = ok(c.request("GET", &path, None).await?)?;
            if body["state"] == "Ready" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if body["state"] != "Ready" {
            bail!("the receipt of {txid} is not ready after 30 s (is the transaction committed?)");
        }
        if let Some(p) = out {
            std::fs::write(p, serde_json::to_vec_pretty(&body)?)
                .with_context(|| format!("writing {}", p.display()))?;
        }
        if verify {
            let response: ReceiptResponse =
                serde_json::from_value(body.clone()).context("malformed receipt")?;
            let verifier = ReceiptVerifier::from_pem(&read_pem_file(&conn.service_cert)?)?;
            let v = verifier
                .verify_response(&response, None)
                .map_err(|e| anyhow::anyhow!("receipt does NOT verify: {e}"))?;
            if !conn.json {
                println!(
                    "receipt verified: transaction {} is in the ledger (root {})",
                    v.transaction_id, v.root
                );
            }
        }
        if conn.json || (!verify && out.is_none()) {
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        Ok(())
    })
}

pub fn collections(conn: &Conn) -> Result<()> {
    runtime()?.block_on(async {
        let c = conn.client()?;
        let body = ok(c
            .request("GET", &format!("/app/collections?{}", conn.v()), None)
            .await?)?;
        print(conn, &body, |b| {
            b["collections"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c["collectionId"].as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default()
        });
        Ok(())
    })
}

/// A user id as the ACL API spells it: a certificate's digest given in CCF's
/// spelling (64 hex digits, as `keygen` and `openssl` print it) becomes the
/// colon-separated upper-case form (said on stderr); anything else is kept.
fn acl_user_id(id: &str) -> String {
    match covenant_types::Digest32::from_hex(&id.to_ascii_lowercase()) {
        Ok(d) => {
            let colon = covenant_crypto::colon_hex(&d);
            eprintln!("note: {id} is a certificate's SHA-256 in CCF's spelling; the ACL API names that user {colon}");
            colon
        }
        _ => id.to_string(),
    }
}

pub fn users(conn: &Conn, cmd: &UsersCommand) -> Result<()> {
    const MULTI: &str = "2024-08-22-preview";
    runtime()?.block_on(async {
        let c = conn.client()?;
        let body = match cmd {
            UsersCommand::List => ok(c
                .request(
                    "GET",
                    &format!("/app/ledgerUsers?api-version={MULTI}"),
                    None,
                )
                .await?)?,
            UsersCommand::Get { user_id } => ok(c
                .request(
                    "GET",
                    &format!(
                        "/app/ledgerUsers/{}?api-version={MULTI}",
                        enc(&acl_user_id(user_id))
                    ),
                    None,
                )
                .await?)?,
            UsersCommand::Set {
                user_id,
                role,
                issuer,
            } => {
                let user_id = &acl_user_id(user_id);
                let set = ok(c
                    .request_raw(
                        "PATCH",
                        &format!("/app/users/{}?{}", enc(user_id), conn.v()),
                        Some(json!({"assignedRole": role}).to_string().into_bytes()),
                        "application/merge-patch+json",
                    )
                    .await?)?;
                match issuer {
                    // Roles merge at /app/ledgerUsers: none added, only the binding.
                    Some(i) => ok(c
                        .request_raw(
                            "PATCH",
                            &format!("/app/ledgerUsers/{}?api-version={MULTI}", enc(user_id)),
                            Some(
                                json!({"assignedRoles": [], "issuer": i})
                                    .to_string()
                                    .into_bytes(),
                            ),
                            "application/merge-patch+json",
                        )
                        .await?)?,
                    None => set,
                }
            }
            UsersCommand::Delete { user_id } => {
                let user_id = &acl_user_id(user_id);
                ok(c.request(
                    "DELETE",
                    &format!("/app/ledgerUsers/{}?api-version={MULTI}", enc(user_id)),
                    None,
                )
                .await?)?;
                json!({"deleted": user_id})
            }
        };
        print(conn, &body, |b| {
            if let Some(users) = b["ledgerUsers"].as_array() {
                users
                    .iter()
                    .map(|u| {
                        format!(
                            "{}\t{}",
                            u["userId"].as_str().unwrap_or(""),
                            u["assignedRoles"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                b.to_string()
            }
        });
        Ok(())
    })
}

/// `covenant nodes list`: the network's nodes.
pub fn nodes(conn: &Conn, cmd: &NodesCommand) -> Result<()> {
    let NodesCommand::List = cmd;
    runtime()?.block_on(async {
        let c = conn.client()?;
        let body = ok(c.request("GET", "/node/network/nodes", None).await?)?;
        print(conn, &body, |b| {
            let mut lines = vec![format!(
                "{:<64}  {:>4}  {:<8}  {:<7}  {:<7}  address",
                "node id", "raft", "status", "role", "primary"
            )];
            for n in b["nodes"].as_array().into_iter().flatten() {
                lines.push(format!(
                    "{:<64}  {:>4}  {:<8}  {:<7}  {:<7}  {}",
                    n["node_id"].as_str().unwrap_or(""),
                    n["raft_id"]
                        .as_u64()
                        .map(|r| r.to_string())
                        .unwrap_or_default(),
                    n["status"].as_str().unwrap_or(""),
                    n["consensus_role"].as_str().unwrap_or(""),
                    if n["primary"] == true { "yes" } else { "" },
                    n["rpc_interfaces"]["primary_rpc_interface"]["published_address"]
                        .as_str()
                        .unwrap_or("")
                ));
            }
            lines.join("\n")
        });
        Ok(())
    })
}
