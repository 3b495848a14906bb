//! Regression tests for the findings of the security review, against real `covenant`
//! processes over real TLS: node admission (A), identities forwarded by backups (B),
//! JWT identities (C), request bodies (D), connection limits (E), malformed requests
//! (F), the role × route × path matrix (G), and the older governance proofs through
//! a backup (H).
//!
//! Each test collects every failed check before it fails (so one run shows all that
//! is wrong, not only the first thing); setup steps assert at once. The tests take
//! turns: on a 2-core machine two networks at once starve each other's timers.

mod common;

use common::{dev_network, free_ports, pid_of, Reaper};

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use covenant_client::{HttpResponse, LedgerClient};
use covenant_crypto::{read_pem_file, Certificate, Curve, SigningKeyPair};
use covenant_node::attestation::{VirtualQuote, VIRTUAL_FORMAT};
use covenant_node::http::{JOIN_PATH, REGISTER_PATH, SNAPSHOT_PATH};
use covenant_test_support::{dev_identity, service_cert};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

const API: &str = "api-version=2022-05-13";
const PREVIEW: &str = "api-version=2024-12-09-preview";
/// The authentication policies a JS endpoint may name (`user_cose_sign1` aside).
const POLICIES: [&str; 5] = ["user_cert", "member_cert", "any_cert", "jwt", "no_auth"];

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------
// Helpers

/// Failed checks of one test, reported together at its end.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let w = what();
            eprintln!("FAILED CHECK: {w}");
            self.0.push(w);
        }
    }

    /// `r` must have status `want`; `what` names the request.
    fn status(&mut self, r: &HttpResponse, want: u16, what: impl FnOnce() -> String) {
        self.check(r.status == want, || {
            format!("{}: want {want}, got {}", what(), brief(r))
        });
    }

    /// `r` must have status `want` and error code `code`.
    fn status_code(
        &mut self,
        r: &HttpResponse,
        want: u16,
        code_: &str,
        what: impl FnOnce() -> String,
    ) {
        self.check(r.status == want && code(r) == code_, || {
            format!("{}: want {want} {code_}, got {}", what(), brief(r))
        });
    }

    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} check(s) failed:\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

/// A certificate and its key.
struct Identity {
    cert: Certificate,
    key: SigningKeyPair,
}

impl Identity {
    fn load(cert: &Path, key: &Path) -> Identity {
        Identity {
            cert: Certificate::from_pem(&read_pem_file(cert).unwrap()).unwrap(),
            key: SigningKeyPair::from_pem(&read_pem_file(key).unwrap()).unwrap(),
        }
    }

    /// A key and a self-signed certificate nobody has heard of.
    fn fresh(name: &str) -> Identity {
        let (key, cert) = covenant_crypto::generate_client_identity(name, Curve::P384).unwrap();
        Identity { cert, key }
    }

    fn pair(&self) -> (&Certificate, &SigningKeyPair) {
        (&self.cert, &self.key)
    }
}

fn client(port: u16, service: &Certificate, id: Option<&Identity>) -> LedgerClient {
    LedgerClient::new(
        &format!("https://127.0.0.1:{port}"),
        service,
        id.map(Identity::pair),
    )
    .unwrap()
}

fn no_answer(why: String) -> HttpResponse {
    HttpResponse {
        status: 0,
        transaction_id: None,
        content_type: None,
        headers: Vec::new(),
        body: why.into_bytes(),
    }
}

/// One request on a new connection with extra headers. A transport failure, or no
/// answer within 20 s, is status 0 with the reason as body.
async fn call(
    c: &LedgerClient,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    headers: &[(&str, String)],
) -> HttpResponse {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let request = async {
        let mut conn = c.connect().await?;
        conn.request_with_headers(method, path, body, "application/json", &headers)
            .await
    };
    match tokio::time::timeout(Duration::from_secs(20), request).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => no_answer(e.to_string()),
        Err(_) => no_answer("no answer within 20 s".into()),
    }
}

fn body(v: Value) -> Option<Vec<u8>> {
    Some(v.to_string().into_bytes())
}

fn code(r: &HttpResponse) -> String {
    r.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn message(r: &HttpResponse) -> String {
    r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Status and (the start of) the body, for failure messages.
fn brief(r: &HttpResponse) -> String {
    let text = String::from_utf8_lossy(&r.body);
    let cut: String = text.chars().take(300).collect();
    format!("{} {cut}", r.status)
}

fn header<'a>(r: &'a HttpResponse, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A `covenant dev --nodes 3` network (ports `base..base+3`, signatures every
/// 100 ms); its processes die with it.
struct Network {
    dir: PathBuf,
    base: u16,
    service: Certificate,
    _dev: Child,
    _reaper: Reaper,
}

fn network(dir: &Path, extra: &[&str]) -> Network {
    let base = free_ports(3);
    let (dev, reaper) = dev_network(dir, base, extra);
    Network {
        dir: dir.to_path_buf(),
        base,
        service: service_cert(dir),
        _dev: dev,
        _reaper: reaper,
    }
}

impl Network {
    fn port(&self, node: u16) -> u16 {
        self.base + node - 1
    }

    fn client(&self, node: u16, id: Option<&Identity>) -> LedgerClient {
        client(self.port(node), &self.service, id)
    }

    /// dev's `user0` or `member0`.
    fn dev_identity(&self, who: &str) -> Identity {
        let (cert, key) = dev_identity(&self.dir, who);
        Identity { cert, key }
    }

    /// Node `node`'s own certificate (endorsed by the service) and key.
    fn node_identity(&self, node: u16) -> Identity {
        let d = self.dir.join(format!("node{node}/node"));
        Identity::load(&d.join("node_cert.pem"), &d.join("node_key.pem"))
    }

    /// The primary every node agrees on, and the two backups.
    async fn roles(&self) -> (u16, Vec<u16>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut seen = Vec::new();
            for node in 1..=3 {
                let r = call(&self.client(node, None), "GET", "/node/network", None, &[]).await;
                if let Some(p) = r.json()["primary_id"]
                    .as_str()
                    .and_then(|s| s.parse::<u16>().ok())
                {
                    seen.push(p);
                }
            }
            if seen.len() == 3 && seen.iter().all(|&p| p == seen[0]) && (1..=3).contains(&seen[0]) {
                let p = seen[0];
                return (p, (1..=3).filter(|&n| n != p).collect());
            }
            assert!(Instant::now() < deadline, "no agreed primary: {seen:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The rows of `/node/network/nodes` as `node` sees them.
    async fn node_rows(&self, node: u16) -> Vec<Value> {
        let r = call(
            &self.client(node, None),
            "GET",
            "/node/network/nodes",
            None,
            &[],
        )
        .await;
        r.json()["nodes"].as_array().cloned().unwrap_or_default()
    }
}

/// SHA-256 of the `covenant` binary the nodes run: the measurement of valid virtual
/// evidence. (`VirtualQuote::for_key` would hash this test's own executable.)
fn measurement() -> String {
    static M: OnceLock<String> = OnceLock::new();
    M.get_or_init(|| {
        let exe = std::fs::read(env!("CARGO_BIN_EXE_covenant")).unwrap();
        covenant_crypto::sha256(&exe).to_hex()
    })
    .clone()
}

/// A `POST /node/join` body with valid virtual evidence for `cert`'s key (raw JSON,
/// so a `join_token` can be sent whatever the request type of the day accepts).
fn join_request(cert: &Certificate, rpc_port: u16, token: Option<&str>) -> Value {
    let spki = cert.spki_der();
    let quote = VirtualQuote {
        node_id: covenant_crypto::node_id(&spki),
        report_data: covenant_crypto::sha256(&spki).to_hex(),
        measurement: measurement(),
    };
    let mut v = json!({
        "quote_info": {
            "format": VIRTUAL_FORMAT,
            "quote": base64::engine::general_purpose::STANDARD.encode(quote.raw()),
            "endorsements": "",
        },
        "node_info_network": {"rpc_address": format!("127.0.0.1:{rpc_port}")},
        "subject_alt_names": [],
    });
    if let Some(t) = token {
        v["join_token"] = json!(t);
    }
    v
}

/// A `covenant dev --nodes 3` network in `dir/net` serving the policy app
/// ([`write_policy_app`]), its primary and its backups.
async fn policy_network(dir: &Path) -> (Network, u16, Vec<u16>) {
    let app = dir.join("app");
    write_policy_app(&app);
    let net = network(&dir.join("net"), &["--app", app.to_str().unwrap()]);
    let (primary, backups) = net.roles().await;
    (net, primary, backups)
}

/// A JS app with, for each policy of [`POLICIES`], `GET /app/authn/<policy>`
/// (readonly: served where it is sent) and `POST /app/authn/<policy>` (readwrite:
/// a backup forwards it), both answering with the caller the handler saw.
fn write_policy_app(dir: &Path) {
    let mut endpoints = serde_json::Map::new();
    for p in POLICIES {
        let ep = |mode: &str| {
            json!({"js_module": "authn.js", "js_function": "who", "authn_policies": [p],
                   "forwarding_required": "sometimes", "mode": mode})
        };
        endpoints.insert(
            format!("/authn/{p}"),
            json!({"get": ep("readonly"), "post": ep("readwrite")}),
        );
    }
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("app.json"),
        json!({ "endpoints": endpoints }).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("src/authn.js"),
        r#"
export function who(request) {
  const c = request.caller || {};
  return { body: { policy: c.policy === undefined ? null : c.policy,
                   id: c.id === undefined ? null : c.id,
                   cert: typeof c.cert === "string" ? c.cert : null } };
}
"#,
    )
    .unwrap();
}

/// A JWT issuer of the test: an ES256 key, its JWKS, tokens on demand.
struct Issuer {
    iss: String,
    kid: String,
    key: jsonwebtoken::EncodingKey,
    jwks: Value,
}

impl Issuer {
    fn new(iss: &str, kid: &str) -> Issuer {
        use jsonwebtoken::jwk::{Jwk, JwkSet};
        let key = SigningKeyPair::generate(Curve::P256).unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_der(&key.to_pkcs8_der());
        let mut jwk = Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.into());
        Issuer {
            iss: iss.into(),
            kid: kid.into(),
            key,
            jwks: serde_json::to_value(JwkSet { keys: vec![jwk] }).unwrap(),
        }
    }

    /// A valid token (10 minutes) with `claims` besides `iss` and `exp`.
    fn token(&self, claims: Value) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let mut all = json!({"iss": self.iss, "exp": exp});
        for (k, v) in claims.as_object().unwrap() {
            all[k] = v.clone();
        }
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, &all, &self.key).unwrap()
    }

    fn write_jwks(&self, path: &Path) {
        std::fs::write(path, self.jwks.to_string()).unwrap();
    }
}

/// The distinct lines of `text`, joined (curl repeats one error per transfer).
fn distinct_lines(text: &str) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for l in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !seen.contains(&l) {
            seen.push(l);
        }
    }
    seen.join(" | ")
}

/// `curl` (HTTP/1.1, no client certificate) `POST url` with headers declaring
/// `declared` body bytes, of which it sends 2: the status the node answers within
/// `max_secs`, or why there is none. A node that reads the body before it
/// authenticates never answers.
fn declare_and_stall(
    url: &str,
    cacert: &Path,
    declared: usize,
    max_secs: u32,
) -> Result<u16, String> {
    let o = Command::new("curl")
        .args(["-sS", "--http1.1", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["--max-time", &max_secs.to_string(), "--cacert"])
        .arg(cacert)
        .args(["-H", &format!("Content-Length: {declared}")])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "{}",
            url,
        ])
        .output()
        .unwrap_or_else(|e| panic!("this test needs the curl binary on PATH: {e}"));
    let code = String::from_utf8_lossy(&o.stdout).trim().to_string();
    match code.parse::<u16>() {
        Ok(c) if c != 0 => Ok(c),
        _ => Err(format!(
            "no status (curl exit {:?}: {})",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
    }
}

/// An anonymous `POST path` of `size` bytes (spaces); the answer, or the transport
/// error (a node may close the connection after answering before the body is in).
async fn anonymous_upload(
    port: u16,
    service: &Certificate,
    path: &str,
    size: usize,
    limit: Duration,
) -> Result<u16, String> {
    let c = client(port, service, None);
    let r = tokio::time::timeout(
        limit,
        c.request_raw("POST", path, Some(vec![b' '; size]), "application/json"),
    )
    .await;
    match r {
        Ok(Ok(r)) => Ok(r.status),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("timed out after {} s", limit.as_secs())),
    }
}

/// A `/proc/<pid>/status` field in kB (VmRSS, VmHWM).
fn proc_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A member0 proposal of `actions` on the `covenant dev` in `dir`, voted for.
fn propose_and_accept(dir: &Path, endpoint: &str, actions: Value) {
    let file = dir.join("security-proposal.json");
    std::fs::write(&file, json!({ "actions": actions }).to_string()).unwrap();
    let out = common::ok(common::as_member0(
        dir,
        endpoint,
        &["gov", "propose", file.to_str().unwrap(), "--json"],
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    let id = v["proposal_id"].as_str().unwrap().to_string();
    let out = common::ok(common::as_member0(
        dir,
        endpoint,
        &["gov", "vote", &id, "--accept"],
    ));
    assert!(out.contains("Accepted"), "{out}");
    // Two identical signed requests within a second would be a replay.
    std::thread::sleep(Duration::from_millis(1100));
}

// ---------------------------------------------------------------------------------
// A. Node admission

/// Finding A (node admission): anyone who could reach a node and produce virtual
/// evidence for a fresh key was trusted under the default `auto` policy and handed
/// the service key and the ledger secret. Without the join token an outsider is
/// only Pending (directly or through a backup's redirect) and receives no
/// `network_info`; a wrong token is 403 `InvalidJoinToken` and writes no row; the
/// outsider's self-signed certificate opens no `/internal` route; `covenant dev
/// --nodes N` writes the token to `<dir>/join_token` (0600, hex).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_without_the_join_token_gets_no_secrets() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let net = network(&tmp.path().join("net"), &[]);
    let (primary, backups) = net.roles().await;
    let spare = net.base + 3; // rpc addresses nobody listens on
    let mut f = Findings::default();
    let check_pending = |f: &mut Findings, what: &str, r: &HttpResponse| {
        let v = r.json();
        let text = String::from_utf8_lossy(&r.body).into_owned();
        f.check(
            r.status == 200 && v["node_status"] == json!("Pending"),
            || format!("{what}: want 200 Pending, got {}", brief(r)),
        );
        f.check(
            v.get("network_info").is_none_or(Value::is_null)
                && !text.contains("service_key")
                && !text.contains("ledger_secret")
                && !text.contains("PRIVATE KEY"),
            || format!("{what}: the answer hands out network_info: {}", brief(r)),
        );
    };

    // Straight at the primary, no token.
    let one = Identity::fresh("outsider one");
    let r = call(
        &net.client(primary, Some(&one)),
        "POST",
        JOIN_PATH,
        body(join_request(&one.cert, spare, None)),
        &[],
    )
    .await;
    check_pending(&mut f, "an outsider at the primary", &r);

    // Through a backup: a redirect to the primary, followed.
    let two = Identity::fresh("outsider two");
    let request = join_request(&two.cert, spare + 1, None);
    let r = call(
        &net.client(backups[0], Some(&two)),
        "POST",
        JOIN_PATH,
        body(request.clone()),
        &[],
    )
    .await;
    let location = header(&r, "location").map(str::to_string);
    f.check(r.status == 307 && location.is_some(), || {
        format!("a join at a backup: want 307 + location, got {}", brief(&r))
    });
    if let Some(location) = location {
        let base = location.strip_suffix(JOIN_PATH).unwrap_or(&location);
        f.check(
            base == format!("https://127.0.0.1:{}", net.port(primary)),
            || format!("the redirect goes to {location}, not the primary"),
        );
        let c = LedgerClient::new(base, &net.service, Some(two.pair())).unwrap();
        let r = call(&c, "POST", JOIN_PATH, body(request), &[]).await;
        check_pending(&mut f, "an outsider through a backup", &r);
    }

    // A wrong token: refused, nothing written.
    let three = Identity::fresh("outsider three");
    let wrong = "00".repeat(32);
    let r = call(
        &net.client(primary, Some(&three)),
        "POST",
        JOIN_PATH,
        body(join_request(&three.cert, spare + 2, Some(&wrong))),
        &[],
    )
    .await;
    f.status_code(&r, 403, "InvalidJoinToken", || {
        "a wrong join token".to_string()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = net.node_rows(primary).await;
    let id3 = three.cert.node_id();
    f.check(!rows.iter().any(|n| n["node_id"] == json!(id3)), || {
        format!("a refused join left a row: {rows:?}")
    });

    // The outsider's own certificate opens no /internal route, on any node.
    for node in 1..=3 {
        let c = net.client(node, Some(&one));
        let r = call(&c, "GET", SNAPSHOT_PATH, None, &[]).await;
        f.status(&r, 403, || {
            format!("node {node}: GET {SNAPSHOT_PATH} with a self-signed cert")
        });
        let info = json!({"status": "Trusted", "raft_id": 1, "address": format!("127.0.0.1:{spare}"),
                          "cert": one.cert.to_pem()});
        let r = call(&c, "POST", REGISTER_PATH, body(info), &[]).await;
        f.status(&r, 403, || {
            format!("node {node}: POST {REGISTER_PATH} with a self-signed cert")
        });
    }

    // The token dev writes for `covenant node join --join-token`.
    let token_file = net.dir.join("join_token");
    match std::fs::metadata(&token_file) {
        Ok(m) => {
            use std::os::unix::fs::PermissionsExt;
            let mode = m.permissions().mode() & 0o777;
            f.check(mode == 0o600, || {
                format!("{} has mode {mode:o}, want 600", token_file.display())
            });
            let t = std::fs::read_to_string(&token_file).unwrap_or_default();
            let t = t.trim();
            f.check(
                t.len() >= 32 && t.chars().all(|c| c.is_ascii_hexdigit()),
                || format!("the join token is not a hex secret of >= 16 bytes: {t:?}"),
            );
        }
        Err(e) => f.check(false, || format!("{}: {e}", token_file.display())),
    }
    f.finish();
}

/// Finding A (node admission, `pending` policy): each join request without a valid
/// token wrote a Pending row, without bound. At most 16 Pending rows; the 17th
/// distinct key gets 429 `TooManyPendingNodes` and writes nothing; a key asking
/// again never adds a second row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_join_requests_are_capped() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let net = network(&tmp.path().join("net"), &["--join-policy", "pending"]);
    let (primary, _) = net.roles().await;
    let spare = net.base + 3;
    let mut f = Findings::default();
    let keys: Vec<Identity> = (0..17)
        .map(|i| Identity::fresh(&format!("pending {i}")))
        .collect();
    let ask = |i: usize| {
        let c = net.client(primary, Some(&keys[i]));
        let request = join_request(&keys[i].cert, spare + i as u16, None);
        async move { call(&c, "POST", JOIN_PATH, body(request), &[]).await }
    };
    for i in 0..16 {
        let r = ask(i).await;
        f.check(
            r.status == 200 && r.json()["node_status"] == json!("Pending"),
            || format!("join {i}: want 200 Pending, got {}", brief(&r)),
        );
    }
    let r = ask(16).await;
    f.status_code(&r, 429, "TooManyPendingNodes", || {
        "the 17th pending join".to_string()
    });
    let pending_rows = |rows: &[Value]| {
        rows.iter()
            .filter(|n| {
                n["status"] == json!("Pending")
                    && n["node_id"].as_str().is_some_and(|s| s.len() == 64)
            })
            .count()
    };
    let rows = net.node_rows(primary).await;
    let before = pending_rows(&rows);
    f.check(before <= 16, || {
        format!("{before} Pending rows (at most 16)")
    });
    let id16 = keys[16].cert.node_id();
    f.check(!rows.iter().any(|n| n["node_id"] == json!(id16)), || {
        "the refused 17th join left a row".to_string()
    });
    // The first key asks again: still one row for it, no more rows in all.
    let r = ask(0).await;
    f.check(
        r.status == 200 && r.json()["node_status"] == json!("Pending"),
        || format!("asking again: want 200 Pending, got {}", brief(&r)),
    );
    let rows = net.node_rows(primary).await;
    let id0 = keys[0].cert.node_id();
    let mine = rows.iter().filter(|n| n["node_id"] == json!(id0)).count();
    f.check(mine == 1, || {
        format!("{mine} rows for the key that asked twice")
    });
    let after = pending_rows(&rows);
    f.check(after == before, || {
        format!("asking again changed the Pending rows from {before} to {after}")
    });
    f.finish();
}

// ---------------------------------------------------------------------------------
// B. Forwarded identity

/// Finding B (forwarded identity headers): the node-to-node headers
/// `x-covenant-forwarded`, `x-covenant-forwarded-cert`,
/// `x-covenant-forwarded-committed` and `x-covenant-forwarded-user` sent by a client that is not a node are refused with
/// 400 `InvalidInput` on the primary and on backups, whoever sends them (no
/// certificate, a stranger's, a user's): never honoured, never a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_clients_are_refused() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let (net, primary, _) = policy_network(tmp.path()).await;
    let user0 = net.dev_identity("user0");
    let stranger = Identity::fresh("stranger");
    let forged: [(&str, String); 4] = [
        ("x-covenant-forwarded", "1".into()),
        ("x-covenant-forwarded-committed", u64::MAX.to_string()),
        (
            "x-covenant-forwarded-cert",
            base64::engine::general_purpose::STANDARD.encode(user0.cert.der()),
        ),
        ("x-covenant-forwarded-user", user0.cert.user_fingerprint()),
    ];
    let routes = [
        (
            "POST",
            format!("/app/transactions?{API}"),
            json!({"contents": "forged"}),
        ),
        (
            "GET",
            format!("/app/transactions/current?{API}"),
            Value::Null,
        ),
        ("POST", "/app/authn/any_cert".to_string(), json!({})),
    ];
    let mut f = Findings::default();
    for node in 1..=3u16 {
        let role = if node == primary { "primary" } else { "backup" };
        for (who, id) in [
            ("no cert", None),
            ("a stranger", Some(&stranger)),
            ("user0", Some(&user0)),
        ] {
            let c = net.client(node, id);
            for (name, value) in &forged {
                for (method, path, b) in &routes {
                    let b = (!b.is_null()).then(|| b.to_string().into_bytes());
                    let r = call(&c, method, path, b, &[(name, value.clone())]).await;
                    f.status_code(&r, 400, "InvalidInput", || {
                        format!("node {node} ({role}), {who}, {name}: {method} {path}")
                    });
                }
            }
        }
    }
    f.finish();
}

/// Finding B (forwarded identity): a backup forwarded writes with the caller's
/// fingerprint only, so an `any_cert` readwrite endpoint refused every caller
/// through a backup and handlers saw no certificate. Now: without a certificate
/// 401 everywhere; with any self-made certificate 200 on the primary and through
/// either backup, GET (served locally) and POST (forwarded), and
/// `request.caller.cert` is the client's own certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_cert_handlers_see_the_clients_own_certificate() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let (net, primary, _) = policy_network(tmp.path()).await;
    let stranger = Identity::fresh("any cert holder");
    let mut f = Findings::default();
    for node in 1..=3u16 {
        let role = if node == primary { "primary" } else { "backup" };
        for method in ["GET", "POST"] {
            let b = (method == "POST").then(|| b"{}".to_vec());
            let r = call(
                &net.client(node, None),
                method,
                "/app/authn/any_cert",
                b.clone(),
                &[],
            )
            .await;
            f.status(&r, 401, || {
                format!("node {node} ({role}) {method} any_cert without a cert")
            });
            let r = call(
                &net.client(node, Some(&stranger)),
                method,
                "/app/authn/any_cert",
                b,
                &[],
            )
            .await;
            f.status(&r, 200, || {
                format!("node {node} ({role}) {method} any_cert with a cert")
            });
            if r.status == 200 {
                let seen = r.json()["cert"].as_str().map(Certificate::from_pem);
                let same = matches!(&seen, Some(Ok(c)) if c.der() == stranger.cert.der());
                f.check(same, || {
                    format!(
                        "node {node} ({role}) {method}: the handler saw another certificate: {}",
                        brief(&r)
                    )
                });
            }
        }
    }
    f.finish();
}

// ---------------------------------------------------------------------------------
// C. JWT identities

/// Finding C (JWT identities): a token's `oid`/`sub` was looked up in the same user
/// table as certificate fingerprints, and any trusted issuer could speak for any
/// JWT user. A token whose `oid` or `sub` is shaped like a certificate user's id
/// (user0's, an Administrator) is refused; a user created with `issuer` A accepts
/// A's tokens and refuses B's with the same `oid`; with exactly one issuer trusted,
/// a user created without `issuer` works with its tokens (ACL compatibility).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_cannot_impersonate_certificate_users_or_other_issuers() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let a = Issuer::new("https://issuer-a.test", "idp-a");
    let b = Issuer::new("https://issuer-b.test", "idp-b");
    let jwks_a = tmp.path().join("jwks-a.json");
    a.write_jwks(&jwks_a);
    let (dev, port) = common::dev(
        &dir,
        &["--jwt-issuer", &a.iss, "--jwks", jwks_a.to_str().unwrap()],
    );
    let endpoint = format!("https://127.0.0.1:{port}");
    let service = service_cert(&dir);
    let (cert, key) = dev_identity(&dir, "user0");
    let user0 = Identity { cert, key };
    let admin = client(port.parse().unwrap(), &service, Some(&user0));
    let bearer = |token: String| {
        LedgerClient::new(&endpoint, &service, None)
            .unwrap()
            .with_bearer_token(&token)
    };
    let users = format!("/app/ledgerUsers?{PREVIEW}");
    let append = format!("/app/transactions?{API}");
    let mut f = Findings::default();

    // One issuer: a user made without `issuer` is that issuer's (compatibility).
    let r = call(
        &admin,
        "PATCH",
        &format!("/app/ledgerUsers/bob-oid?{PREVIEW}"),
        body(json!({"assignedRoles": ["Contributor"]})),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", brief(&r));
    let r = call(
        &bearer(a.token(json!({"oid": "bob-oid"}))),
        "POST",
        &append,
        body(json!({"contents": "by bob"})),
        &[],
    )
    .await;
    f.status(&r, 200, || "one issuer, a user without issuer".to_string());

    // A certificate user's id as oid or sub is not a JWT user.
    let fp = user0.cert.user_fingerprint();
    for claims in [json!({"oid": fp}), json!({"sub": fp})] {
        let r = call(&bearer(a.token(claims.clone())), "GET", &users, None, &[]).await;
        f.status(&r, 401, || {
            format!("issuer A's token with {claims} (user0's fingerprint)")
        });
    }

    // Two issuers: a user bound to A.
    propose_and_accept(
        &dir,
        &endpoint,
        json!([{"name": "set_jwt_issuer", "args": {"issuer": b.iss, "jwks": b.jwks}}]),
    );
    let r = call(
        &admin,
        "PATCH",
        &format!("/app/ledgerUsers/alice-oid?{PREVIEW}"),
        body(json!({"assignedRoles": ["Administrator"], "issuer": a.iss})),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", brief(&r));
    let r = call(
        &bearer(a.token(json!({"oid": "alice-oid"}))),
        "GET",
        &users,
        None,
        &[],
    )
    .await;
    f.status(&r, 200, || "issuer A's token for A's user".to_string());
    let r = call(
        &bearer(b.token(json!({"oid": "alice-oid"}))),
        "GET",
        &users,
        None,
        &[],
    )
    .await;
    f.status(&r, 401, || "issuer B's token for A's user".to_string());
    let r = call(
        &bearer(b.token(json!({"oid": fp}))),
        "GET",
        &users,
        None,
        &[],
    )
    .await;
    f.status(&r, 401, || {
        "issuer B's token with user0's fingerprint".to_string()
    });
    // bob was made while A was the only issuer: he is A's, and stays A's.
    let r = call(
        &admin,
        "GET",
        &format!("/app/ledgerUsers/bob-oid?{PREVIEW}"),
        None,
        &[],
    )
    .await;
    f.check(r.json()["issuer"] == json!(a.iss), || {
        format!("bob's binding: want issuer A, got {}", brief(&r))
    });
    for (who, token, want) in [
        ("A", a.token(json!({"oid": "bob-oid"})), 200),
        ("B", b.token(json!({"oid": "bob-oid"})), 401),
    ] {
        let r = call(
            &bearer(token),
            "POST",
            &append,
            body(json!({"contents": "by bob"})),
            &[],
        )
        .await;
        f.check(r.status == want, || {
            format!(
                "two issuers, {who}'s token for bob: want {want}, got {}",
                brief(&r)
            )
        });
    }
    // A user made without an issuer while two are trusted belongs to neither.
    let r = call(
        &admin,
        "PATCH",
        &format!("/app/ledgerUsers/carol-oid?{PREVIEW}"),
        body(json!({"assignedRoles": ["Reader"]})),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", brief(&r));
    for (who, token) in [
        ("A", a.token(json!({"oid": "carol-oid"}))),
        ("B", b.token(json!({"oid": "carol-oid"}))),
    ] {
        let r = call(
            &bearer(token),
            "GET",
            &format!("/app/transactions/current?{API}"),
            None,
            &[],
        )
        .await;
        f.check(r.status == 401 && message(&r).contains("bound to no token issuer"), || {
            format!(
                "two issuers, {who}'s token for unbound carol: want 401 naming the missing binding, got {}",
                brief(&r)
            )
        });
    }
    drop(dev);
    f.finish();
}

// ---------------------------------------------------------------------------------
// D. Request bodies

/// Finding D (request bodies): a backup read and buffered up to 64 MiB of any write
/// before anything checked the caller (and copied it to forward it), and the
/// primary answered a forwarded anonymous write as the backup node itself. Now an
/// anonymous `POST /app/transactions` is 401 before its body is read on every node;
/// six parallel 50 MB anonymous uploads to a backup grow its RSS by < 64 MB and
/// each ends in 401/413 (or a broken connection); the 401 does not name the
/// backup's certificate; a user's body over `max_body_bytes` (1 MiB) is 413, ledger
/// API and app endpoints alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_bodies_are_refused_before_they_are_read() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let (net, primary, backups) = policy_network(tmp.path()).await;
    let append = format!("/app/transactions?{API}");
    let mut f = Findings::default();

    // The 401 of an anonymous write through a backup names no node.
    for &b in &backups {
        let node = net.node_identity(b);
        let (fp, id) = (node.cert.user_fingerprint(), node.cert.node_id());
        let r = call(
            &net.client(b, None),
            "POST",
            &append,
            body(json!({"contents": "anonymous"})),
            &[],
        )
        .await;
        let m = message(&r);
        f.status(&r, 401, || format!("backup {b}: an anonymous write"));
        f.check(
            !m.contains(&fp) && !m.to_ascii_lowercase().contains(&id),
            || format!("backup {b}: the 401 names the backup's own certificate: {m}"),
        );
    }

    // Headers declaring 50 MB and no body: the 401 comes at once, on every node.
    for node in 1..=3u16 {
        let url = format!("https://127.0.0.1:{}{append}", net.port(node));
        let cacert = net.dir.join("service_cert.pem");
        let got =
            tokio::task::spawn_blocking(move || declare_and_stall(&url, &cacert, 50 << 20, 5))
                .await
                .unwrap();
        f.check(got == Ok(401), || {
            format!("node {node} (primary {primary}): 50 MB declared, 2 bytes sent: want 401 within 5 s, got {got:?}")
        });
    }

    // Six parallel anonymous 50 MB uploads to a backup.
    let backup = backups[0];
    let pid = pid_of(&net.dir, backup);
    let rss_before = proc_kb(pid, "VmRSS");
    let hwm_before = proc_kb(pid, "VmHWM");
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(proc_kb(pid, "VmRSS"));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let uploads: Vec<_> = (0..6)
        .map(|_| {
            let service = net.service.clone();
            let port = net.port(backup);
            let path = append.clone();
            tokio::spawn(async move {
                anonymous_upload(port, &service, &path, 50 << 20, Duration::from_secs(60)).await
            })
        })
        .collect();
    let mut ends = Vec::new();
    for u in uploads {
        ends.push(u.await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut peak = sampler.join().unwrap();
    let hwm_after = proc_kb(pid, "VmHWM");
    if hwm_after > hwm_before {
        peak = peak.max(hwm_after);
    }
    let growth_mb = peak.saturating_sub(rss_before) / 1024;
    eprintln!(
        "backup {backup}: RSS {} MB before, peak {} MB; uploads: {ends:?}",
        rss_before / 1024,
        peak / 1024
    );
    f.check(growth_mb < 64, || {
        format!(
            "six 50 MB anonymous uploads grew backup {backup}'s RSS by {growth_mb} MB (want < 64)"
        )
    });
    for (i, u) in ends.iter().enumerate() {
        // A transport error is the connection closed after (or instead of reading)
        // the early answer; a timeout is not.
        let ok = match u {
            Ok(status) => matches!(status, 401 | 413),
            Err(e) => !e.contains("timed out"),
        };
        f.check(ok, || {
            format!("upload {i}: want 401/413 or a closed connection, got {u:?}")
        });
    }
    let r = call(&net.client(backup, None), "GET", "/node/commit", None, &[]).await;
    f.check(r.status == 200, || {
        format!("backup {backup} after the uploads: {}", brief(&r))
    });

    // A stranger's self-made certificate is a credential, but not a user's: the
    // backup authenticates it itself and answers 401 without forwarding anything
    // (the primary's count of 4xx answers does not move), for the ledger API and a
    // readwrite user_cert endpoint alike.
    let stranger = Identity::fresh("stranger with a body");
    let primary_4xx = || async {
        let r = call(
            &net.client(primary, None),
            "GET",
            "/node/metrics",
            None,
            &[],
        )
        .await;
        String::from_utf8_lossy(&r.body)
            .lines()
            .find_map(|l| l.strip_prefix("covenant_requests_total{status=\"4xx\"} "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    let before = primary_4xx().await;
    let nearly_1mib = json!({"contents": "y".repeat((1 << 20) - 1024)});
    for path in [append.as_str(), "/app/authn/user_cert"] {
        for _ in 0..3 {
            let r = call(
                &net.client(backup, Some(&stranger)),
                "POST",
                path,
                body(nearly_1mib.clone()),
                &[],
            )
            .await;
            f.status(&r, 401, || {
                format!("a stranger's POST {path} through backup {backup}")
            });
        }
    }
    let after = primary_4xx().await;
    f.check(before == after, || {
        format!("the primary answered the stranger's forwarded writes: its 4xx count went {before} -> {after}")
    });

    // ... yet a user added on the primary a moment ago is not refused by a backup
    // that has not caught up: the backup looks again as transactions arrive.
    let user0 = net.dev_identity("user0");
    let admin = net.client(primary, Some(&user0));
    for i in 0..5 {
        let newcomer = Identity::fresh(&format!("newcomer {i}"));
        let fp = newcomer.cert.user_fingerprint();
        let r = call(
            &admin,
            "PATCH",
            &format!("/app/ledgerUsers/{fp}?{PREVIEW}"),
            body(json!({"assignedRoles": ["Contributor"]})),
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{}", brief(&r));
        let r = call(
            &net.client(backup, Some(&newcomer)),
            "POST",
            &append,
            body(json!({"contents": "right after being added"})),
            &[],
        )
        .await;
        f.status(&r, 200, || {
            format!("newcomer {i} writing through backup {backup} right after being added")
        });
    }

    // A user's body over 1 MiB: 413, for the ledger API and an app endpoint.
    let big = json!({"contents": "x".repeat((1 << 20) + 1024)});
    for node in 1..=3u16 {
        let c = net.client(node, Some(&user0));
        for path in [append.as_str(), "/app/authn/user_cert"] {
            let r = call(&c, "POST", path, body(big.clone()), &[]).await;
            f.status(&r, 413, || {
                format!("node {node} (primary {primary}): user0 POST {path} with > 1 MiB")
            });
        }
    }
    f.finish();
}

// ---------------------------------------------------------------------------------
// E. Connections

/// Holds a connection to `port` from `source` open without sending a byte until
/// `until` (after waiting `start`), opening a new one 250 ms after the node closes
/// it; counts the connections opened.
async fn hold_open(
    port: u16,
    source: Ipv4Addr,
    start: Duration,
    until: Instant,
    opened: Arc<AtomicUsize>,
) {
    tokio::time::sleep(start).await;
    let until = tokio::time::Instant::from_std(until);
    while tokio::time::Instant::now() < until {
        let connected = async {
            let socket = tokio::net::TcpSocket::new_v4().ok()?;
            socket.bind(SocketAddr::from((source, 0))).ok()?;
            let target = SocketAddr::from(([127, 0, 0, 1], port));
            tokio::time::timeout(Duration::from_secs(2), socket.connect(target))
                .await
                .ok()?
                .ok()
        };
        if let Some(mut stream) = connected.await {
            opened.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 64];
            tokio::select! {
                _ = stream.read(&mut buf) => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Established TCP connections whose local end is 127.0.0.1:`port` (the node's
/// side, from /proc/net/tcp): what the flood really holds. A connect() that
/// overflowed the accept queue succeeds on the client side without any.
fn node_side_connections(port: u16) -> usize {
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let mut cols = l.split_whitespace().skip(1);
            cols.next() == Some(local.as_str()) && cols.nth(1) == Some("01")
        })
        .count()
}

/// Finding E (connections): 1,024 idle TCP connections that never start their TLS
/// handshake held every connection slot for the 10 s handshake timeout, locking out
/// every real client, and one address could take all of them. Under a flood of
/// 1,100 idle connections from 127.0.0.2..9 (plus anonymous oversized uploads), a
/// user appends an entry and reads it back within a few seconds while the flood
/// still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_does_not_lock_out_a_real_client() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let (dev, port) = common::dev(&dir, &["--sig-ms-interval", "100"]);
    let port: u16 = port.parse().unwrap();
    let service = service_cert(&dir);
    let (cert, key) = dev_identity(&dir, "user0");
    let user0 = Identity { cert, key };
    let user = client(port, &service, Some(&user0));

    // 1,100 connections, one every 2 ms (a burst would overflow the accept queue and
    // leave connections that exist on the client side only).
    let flood_end = Instant::now() + Duration::from_secs(13);
    let opened = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for k in 0..1100u32 {
        let source = Ipv4Addr::new(127, 0, 0, 2 + (k % 8) as u8);
        tasks.push(tokio::spawn(hold_open(
            port,
            source,
            Duration::from_millis(2 * u64::from(k)),
            flood_end,
            opened.clone(),
        )));
    }
    let uploaded = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let service = service.clone();
        let uploaded = uploaded.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() + Duration::from_secs(1) < flood_end {
                let path = format!("/app/transactions?{API}");
                let limit = Duration::from_secs(3);
                if anonymous_upload(port, &service, &path, 8 << 20, limit)
                    .await
                    .is_ok()
                {
                    uploaded.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    // Let the flood fill the node's slots.
    let ramp = Instant::now() + Duration::from_secs(4);
    while opened.load(Ordering::Relaxed) < 1100 && Instant::now() < ramp {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = node_side_connections(port);

    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(6);
    let mut txid = None;
    let mut last = String::new();
    while txid.is_none() && Instant::now() < deadline {
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            user.request(
                "POST",
                &format!("/app/transactions?{API}"),
                Some(&json!({"contents": "through the flood"})),
            ),
        )
        .await;
        match r {
            Ok(Ok(r)) if r.status == 200 => txid = r.transaction_id,
            Ok(Ok(r)) => last = brief(&r),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no answer within 2 s".into(),
        }
        if txid.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut read_back = false;
    if let Some(t) = &txid {
        while !read_back && Instant::now() < deadline {
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                user.request("GET", &format!("/app/transactions/{t}?{API}"), None),
            )
            .await;
            match r {
                Ok(Ok(r)) if r.status == 200 => {
                    read_back = r.json()["entry"]["contents"] == json!("through the flood");
                    last = brief(&r);
                }
                Ok(Ok(r)) => last = brief(&r),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "no answer within 2 s".into(),
            }
            if !read_back {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let took = t0.elapsed();
    let during_flood = Instant::now() < flood_end;
    let flood = format!(
        "flood: {} connections opened, {held} held by the node when the user started; \
         {} anonymous 8 MB uploads answered",
        opened.load(Ordering::Relaxed),
        uploaded.load(Ordering::Relaxed)
    );
    eprintln!("{flood}; the user's append and read took {took:?}");
    for t in tasks {
        let _ = t.await;
    }
    drop(dev);
    assert!(held >= 1000, "the flood did not fill the node: {flood}");
    assert!(
        txid.is_some() && read_back && during_flood,
        "user0 could not append and read back within 6 s during the flood \
         (appended: {txid:?}, read back: {read_back}, flood still running: {during_flood}); \
         last answer: {last}; {flood}"
    );
}

// ---------------------------------------------------------------------------------
// F. Small ones

/// Finding F (request parsing): any non-empty `api-version` was accepted; an
/// invalid UTF-8 `collectionId` was decoded lossily into a collection named
/// U+FFFD; over HTTP/2 a bad token with a body the node never reads must still be a
/// clean 401 on every stream. Now: unknown api-version → 400 `QueryParameterError`
/// (missing: 400 too), `collectionId=%FF` → 400 `InvalidInput`, and 20 HTTP/2
/// POSTs with `Bearer garbage` and 100 KB bodies each get a clean 401 (curl, one
/// connection, sequential and multiplexed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_clean_errors() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let (dev, port) = common::dev(&dir, &["--http2"]);
    let service = service_cert(&dir);
    let (cert, key) = dev_identity(&dir, "user0");
    let user0 = Identity { cert, key };
    let c = client(port.parse().unwrap(), &service, Some(&user0));
    let entry = json!({"contents": "x"});
    let mut f = Findings::default();

    let cases = [
        (
            "POST",
            "/app/transactions?api-version=1999-01-01".to_string(),
            400,
            "QueryParameterError",
        ),
        (
            "GET",
            "/app/transactions/current?api-version=1999-01-01".to_string(),
            400,
            "QueryParameterError",
        ),
        (
            "POST",
            "/app/transactions".to_string(),
            400,
            "QueryParameterError",
        ),
        (
            "GET",
            "/app/transactions/current".to_string(),
            400,
            "QueryParameterError",
        ),
        (
            "POST",
            format!("/app/transactions?{API}&collectionId=%FF"),
            400,
            "InvalidInput",
        ),
        (
            "GET",
            format!("/app/transactions/current?{API}&collectionId=%FF"),
            400,
            "InvalidInput",
        ),
        (
            "GET",
            format!("/app/transactions?{API}&collectionId=%FF"),
            400,
            "InvalidInput",
        ),
    ];
    for (method, path, status, want) in &cases {
        let b = (*method == "POST").then(|| entry.to_string().into_bytes());
        let r = call(&c, method, path, b, &[]).await;
        f.check(r.status == *status && code(&r) == *want, || {
            format!("{method} {path}: want {status} {want}, got {}", brief(&r))
        });
    }

    // A streamed body (chunked, no length declared) over max_body_bytes stops at
    // the cap: 413 in covenant's error shape, for a user of the ledger, and the
    // client (still sending) receives it.
    let big = tmp.path().join("1.5m.json");
    std::fs::write(&big, json!({"contents": "z".repeat(3 << 19)}).to_string()).unwrap();
    let o = Command::new("curl")
        .args(["-sS", "--http1.1", "--max-time", "60", "--cacert"])
        .arg(dir.join("service_cert.pem"))
        .arg("--cert")
        .arg(dir.join("user0.pem"))
        .args([
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
        ])
        .arg(format!("@{}", big.display()))
        .args(["-w", "\nSTATUS %{http_code}\n"])
        .arg(format!("https://127.0.0.1:{port}/app/transactions?{API}"))
        .output()
        .unwrap_or_else(|e| panic!("this test needs the curl binary on PATH: {e}"));
    let out = String::from_utf8_lossy(&o.stdout);
    f.check(
        out.contains("STATUS 413") && out.contains("PayloadTooLarge"),
        || format!("a chunked 1.5 MiB body: want 413 PayloadTooLarge, got {out}"),
    );

    // HTTP/2: bad tokens with bodies the node does not read.
    let file = tmp.path().join("100k.json");
    std::fs::write(
        &file,
        json!({"contents": "y".repeat(100 << 10)}).to_string(),
    )
    .unwrap();
    let url = format!("https://127.0.0.1:{port}/app/transactions?{API}");
    for parallel in [false, true] {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--no-progress-meter", "--http2", "--max-time", "60"])
            .arg("--cacert")
            .arg(dir.join("service_cert.pem"))
            .args([
                "-H",
                "Authorization: Bearer garbage",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
            ])
            .arg(format!("@{}", file.display()))
            .args(["-w", "\nSTATUS %{http_code} %{http_version}\n"]);
        if parallel {
            cmd.args(["--parallel", "--parallel-max", "20"]);
        }
        for _ in 0..20 {
            cmd.arg(&url);
        }
        let o = match cmd.output() {
            Ok(o) => o,
            Err(e) => panic!("this test needs the curl binary (with HTTP/2) on PATH: {e}"),
        };
        let out = String::from_utf8_lossy(&o.stdout);
        let statuses: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("STATUS "))
            .collect();
        let mode = if parallel {
            "multiplexed"
        } else {
            "sequential"
        };
        f.check(
            o.status.success()
                && statuses.len() == 20
                && statuses.iter().all(|s| *s == "401 2"),
            || {
                format!(
                    "HTTP/2 ({mode}) bad tokens with 100 KB bodies: want 20 × \"401 2\" and curl exit 0, \
                     got exit {:?}, {statuses:?}, stderr {}",
                    o.status.code(),
                    distinct_lines(&String::from_utf8_lossy(&o.stderr))
                )
            },
        );
    }
    drop(dev);
    f.finish();
}

// ---------------------------------------------------------------------------------
// G. The matrix

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    NoCert,
    Stranger,
    Reader,
    Contributor,
    Administrator,
    Member,
    JwtUser,
    BackupNode,
}

#[derive(Clone, Copy, Debug)]
enum Route {
    App(&'static str, &'static str),
    Append,
    Current,
    Users,
}

impl Route {
    fn request(self) -> (&'static str, String, Option<Vec<u8>>) {
        match self {
            Route::App(method, policy) => (
                method,
                format!("/app/authn/{policy}"),
                (method == "POST").then(|| b"{}".to_vec()),
            ),
            Route::Append => (
                "POST",
                format!("/app/transactions?{API}"),
                body(json!({"contents": "matrix"})),
            ),
            Route::Current => ("GET", format!("/app/transactions/current?{API}"), None),
            Route::Users => ("GET", format!("/app/ledgerUsers?{PREVIEW}"), None),
        }
    }
}

/// What `who` must get from `route` (the JWT user is a Contributor).
fn expected(who: Who, route: Route) -> u16 {
    use Who::*;
    let user = matches!(who, Reader | Contributor | Administrator | JwtUser);
    let has_cert = !matches!(who, NoCert | JwtUser);
    let yes = |b: bool| if b { 200 } else { 401 };
    match route {
        Route::App(_, "user_cert") => yes(matches!(who, Reader | Contributor | Administrator)),
        Route::App(_, "member_cert") => yes(who == Member),
        Route::App(_, "any_cert") => yes(has_cert),
        Route::App(_, "jwt") => yes(who == JwtUser),
        Route::App(_, _) => 200,
        _ if !user => 401,
        Route::Append => {
            if who == Reader {
                403
            } else {
                200
            }
        }
        Route::Current => 200,
        Route::Users => {
            if who == Administrator {
                200
            } else {
                403
            }
        }
    }
}

/// Finding G (consistency of authorization): every identity — none, a stranger's
/// certificate, Reader/Contributor/Administrator users, member0, a JWT user, a
/// backup node's own certificate — gets from every route (app endpoints of each
/// policy, readonly GET and forwarded readwrite POST; the ledger API) the same
/// status through a backup as from the primary, and the expected one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_identity_gets_the_same_answer_from_primary_and_backup() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    write_policy_app(&app);
    let idp = Issuer::new("https://matrix-idp.test", "matrix");
    let jwks = tmp.path().join("jwks.json");
    idp.write_jwks(&jwks);
    let net = network(
        &tmp.path().join("net"),
        &[
            "--app",
            app.to_str().unwrap(),
            "--jwt-issuer",
            &idp.iss,
            "--jwks",
            jwks.to_str().unwrap(),
        ],
    );
    let (primary, backups) = net.roles().await;
    let via_backup = backups[0];
    let user0 = net.dev_identity("user0");
    let admin0 = net.client(primary, Some(&user0));

    // The users, made by user0 (an Administrator) by fingerprint / oid.
    let reader = Identity::fresh("reader");
    let contributor = Identity::fresh("contributor");
    let administrator = Identity::fresh("administrator");
    let jwt_oid = "matrix-jwt-user";
    for (id, role) in [
        (reader.cert.user_fingerprint(), "Reader"),
        (contributor.cert.user_fingerprint(), "Contributor"),
        (administrator.cert.user_fingerprint(), "Administrator"),
        (jwt_oid.to_string(), "Contributor"),
    ] {
        let r = call(
            &admin0,
            "PATCH",
            &format!("/app/ledgerUsers/{id}?{PREVIEW}"),
            body(json!({ "assignedRoles": [role] })),
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "making {id} a {role}: {}", brief(&r));
    }
    // An entry for /current, seen by the backup (and with it, the users above).
    let r = call(
        &admin0,
        "POST",
        &format!("/app/transactions?{API}"),
        body(json!({"contents": "setup"})),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", brief(&r));
    let txid = r.transaction_id.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = call(
            &net.client(via_backup, Some(&user0)),
            "GET",
            &format!("/app/transactions/{txid}/status?{API}"),
            None,
            &[],
        )
        .await;
        if r.json()["state"] == json!("Committed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "setup not replicated: {}",
            brief(&r)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stranger = Identity::fresh("stranger");
    let member0 = net.dev_identity("member0");
    let node = net.node_identity(backups[1]);
    let token = idp.token(json!({ "oid": jwt_oid }));
    let identities: [(Who, Option<&Identity>); 8] = [
        (Who::NoCert, None),
        (Who::Stranger, Some(&stranger)),
        (Who::Reader, Some(&reader)),
        (Who::Contributor, Some(&contributor)),
        (Who::Administrator, Some(&administrator)),
        (Who::Member, Some(&member0)),
        (Who::JwtUser, None),
        (Who::BackupNode, Some(&node)),
    ];
    let mut routes = Vec::new();
    for p in POLICIES {
        routes.push(Route::App("GET", p));
        routes.push(Route::App("POST", p));
    }
    routes.extend([Route::Append, Route::Current, Route::Users]);

    let mut f = Findings::default();
    let mut table = Vec::new();
    for (who, id) in identities {
        let mut clients = [primary, via_backup].map(|n| net.client(n, id));
        if who == Who::JwtUser {
            clients = clients.map(|c| c.with_bearer_token(&token));
        }
        for &route in &routes {
            let (method, path, b) = route.request();
            let mut got = Vec::new();
            for c in &clients {
                // A 503 (an election) is retried; it is never an expected answer.
                let mut r = call(c, method, &path, b.clone(), &[]).await;
                for _ in 0..5 {
                    if r.status != 503 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    r = call(c, method, &path, b.clone(), &[]).await;
                }
                got.push(r);
            }
            let want = expected(who, route);
            let (p, b) = (got[0].status, got[1].status);
            table.push(format!(
                "{who:?} {method} {path}: primary {p}, backup {b}, want {want}"
            ));
            f.check(p == want && b == want, || {
                format!(
                    "{who:?} {method} {path}: want {want}; primary {} / backup {}",
                    brief(&got[0]),
                    brief(&got[1])
                )
            });
        }
    }
    eprintln!("{}", table.join("\n"));
    f.finish();
}

/// The older governance proofs, through a backup: a member's TLS certificate
/// (only for the state digest) reaches the primary as the member's, and an HTTP
/// signature (scurl.sh's form) verifies there as sent, once: the same signed
/// request again, through the other backup, is a replay; a stranger's certificate,
/// another key under the member's keyId, or a changed body get 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_governance_proofs_hold_through_a_backup() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("net");
    let net = network(&dir, &["--members", "2"]);
    let (_, backups) = net.roles().await;
    let member = net.dev_identity("member1");
    let stranger = Identity::fresh("stranger");
    let mut f = Findings::default();
    let digest_path = "/gov/ack/update_state_digest";

    for (who, id, want) in [
        ("no certificate", None, 401),
        ("a stranger", Some(&stranger), 401),
        ("member1", Some(&member), 200),
    ] {
        let r = call(&net.client(backups[0], id), "POST", digest_path, None, &[]).await;
        f.status(&r, want, || {
            format!("{digest_path} through a backup as {who}")
        });
    }
    let r = call(
        &net.client(backups[0], Some(&member)),
        "POST",
        digest_path,
        None,
        &[],
    )
    .await;
    let digest = r.json()["state_digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ack = json!({ "state_digest": digest }).to_string().into_bytes();

    // scurl.sh's headers, signed by `key` under member1's keyId.
    let member_pem = std::fs::read(dir.join("member1_cert.pem")).unwrap();
    let signed = |key: &SigningKeyPair, body: &[u8]| -> Vec<(&'static str, String)> {
        let d = format!(
            "SHA-256={}",
            base64::engine::general_purpose::STANDARD.encode(covenant_crypto::sha256(body).0)
        );
        let string = format!(
            "(request-target): post /gov/ack\ndigest: {d}\ncontent-length: {}",
            body.len()
        );
        let sig =
            base64::engine::general_purpose::STANDARD.encode(key.sign(string.as_bytes()).unwrap());
        let key_id = covenant_crypto::sha256(&member_pem).to_hex();
        vec![
            ("digest", d),
            (
                "authorization",
                format!(
                    "Signature keyId=\"{key_id}\",algorithm=\"hs2019\",headers=\"(request-target) digest content-length\",signature=\"{sig}\""
                ),
            ),
        ]
    };
    let good = signed(&member.key, &ack);
    let forged = signed(&stranger.key, &ack);
    let anyone = |node: u16| net.client(node, None);
    let r = call(
        &anyone(backups[0]),
        "POST",
        "/gov/ack",
        Some(ack.clone()),
        &forged,
    )
    .await;
    f.status(&r, 401, || "an HTTP signature by another key".into());
    let r = call(
        &anyone(backups[0]),
        "POST",
        "/gov/ack",
        Some(b"{}".to_vec()),
        &good,
    )
    .await;
    f.status(&r, 401, || "an HTTP signature over another body".into());
    let r = call(
        &anyone(backups[0]),
        "POST",
        "/gov/ack",
        Some(ack.clone()),
        &good,
    )
    .await;
    f.check(r.status == 200 && r.json()["status"] == "Active", || {
        format!("an HTTP-signed ack through a backup: {}", brief(&r))
    });
    let r = call(
        &anyone(backups[1]),
        "POST",
        "/gov/ack",
        Some(ack.clone()),
        &good,
    )
    .await;
    f.status_code(&r, 409, "RequestReplayed", || {
        "the same HTTP-signed ack through the other backup".into()
    });
    f.finish();
}
