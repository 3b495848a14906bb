//! `covenant dev --nodes N`: a replicated network on one machine, each node its own
//! process (`covenant node start --config DIR/node<i>/node.toml`), so a test or a
//! user can kill one by the pid in `DIR/node<i>/node.pid`. Nothing is restarted
//! automatically.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use covenant_client::LedgerClient;
use covenant_crypto::{
    read_pem_file, write_private_file, Certificate, Curve, LedgerSecret, NodeIdentity,
    ServiceIdentity, SigningKeyPair, SubjectAltName,
};

use crate::{DevOptions, JwksSource, LedgerType};

/// The dev network's join token, beside its service certificate.
const JOIN_TOKEN_FILE: &str = "join_token";

fn node_dir(dir: &Path, i: u16) -> PathBuf {
    dir.join(format!("node{i}"))
}

/// Creates the service, user0, member0 and one identity directory per node.
fn create(dir: &Path, nodes: u16, members: u16, ledger_type: LedgerType) -> Result<()> {
    let service = ServiceIdentity::generate(Curve::P384)?;
    service.save(dir)?;
    crate::write_dev_user_and_members(dir, members)?;
    // The secret that lets `covenant node join --join-token` admit a node at once;
    // every node's configuration names it so the first primary records its digest.
    write_private_file(
        &dir.join(JOIN_TOKEN_FILE),
        covenant_crypto::random_token()?.as_bytes(),
    )?;
    // dev only: every node gets the ledger secret directly (a production join
    // receives it encrypted to the node's key).
    let secret = LedgerSecret::generate()?;
    let secret_b64 = base64::engine::general_purpose::STANDARD.encode(secret.expose_bytes());
    let word = if ledger_type == LedgerType::Public {
        "public"
    } else {
        "private"
    };
    for i in 1..=nodes {
        let nd = node_dir(dir, i);
        std::fs::create_dir_all(&nd).with_context(|| format!("creating {}", nd.display()))?;
        service.save(&nd)?;
        NodeIdentity::generate(&service, Curve::P384, &SubjectAltName::dev_defaults())?
            .save(&nd.join("node"))?;
        write_private_file(&nd.join(crate::LEDGER_SECRETS_FILE), secret_b64.as_bytes())?;
        std::fs::write(nd.join("ledger_type"), word)?;
    }
    Ok(())
}

fn toml_str(s: &str) -> String {
    // TOML basic strings share JSON's escapes for what can appear here.
    serde_json::Value::String(s.to_string()).to_string()
}

fn abs(p: &Path) -> Result<String> {
    let p = std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))?;
    Ok(toml_str(&p.to_string_lossy()))
}

/// The `jwt_issuers` line of every node's configuration, from dev's --jwt-* options.
fn jwt_toml(o: &DevOptions) -> Result<String> {
    let (issuer, source) = match (&o.jwt_issuer, &o.jwks) {
        (None, _) => return Ok(String::new()),
        (Some(i), Some(s)) => (i, s),
        (Some(_), None) => bail!("--jwt-issuer needs --jwks or --jwks-url"),
    };
    let mut t = format!("jwt_issuers = [{{ issuer = {}", toml_str(issuer));
    match source {
        JwksSource::File(f) => t.push_str(&format!(", jwks_file = {}", abs(f)?)),
        JwksSource::Url(u, ca) => {
            t.push_str(&format!(", jwks_url = {}", toml_str(u)));
            if let Some(ca) = ca {
                t.push_str(&format!(", jwks_ca = {}", abs(ca)?));
            }
        }
    }
    if let Some(a) = &o.jwt_audience {
        t.push_str(&format!(", audience = {}", toml_str(a)));
    }
    t.push_str(" }]\n");
    Ok(t)
}

fn write_config(
    dir: &Path,
    i: u16,
    nodes: u16,
    o: &DevOptions,
    ledger_type: LedgerType,
) -> Result<PathBuf> {
    let DevOptions {
        port,
        sig_ms_interval,
        sig_tx_interval,
        max_body_bytes,
        http2,
        ref ledger_id,
        ..
    } = *o;
    let peers: Vec<String> = (1..=nodes)
        .map(|j| {
            format!(
                "  {{ id = {j}, address = \"127.0.0.1:{}\" }},",
                port + j - 1
            )
        })
        .collect();
    let text = format!(
        "# Written by `covenant dev --nodes {nodes}`; rewritten at every start.\n\
         data_dir = \".\"\n\
         listen = \"127.0.0.1:{listen}\"\n\
         ledger_type = \"{ty}\"\n\
         ledger_id = \"{ledger_id}\"\n\
         sig_ms_interval = {sig_ms_interval}\n\
         sig_tx_interval = {sig_tx_interval}\n\
         max_body_bytes = {max_body_bytes}\n\
         http2 = {http2}\n\
         join_policy = \"{join_policy}\"\n\
         # dev keeps the secrets in files so the network resumes after Ctrl-C.\n\
         secrets_at_rest = true\n\
         {join_token}\
         users = [{{ cert = \"../user0_cert.pem\", roles = [\"Administrator\"] }}]\n\
         members = [{members}]\n\
         {jwt}\
         \n\
         [network]\n\
         node_id = {i}\n\
         peers = [\n{peers}\n]\n",
        listen = port + i - 1,
        sig_ms_interval = sig_ms_interval.max(1),
        sig_tx_interval = sig_tx_interval.max(1),
        ty = if ledger_type == LedgerType::Public {
            "public"
        } else {
            "private"
        },
        peers = peers.join("\n"),
        jwt = jwt_toml(o)?,
        join_policy = o.join_policy,
        join_token = if dir.join(JOIN_TOKEN_FILE).exists() {
            format!("join_token_file = \"../{JOIN_TOKEN_FILE}\"\n")
        } else {
            String::new()
        },
        members = crate::dev_member_certs(dir)?
            .iter()
            .filter_map(|p| {
                let cert = p.file_name()?.to_str()?.to_string();
                let enc = crate::dev_member_encryption_key(p);
                Some(match enc.file_name().and_then(|n| n.to_str()) {
                    Some(e) if enc.exists() => {
                        format!("{{ cert = \"../{cert}\", encryption_pub_key = \"../{e}\" }}")
                    }
                    _ => format!("{{ cert = \"../{cert}\" }}"),
                })
            })
            .collect::<Vec<_>>()
            .join(", "),
    );
    let path = node_dir(dir, i).join("node.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn spawn(dir: &Path, i: u16, config: &Path) -> Result<Child> {
    let nd = node_dir(dir, i);
    let log = std::fs::File::create(nd.join("node.log"))?;
    let exe = std::env::current_exe().context("locating the covenant binary")?;
    let child = Command::new(exe)
        .args(["node", "start", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting node {i}"))?;
    std::fs::write(nd.join("node.pid"), format!("{}\n", child.id()))?;
    Ok(child)
}

/// Waits until every node has committed everything the primary holds (its last
/// TxId as user0 sees it there): the users, the opened service and any deployed app
/// are then served by whichever node a client picks.
async fn wait_ready(dir: &Path, port: u16, children: &mut [Child]) -> Result<()> {
    let service = Certificate::from_pem(&read_pem_file(&dir.join("service_cert.pem"))?)?;
    let cert = Certificate::from_pem(&read_pem_file(&dir.join("user0_cert.pem"))?)?;
    let key = SigningKeyPair::from_pem(&read_pem_file(&dir.join("user0_privk.pem"))?)?;
    let clients = (0..children.len() as u16)
        .map(|i| {
            LedgerClient::new(
                &format!("https://127.0.0.1:{}", port + i),
                &service,
                Some((&cert, &key)),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let seqno = |t: Option<&str>| {
        t.and_then(|t| t.split_once('.'))
            .and_then(|(_, s)| s.parse::<u64>().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_progress = Instant::now();
    loop {
        for (i, c) in children.iter_mut().enumerate() {
            if let Some(status) = c.try_wait()? {
                bail!(
                    "node {} exited ({status}) before the network was ready; see {}",
                    i + 1,
                    node_dir(dir, i as u16 + 1).join("node.log").display()
                );
            }
        }
        // The primary's last TxId, then every node's commit point.
        let mut want = None;
        for c in &clients {
            if let Ok(r) = c.request("GET", "/node/primary", None).await {
                if r.status == 200 {
                    let users = c
                        .request(
                            "GET",
                            "/app/ledgerUsers?api-version=2024-12-09-preview",
                            None,
                        )
                        .await;
                    want = users
                        .ok()
                        .filter(|r| r.status == 200)
                        .and_then(|r| seqno(r.transaction_id.as_deref()));
                    break;
                }
            }
        }
        if let Some(want) = want {
            let mut all = true;
            for c in &clients {
                let r = c.request("GET", "/node/commit", None).await;
                let committed = r.ok().and_then(|r| seqno(r.transaction_id.as_deref()));
                all &= committed.is_some_and(|c| c >= want);
            }
            if all {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the network did not become ready within 60 s (see DIR/node*/node.log)");
        }
        if last_progress.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "waiting for the network to elect a primary and for every node to commit its first transactions..."
            );
            last_progress = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until node 1 holds the genesis (the constitution is set): members can act.
async fn wait_genesis(endpoint: &str, service: &Certificate, children: &mut [Child]) -> Result<()> {
    let client = LedgerClient::new(endpoint, service, None)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (i, c) in children.iter_mut().enumerate() {
            if let Some(status) = c.try_wait()? {
                bail!(
                    "node {} exited ({status}) before the network was ready",
                    i + 1
                );
            }
        }
        if let Ok(r) = client.request("GET", "/gov/constitution", None).await {
            if r.status == 200 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the network wrote no genesis within 60 s (see DIR/node*/node.log)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn terminate(children: &mut [Child]) {
    for c in children.iter() {
        // SIGTERM: each node drains, fsyncs and exits 0.
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for c in children.iter_mut() {
        while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if c.try_wait().ok().flatten().is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `covenant dev` with `--nodes` > 1.
pub fn run(o: DevOptions, nodes: u16) -> Result<()> {
    let (dir, port) = (o.dir.as_path(), o.port);
    if !covenant_node::identity::valid_ledger_id(&o.ledger_id) {
        bail!("--ledger-id must be 1..64 letters, digits, '-' or '_'");
    }
    if port.checked_add(nodes - 1).is_none() {
        bail!("--port {port} leaves no room for {nodes} consecutive ports");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let creating = !dir.join("service_cert.pem").exists();
    let ledger_type = if creating {
        o.ledger_type
    } else {
        crate::dev_ledger_type(&node_dir(dir, 1), o.ledger_type, false)?
    };
    if creating {
        create(dir, nodes, o.members, ledger_type)?;
        println!(
            "created a {nodes}-node {ledger_type:?} network in {}; user0 is an Administrator",
            dir.display()
        );
    } else if !node_dir(dir, nodes).join("node").exists() {
        bail!(
            "{} holds a network of fewer than {nodes} nodes; use the same --nodes as when it was created",
            dir.display()
        );
    }
    let mut children = Vec::new();
    for i in 1..=nodes {
        let config = write_config(dir, i, nodes, &o, ledger_type)?;
        match spawn(dir, i, &config) {
            Ok(c) => children.push(c),
            Err(e) => {
                terminate(&mut children);
                return Err(e);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Listening from now on: a SIGTERM sent right after the ready line is not lost.
    let mut shutdown = runtime.block_on(async { crate::Shutdown::listen() });
    let result = runtime.block_on(async {
        let ready_and_governed = async {
            let service = Certificate::from_pem(&read_pem_file(&dir.join("service_cert.pem"))?)?;
            let endpoint = format!("https://127.0.0.1:{port}");
            wait_genesis(&endpoint, &service, &mut children).await?;
            for line in crate::gov_cmds::activate_dev_members(&endpoint, &service, dir).await? {
                println!("{line}");
            }
            if let Some(line) = crate::gov_cmds::open_dev_service(&endpoint, &service, dir).await? {
                println!("{line}");
            }
            if let Some(bundle) = &o.app {
                let line =
                    crate::gov_cmds::deploy_dev_app(&endpoint, &service, dir, bundle).await?;
                println!("{line}");
            }
            wait_ready(dir, port, &mut children).await?;
            Ok::<(), anyhow::Error>(())
        };
        tokio::select! {
            r = ready_and_governed => r.map(|()| true),
            _ = shutdown.recv() => Ok(false),
        }
    });
    match result {
        Ok(true) => {}
        Ok(false) => {
            terminate(&mut children);
            return Ok(());
        }
        Err(e) => {
            terminate(&mut children);
            return Err(e);
        }
    }
    println!(
        "covenant dev ready: https://127.0.0.1:{port} ({nodes} nodes on ports {port}..{}, \
         service cert {}, user0 credentials {}, node files in {}/node<i>/)",
        port + nodes - 1,
        dir.join("service_cert.pem").display(),
        dir.join("user0.pem").display(),
        dir.display()
    );
    runtime.block_on(async {
        // Say so when a node process dies: the others go on (a majority keeps the
        // service up), but whoever watches this terminal should know.
        let mut reported = vec![false; children.len()];
        let children = &mut children;
        let watch = async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                for (i, c) in children.iter_mut().enumerate() {
                    if reported[i] {
                        continue;
                    }
                    if let Ok(Some(status)) = c.try_wait() {
                        reported[i] = true;
                        // Nodes are numbered from 1 (node1/ .. nodeN/).
                        let n = i + 1;
                        let nd = node_dir(dir, n as u16);
                        println!(
                            "node{n} (pid {}) exited ({status}); its log is {}; restart it with \
                             `covenant node start --config {}`",
                            c.id(),
                            nd.join("node.log").display(),
                            nd.join("node.toml").display()
                        );
                    }
                }
            }
        };
        tokio::select! {
            _ = shutdown.recv() => {},
            _ = watch => {},
        }
    });
    terminate(&mut children);
    println!("stopped {nodes} nodes");
    Ok(())
}
