//! `covenant`: one binary for every covenant role. This issue's subcommands are the
//! offline tools (receipt verification, ledger audit) and `demo`, which writes a
//! real ledger with receipts to try them on.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use clap::{Parser, Subcommand};
use covenant_client::ReceiptVerifier;
use covenant_crypto::{
    read_pem_file, write_private_file, Certificate, Curve, LedgerSecret, NodeIdentity,
    ServiceIdentity, SubjectAltName,
};
use covenant_engine::{Engine, EngineConfig};
use covenant_receipt::{
    claims_digest, ApplicationClaim, LedgerEntryClaim, Receipt, ReceiptResponse,
};
use indicatif::{ProgressBar, ProgressStyle};

mod bench;
mod chaos;
mod client_cmds;
mod dev_network;
mod gov_cmds;
mod node_start;
mod scale;

#[derive(Parser)]
#[command(
    name = "covenant",
    version,
    about = "covenant: a confidential, tamper-evident ledger with offline-verifiable receipts",
    long_about = "covenant: a confidential, tamper-evident ledger with offline-verifiable receipts.\n\n\
        Every transaction gets a receipt: a Merkle proof to a root signed by a node whose \
        certificate is endorsed by the service certificate, checkable offline with nothing \
        but that certificate.\n\n\
        Try it:\n  covenant dev                                  # a local ledger on https://127.0.0.1:8000\n  \
        covenant append \"hello\" --wait                # as user0, from ./covenant-dev\n  \
        covenant receipt <txid> --verify\n  \
        covenant ledger audit ./covenant-dev/ledger --service-cert ./covenant-dev/service_cert.pem"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify a receipt offline (SPEC §3): leaf, Merkle proof, root signature, node
    /// endorsement by the service certificate, and optionally application claims.
    ///
    /// Accepts the full response ({"receipt":...,"state":"Ready","transactionId":...})
    /// or the bare receipt object. Exit 0 when it verifies, 1 when it does not.
    VerifyReceipt {
        /// Receipt JSON file ('-' for standard input).
        receipt: PathBuf,
        /// The service certificate (PEM) you trust.
        #[arg(long)]
        service_cert: PathBuf,
        /// JSON file with the applicationClaims list the receipt's claimsDigest must match.
        #[arg(long)]
        claims: Option<PathBuf>,
    },
    /// Start a ready-to-use local ledger over HTTPS (TLS 1.3, mTLS users).
    ///
    /// The first run creates the service and node identities and, in DATA_DIR,
    /// service_cert.pem, user0_cert.pem, user0_privk.pem and user0.pem (cert + key;
    /// user0 is an Administrator), member0_cert.pem and member0_privk.pem (more with
    /// --members; dev acks for them, so they are Active). Later runs
    /// resume the same ledger. Prints a line containing "ready" once it accepts
    /// requests; SIGINT/SIGTERM stop it gracefully (everything written is signed and
    /// fsynced first).
    Dev {
        #[arg(long, default_value = "./covenant-dev")]
        data_dir: PathBuf,
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 8000)]
        port: u16,
        /// Fixed when the ledger is created.
        #[arg(long, value_enum, default_value = "private")]
        ledger_type: LedgerType,
        /// Milliseconds between signatures (what commits writes).
        #[arg(long, default_value_t = covenant_service::defaults::SIG_MS_INTERVAL)]
        sig_ms_interval: u64,
        /// A signature after this many transactions at the latest.
        #[arg(long, default_value_t = covenant_service::defaults::SIG_TX_INTERVAL)]
        sig_tx_interval: u64,
        /// Largest request body in bytes (larger requests get 413).
        #[arg(long, default_value_t = covenant_service::defaults::MAX_BODY_BYTES)]
        max_body_bytes: usize,
        /// The ledger id this node answers /ledgerIdentity/{ledgerId} for.
        #[arg(long, default_value = "covenant-dev")]
        ledger_id: String,
        /// Trust bearer tokens from this issuer (`iss`), with keys from --jwks or --jwks-url.
        #[arg(long)]
        jwt_issuer: Option<String>,
        /// JWKS file ({"keys":[...]}) of --jwt-issuer.
        #[arg(long, requires = "jwt_issuer", conflicts_with = "jwks_url")]
        jwks: Option<PathBuf>,
        /// HTTPS URL of --jwt-issuer's JWKS, fetched at start.
        #[arg(long, requires = "jwt_issuer")]
        jwks_url: Option<String>,
        /// CA certificate (PEM) to trust for --jwks-url instead of the system roots.
        #[arg(long, requires = "jwks_url")]
        jwks_ca: Option<PathBuf>,
        /// Require this `aud` in bearer tokens.
        #[arg(long, requires = "jwt_issuer")]
        jwt_audience: Option<String>,
        /// Also serve HTTP/2 (negotiated by ALPN); HTTP/1.1 only by default.
        #[arg(long)]
        http2: bool,
        /// Run a replicated network of this many nodes (each its own process on ports
        /// PORT..PORT+N-1, files in DIR/node<i>/, a node.pid in each); 1 = one in-process node.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=9))]
        nodes: u16,
        /// With --nodes: the service's initial join policy for nodes that `covenant node
        /// join` it: "auto" trusts a node whose attestation verifies and that presents
        /// the join token dev writes to DIR/join_token (`node join --join-token`);
        /// "pending", and any node without the token, waits for a
        /// `transition_node_to_trusted` proposal (`covenant gov propose`).
        /// Governance changes it later with `set_join_policy`.
        #[arg(long, value_parser = ["auto", "pending"], default_value = "auto")]
        join_policy: String,
        /// Consortium members to create (member0..member<K-1>, each with an RSA-OAEP
        /// encryption key pair); dev acks for all of them. Fixed at creation.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
        members: u16,
        /// Deploy this JavaScript app at start (a `set_js_app` proposal dev's members
        /// accept): a bundle JSON file ({"metadata":{"endpoints":...},"modules":[...]})
        /// or a directory with app.json and its modules under src/ or js/. Its
        /// endpoints answer under /app; a later run with --app replaces it.
        #[arg(long)]
        app: Option<PathBuf>,
    },
    /// Serve the identity service (GET /ledgerIdentity/{ledgerId}) over TLS, apart from
    /// any ledger, from DIR/<ledgerId>.pem files (each a ledger's service certificate).
    ///
    /// Its own TLS certificate and key are created in DIR/identity_tls/ on first run;
    /// clients trust DIR/identity_tls/cert.pem.
    IdentityService {
        /// Directory of <ledgerId>.pem service certificates.
        #[arg(long)]
        dir: PathBuf,
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 8100)]
        port: u16,
    },
    /// Append an entry ('-' reads the contents from standard input); prints its TxId.
    Append {
        /// The entry's contents, or '-' for standard input.
        contents: String,
        /// The collection (ACL's collectionId) to append to; default subledger:0.
        #[arg(long)]
        collection: Option<String>,
        /// Wait until the entry is committed.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: client_cmds::Conn,
    },
    /// Print the entry a transaction wrote.
    Get {
        /// The TxId, e.g. 2.15 (as `append` prints it).
        txid: String,
        /// The collection the entry was written to; default subledger:0.
        #[arg(long)]
        collection: Option<String>,
        #[command(flatten)]
        conn: client_cmds::Conn,
    },
    /// List a collection's committed entries (all pages), optionally in a TxId range.
    List {
        /// The collection; default subledger:0.
        #[arg(long)]
        collection: Option<String>,
        /// The first TxId of the range (inclusive), e.g. 2.1.
        #[arg(long)]
        from: Option<String>,
        /// The last TxId of the range (inclusive).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        conn: client_cmds::Conn,
    },
    /// Pending or Committed.
    Status {
        /// The TxId, e.g. 2.15.
        txid: String,
        #[command(flatten)]
        conn: client_cmds::Conn,
    },
    /// Fetch a transaction's receipt (waiting until it is ready).
    Receipt {
        /// The TxId, e.g. 2.15 (as `append` prints it).
        txid: String,
        /// Verify it against --service-cert on the spot.
        #[arg(long)]
        verify: bool,
        /// Also write it to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        conn: client_cmds::Conn,
    },
    /// List collections.
    Collections {
        #[command(flatten)]
        conn: client_cmds::Conn,
    },
    /// Manage users and roles (Administrator).
    Users {
        #[command(subcommand)]
        command: client_cmds::UsersCommand,
        #[command(flatten)]
        conn: client_cmds::Conn,
    },
    /// Consortium governance as a member: propose, vote, withdraw, ack, and read
    /// members, proposals and the constitution. Requests are COSE Sign1 signed with
    /// --member-key (defaults: covenant dev's member0).
    Gov {
        #[command(subcommand)]
        command: gov_cmds::GovCommand,
        #[command(flatten)]
        conn: gov_cmds::GovConn,
    },
    /// Make a member or user identity: NAME_cert.pem and NAME_privk.pem (P-384), and
    /// with --enc an RSA-OAEP encryption key pair for recovery shares.
    Keygen {
        /// File name prefix (letters, digits, '-', '_'): NAME_cert.pem, NAME_privk.pem.
        #[arg(long)]
        name: String,
        /// Also make NAME_enc_pubk.pem / NAME_enc_privk.pem (RSA-OAEP), a member's
        /// encryption key for recovery shares (`set_member`'s encryption_pub_key).
        #[arg(long)]
        enc: bool,
        /// Where the files go.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// The nodes of a replicated network and their status (trust and retire them with
    /// `covenant gov propose`: transition_node_to_trusted, remove_node).
    Nodes {
        #[command(subcommand)]
        command: client_cmds::NodesCommand,
        #[command(flatten)]
        conn: client_cmds::Conn,
    },
    /// Load-test a local node (or, with --nodes, a network started in this process)
    /// over HTTPS/mTLS: a no-op handler (the ceiling of the HTTPS stack), appends with
    /// response and commit latency, and reads; prints throughput, percentiles and the
    /// append/ceiling ratio against SPEC's target.
    Bench {
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds per phase.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Bytes of contents per appended entry.
        #[arg(long, default_value_t = 1024)]
        entry_bytes: usize,
        /// The longest a transaction waits for a signature (signatures are paced:
        /// soon after the load goes quiet, a short gap apart under load).
        #[arg(long, default_value_t = 1000)]
        sig_ms_interval: u64,
        /// After the full-speed appends, append again paced at these fractions of
        /// the rate they reached, reporting commit latency at each load.
        #[arg(long, value_delimiter = ',', default_values_t = [0.1, 0.5])]
        loads: Vec<f64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Nodes in the benchmarked network (in this process, real TLS between them);
        /// load goes to the primary.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=7))]
        nodes: u16,
    },
    /// Fault injection: start a network of real nodes, run concurrent clients
    /// against it while a nemesis kills, partitions, pauses, fills disks, jumps
    /// clocks and fails fsyncs, then check the whole history: nothing acknowledged as
    /// committed may be lost, changed or duplicated, commit points never go back,
    /// every ledger audits and the committed prefixes are byte-identical. Exits 1
    /// with the evidence (and keeps the data) on any violation. Without options: the
    /// short schedule (about two minutes); `--long` for the full one.
    Chaos(chaos::ChaosArgs),
    /// What a node costs per ledger entry, at scale: a LONG benchmark (minutes for a
    /// million entries, far more for ten million; not part of the tests) of real `covenant
    /// dev` processes on a big ledger.
    ///
    /// Phase 1, prefill: `covenant dev` creates a ledger in DIR (identities, user0,
    /// members, an open service) and is stopped; this process then opens the node's ledger
    /// directly, with the engine configuration of `node start` (a signature every 5,000
    /// transactions, a snapshot every 10,000), and commits --entries transactions, each
    /// what an ACL append writes (one entry of --entry-bytes bytes in collection
    /// c0..c<C-1>, round-robin), flushing after every signature. Reports the rate and the
    /// bytes on disk per entry. With --dir, a directory this command prefilled with the
    /// same --entries, --collections and --entry-bytes is reused as it is (pay a 10 M
    /// prefill once).
    ///
    /// Phase 2, restart to ready: `covenant dev` on the prefilled directory; the time from
    /// spawning it to its ready line and to GET /node/ready/app answering 2xx, and its
    /// resident memory (VmRSS) then. The node loads its newest snapshot and replays only
    /// the ledger after it; its collection index is already on disk (the prefill builds
    /// it, as a node would have while committing).
    ///
    /// Phase 3, ranged queries: GET /app/transactions as user0 for collection c0 over a
    /// TxId window holding about 100 of its entries, at the oldest point of history and at
    /// the newest, 20 times each (following nextLink); p50/p90 latency and the
    /// oldest/newest ratio.
    ///
    /// Phase 4, memory after a 100,000-entry query: every collection over the oldest
    /// 100,000 entries, page by page to the end; VmRSS after it.
    ///
    /// Phase 5, appends beside slow JavaScript (skipped with --skip-slow-js): `covenant dev
    /// --app` with a generated app whose POST /app/slow computes for 50 ms and writes one
    /// key; appends on 32 connections for 10 s alone, then again while 8 callers loop on
    /// /app/slow; the ratio of the two append rates (target >= 0.8).
    ///
    /// Progress goes to stderr, the report to stdout (a table, or JSON with --json). Every
    /// node process is stopped at the end of the phase that needs it, also on error.
    ScaleBench(scale::ScaleArgs),
    /// Run a node of a network (the production form of `dev`).
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Offline tools for ledger directories.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Write a demo ledger: identities, N entries (some with application claims),
    /// signatures, and receipts to verify. Running it again appends to the same ledger.
    Demo {
        /// Where identities, the ledger and receipts go.
        #[arg(long, default_value = "./covenant-demo")]
        data_dir: PathBuf,
        /// How many entries to append.
        #[arg(long, default_value_t = 1000)]
        entries: u64,
        /// Bytes of contents per entry.
        #[arg(long, default_value_t = 256)]
        entry_size: usize,
        /// A signature transaction every N transactions.
        #[arg(long, default_value_t = 100)]
        sig_interval: u64,
        /// Chunk size threshold in bytes (chunks close at the next signature past it).
        #[arg(long, default_value_t = 1024 * 1024)]
        chunk_bytes: u64,
        /// How many receipts to write to DATA_DIR/receipts.
        #[arg(long, default_value_t = 5)]
        receipts: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LedgerType {
    /// Entry contents encrypted at rest under the ledger secret (the default).
    Private,
    /// Entry contents stored in clear.
    Public,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Start (or resume) a service's first node from a TOML configuration file.
    ///
    /// Keys: data_dir (required), listen ("127.0.0.1:8000"), ledger_type
    /// ("private"|"public", fixed at creation), ledger_id, sig_ms_interval,
    /// sig_tx_interval, max_body_bytes, san (extra DNS names/IPs for the node
    /// certificate), constitution (a .js file), [[users]] cert + roles, [[members]]
    /// cert (+ encryption_pub_key, a PEM file: a recovery member), [[jwt_issuers]] issuer + jwks_file or jwks_url (+ jwks_ca, audience), http2 (false),
    /// snapshot_tx_interval (10000: a snapshot in DATA_DIR/snapshots at the next signature
    /// after that many transactions), min_free_mb (32: writes are refused with 507
    /// InsufficientStorage while the ledger's disk has less free, and resume once space
    /// returns), join_policy ("auto"|"pending": the service's
    /// initial policy for nodes that `node join`, recorded at genesis; governance
    /// changes it with `set_join_policy`), join_token_file (a file holding a secret;
    /// its SHA-256 is recorded at genesis and a joining node presenting the secret is
    /// trusted at once under "auto": without one, every joining node waits for a
    /// proposal), max_connections (1024), max_connections_per_peer (256: per client
    /// IP address). Users, members and the
    /// constitution are registered when the ledger is created. Relative paths are
    /// relative to the configuration file.
    ///
    /// Ledger size: a restart loads the newest snapshot and replays only the ledger
    /// after it; the collection index lives in DATA_DIR/index/collections.redb
    /// (rebuilt from the ledger, with a progress bar, if deleted or corrupt).
    /// ledger_chunk_bytes (5 MiB: a chunk file closes at the next signature after
    /// that size), ledger_archive_directory (absent: no archiving; committed chunks
    /// holding nothing newer than the last archive_retention_txs, default 1000000,
    /// committed transactions move there in the background and stay readable:
    /// receipts, historical reads, `ledger audit --read-only-dir`, recovery),
    /// ledger_read_only_directories (more directories of archived chunks, read,
    /// never written; CCF's ledger.read_only_directories).
    ///
    /// Secrets: secrets_at_rest = false (the default) keeps the service key, the
    /// ledger secrets and the node's encryption key in memory only. A stolen disk
    /// or data directory then decrypts nothing; a restarted node gets them back by
    /// rejoining its network (with its endorsed certificate); a network that lost
    /// every node comes back only by `node recover` and its recovery members'
    /// shares, and a single node cannot restart. secrets_at_rest = true keeps them
    /// in 0600 files of data_dir (what `covenant dev` does): any node restarts
    /// alone, but whoever reads the data directory reads the ledger.
    ///
    /// A node of a replicated network adds `[network]` with node_id (its Raft id) and
    /// peers = [{ id, address = "host:port" }, ...] (every node, itself included;
    /// tick_ms, default 50). data_dir must then already hold the node's identity (a
    /// node certificate endorsed by the service key) and, on first start, the
    /// ledger secret and service key (read, then deleted unless secrets_at_rest), as
    /// `covenant dev --nodes N` prepares them; the first primary writes the users,
    /// members and constitution through consensus. A node that joined with `node join`
    /// has no [network] section: its Raft id and peers are in DATA_DIR/network.json.
    Start {
        #[arg(long)]
        config: PathBuf,
    },
    /// Disaster recovery: bring back a service that lost every node from this
    /// node's ledger (DATA_DIR/ledger of --config, a ledger from seqno 1). The
    /// ledger is audited against --previous-service-cert (any bad entry stops the
    /// recovery, naming it, before anything changes); the old identities, secrets
    /// and consensus state move to DATA_DIR/before-recovery/; a new service
    /// identity (DATA_DIR/service_cert.pem) is made; the public part of the ledger
    /// is replayed and the service, now the only node, starts as Recovering.
    ///
    /// Then, as in CCF: members propose `transition_service_to_open` with
    /// `previous_service_identity` (the old certificate) and
    /// `next_service_identity` (the new one): the service waits for recovery
    /// shares. Each recovery member runs `covenant gov share --submit` (or CCF's
    /// submit_recovery_share.sh); the share that reaches the recovery threshold
    /// restores the ledger secrets, replays the private part and opens the service.
    /// Other nodes then join it with `node join`. Clients pin the new certificate:
    /// receipts of earlier transactions carry serviceEndorsements that chain to it.
    Recover {
        #[arg(long)]
        config: PathBuf,
        /// The certificate (PEM) of the service whose ledger this is.
        #[arg(long)]
        previous_service_cert: PathBuf,
    },
    /// Join an existing network: ask the node at --target to admit this one, wait
    /// while it is Pending, receive the service identity, an endorsed certificate and
    /// the ledger secret, start from a snapshot of the primary, then serve (like
    /// `start`). The configuration has no [network] section; `data_dir` must be new
    /// (or hold an interrupted join, which resumes). Once joined, `start` restarts it.
    ///
    /// The constitution decides (its `join_policy` export): under the default one,
    /// the service's join policy "auto" (the default) trusts a node whose attestation
    /// evidence verifies and that presents the join token (--join-token); any other
    /// node, and every node under "pending", waits until a
    /// `transition_node_to_trusted` proposal is accepted.
    Join {
        #[arg(long)]
        config: PathBuf,
        /// Any node of the network, e.g. https://127.0.0.1:8000 (a backup redirects).
        #[arg(long)]
        target: String,
        /// The network's service certificate (PEM), pinned for the join.
        #[arg(long)]
        service_cert: Option<PathBuf>,
        /// A file holding the network's join token (the secret whose SHA-256 the
        /// service records; `covenant dev --nodes N` writes DIR/join_token). Under
        /// the "auto" join policy it makes the node Trusted at once; without it the
        /// node waits as Pending until members trust it. Default: `join_token`
        /// beside --service-cert, if that file exists.
        #[arg(long)]
        join_token: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Replay every chunk, recompute every leaf and root, check every signature and
    /// endorsement. Exit 0 with a summary, or 1 naming the first bad TxId and why.
    ///
    /// The ledger of a node that started from a snapshot begins at seqno f > 1: the
    /// audit then verifies the snapshot at f-1 (signature, endorsement, Merkle root;
    /// no ledger secret needed) and checks the ledger from it. By default the snapshot
    /// is DIR/../snapshots/snapshot_<f-1>.committed.
    Audit {
        /// The ledger directory (the one holding ledger_* chunk files).
        dir: PathBuf,
        /// The service certificate (PEM) the signing nodes must be endorsed by.
        #[arg(long)]
        service_cert: PathBuf,
        /// The snapshot file the ledger continues (default:
        /// DIR/../snapshots/snapshot_<f-1>.committed when the ledger starts at f > 1).
        #[arg(long)]
        snapshot: Option<PathBuf>,
        /// A directory of archived committed chunks of this ledger (a node's
        /// ledger_archive_directory or ledger_read_only_directories); repeat for
        /// several. Its chunks are audited as part of the ledger.
        #[arg(long = "read-only-dir", value_name = "DIR")]
        read_only_dirs: Vec<PathBuf>,
        /// No progress bar, even on a terminal.
        #[arg(long)]
        quiet: bool,
    },
}

/// mimalloc: the request path allocates many small buffers across threads; glibc's malloc showed
/// ~15% of CPU under `covenant bench` (consolidation and arena locks).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // COVENANT_LOG=info|debug|trace for more detail; warnings (e.g. a recovered torn tail) by default.
    let level = std::env::var("COVENANT_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::WARN);
    // Colour only on a terminal: logs redirected to files stay plain text.
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::VerifyReceipt {
            receipt,
            service_cert,
            claims,
        } => verify_receipt(&receipt, &service_cert, claims.as_deref()),
        Command::Ledger {
            command:
                LedgerCommand::Audit {
                    dir,
                    service_cert,
                    snapshot,
                    read_only_dirs,
                    quiet,
                },
        } => audit(
            &dir,
            &service_cert,
            snapshot.as_deref(),
            &read_only_dirs,
            quiet,
        ),
        Command::Dev {
            data_dir,
            port,
            ledger_type,
            sig_ms_interval,
            sig_tx_interval,
            max_body_bytes,
            ledger_id,
            jwt_issuer,
            jwks,
            jwks_url,
            jwks_ca,
            jwt_audience,
            http2,
            nodes,
            join_policy,
            members,
            app,
        } => {
            let app = app
                .map(|path| {
                    gov_cmds::read_bundle(&path)
                        .with_context(|| format!("--app {}", path.display()))
                })
                .transpose();
            app.and_then(|app| {
                let o = DevOptions {
                    dir: data_dir,
                    port,
                    ledger_type,
                    sig_ms_interval,
                    sig_tx_interval,
                    max_body_bytes,
                    ledger_id,
                    jwt_issuer,
                    jwks: match (jwks, jwks_url) {
                        (Some(f), _) => Some(JwksSource::File(f)),
                        (None, Some(u)) => Some(JwksSource::Url(u, jwks_ca)),
                        (None, None) => None,
                    },
                    jwt_audience,
                    http2,
                    join_policy,
                    members,
                    app,
                };
                if nodes > 1 {
                    dev_network::run(o, nodes)
                } else {
                    dev(o)
                }
            })
        }
        Command::IdentityService { dir, port } => identity_service(&dir, port),
        Command::Node {
            command: NodeCommand::Start { config },
        } => node_start::start(&config),
        Command::Node {
            command:
                NodeCommand::Recover {
                    config,
                    previous_service_cert,
                },
        } => node_start::recover(&config, &previous_service_cert),
        Command::Node {
            command:
                NodeCommand::Join {
                    config,
                    target,
                    service_cert,
                    join_token,
                },
        } => node_start::join(
            &config,
            &target,
            service_cert.as_deref(),
            join_token.as_deref(),
        ),
        Command::Nodes { command, conn } => client_cmds::nodes(&conn, &command),
        Command::Gov { command, conn } => gov_cmds::run(&conn, &command),
        Command::Keygen { name, enc, dir } => gov_cmds::keygen(&dir, &name, enc),
        Command::Append {
            contents,
            collection,
            wait,
            conn,
        } => client_cmds::append(&conn, &contents, collection.as_deref(), wait),
        Command::Get {
            txid,
            collection,
            conn,
        } => client_cmds::get(&conn, &txid, collection.as_deref()),
        Command::List {
            collection,
            from,
            to,
            conn,
        } => client_cmds::list(&conn, collection.as_deref(), from.as_deref(), to.as_deref()),
        Command::Status { txid, conn } => client_cmds::status(&conn, &txid),
        Command::Receipt {
            txid,
            verify,
            out,
            conn,
        } => client_cmds::receipt(&conn, &txid, verify, out.as_deref()),
        Command::Collections { conn } => client_cmds::collections(&conn),
        Command::Bench {
            connections,
            seconds,
            entry_bytes,
            sig_ms_interval,
            loads,
            json,
            nodes,
        } => bench::run(bench::BenchOptions {
            nodes,
            connections: connections.max(1),
            seconds: seconds.max(0.1),
            entry_bytes,
            sig_ms_interval: sig_ms_interval.max(1),
            loads: loads
                .into_iter()
                .filter(|l| *l > 0.0 && *l <= 1.0)
                .collect(),
            json,
        }),
        Command::ScaleBench(args) => scale::run(args),
        Command::Chaos(args) => match chaos::run(args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Users { command, conn } => client_cmds::users(&conn, &command),
        Command::Demo {
            data_dir,
            entries,
            entry_size,
            sig_interval,
            chunk_bytes,
            receipts,
        } => demo(
            &data_dir,
            entries,
            entry_size,
            sig_interval,
            chunk_bytes,
            receipts,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_service_cert(path: &Path) -> Result<Certificate> {
    let pem = read_pem_file(path)
        .with_context(|| format!("reading service certificate {}", path.display()))?;
    Certificate::from_pem(&pem)
        .with_context(|| format!("parsing service certificate {}", path.display()))
}

fn read_input(path: &Path) -> Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

fn verify_receipt(receipt: &Path, service_cert: &Path, claims: Option<&Path>) -> Result<()> {
    let verifier = ReceiptVerifier::new(load_service_cert(service_cert)?);
    let bytes = read_input(receipt)?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", receipt.display()))?;
    let claims: Option<Vec<ApplicationClaim>> = match claims {
        Some(p) => Some(
            serde_json::from_slice(&read_input(p)?)
                .with_context(|| format!("{} is not an applicationClaims list", p.display()))?,
        ),
        None => None,
    };
    let verified = if value.get("receipt").is_some() || value.get("state").is_some() {
        let response: ReceiptResponse = serde_json::from_value(value)
            .context("not a receipt response (receipt, state, transactionId)")?;
        verifier.verify_response(&response, claims.as_deref())
    } else {
        let r: Receipt = serde_json::from_value(value).context("not a receipt object")?;
        verifier.verify(&r, claims.as_deref())
    };
    match verified {
        Ok(v) => {
            println!(
                "receipt verified: transaction {} is in the ledger (root {}, signed by node {}{})",
                v.transaction_id,
                v.root,
                v.node_id,
                if claims.is_some() {
                    ", claims match"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Err(e) => bail!("receipt does NOT verify: {e}"),
    }
}

/// The collection index of a node, under its data directory.
pub(crate) const INDEX_FILE: &str = "index/collections.redb";

/// A progress bar for the collection index catching up with the ledger at start
/// (shown only on a terminal, only while there is something to catch up).
pub(crate) fn index_progress() -> covenant_node::IndexProgressFn {
    let pb = progress_bar(0, false, "indexing collections");
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} transactions eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    covenant_node::IndexProgressFn(std::sync::Arc::new(move |done, total| {
        pb.set_length(total);
        pb.set_position(done);
        if done >= total {
            pb.finish_and_clear();
        }
    }))
}

fn progress_bar(total: u64, quiet: bool, what: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

fn audit(
    dir: &Path,
    service_cert: &Path,
    snapshot: Option<&Path>,
    read_only_dirs: &[PathBuf],
    quiet: bool,
) -> Result<()> {
    let cert = load_service_cert(service_cert)?;
    let pb = progress_bar(0, quiet, "auditing");
    let started = std::time::Instant::now();
    let on_progress = |done, total| {
        pb.set_length(total);
        pb.set_position(done);
    };
    let result =
        covenant_engine::audit_archived_ledger(dir, read_only_dirs, snapshot, &cert, on_progress);
    pb.finish_and_clear();
    match result {
        Ok(r) => {
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            println!(
                "audit ok: {} entries, {} signatures, {} bytes checked ({:.1} MB/s), last transaction {}{}{}",
                r.entries,
                r.signatures,
                r.bytes,
                r.bytes as f64 / secs / 1e6,
                r.last_txid.map(|t| t.to_string()).unwrap_or_else(|| "none".into()),
                r.snapshot.map(|t| format!(", from snapshot at {t}")).unwrap_or_default(),
                if r.unsigned_tail > 0 {
                    format!(", {} entries after the last signature not yet signed", r.unsigned_tail)
                } else {
                    String::new()
                }
            );
            if !r.governance.is_empty() {
                println!("governance: {} proposal state changes", r.governance.len());
                for g in &r.governance {
                    println!("  {}  proposal {}  {}", g.txid, g.proposal_id, g.state);
                }
            }
            Ok(())
        }
        Err(e) => bail!("audit FAILED {e}"),
    }
}

/// What a node keeps in its data directory: identities, ledger secrets (the whole
/// chain, [`LEDGER_SECRETS_FILE`]) and its encryption key.
pub(crate) struct NodeFiles {
    pub service: ServiceIdentity,
    pub node: NodeIdentity,
    pub secrets: covenant_crypto::LedgerSecrets,
    /// The node's RSA-OAEP key: rekeys seal new ledger secrets to it.
    pub encryption_key: Arc<covenant_crypto::EncryptionKeyPair>,
}

/// The ledger secrets of a node that keeps them at rest, one `<seqno> <base64>`
/// line per secret (a single bare base64 line is the secret from seqno 1).
pub(crate) const LEDGER_SECRETS_FILE: &str = "ledger_secret.key";
/// The node's encryption key (PKCS#8 PEM, 0600), beside its identity key.
pub(crate) const NODE_ENCRYPTION_KEY_FILE: &str = "node_enc_key.pem";

/// Loads the demo's identities and secret, or creates them on first run.
pub(crate) fn demo_identities(dir: &Path) -> Result<NodeFiles> {
    match load_node_files(dir, &SubjectAltName::dev_defaults(), true)? {
        Loaded::Full(files) => Ok(files),
        Loaded::NeedsSecrets { .. } => bail!(
            "{} holds no ledger secrets ({LEDGER_SECRETS_FILE})",
            dir.display()
        ),
    }
}

/// The node's encryption key in `node_dir`, made (0600) on first use. A node that
/// keeps no secrets at rest makes a new one at every start instead (`at_rest`
/// false): with the ledger, it would open every secret a rekey handed the node.
pub(crate) fn load_or_create_encryption_key(
    node_dir: &Path,
    at_rest: bool,
) -> Result<Arc<covenant_crypto::EncryptionKeyPair>> {
    let path = node_dir.join(NODE_ENCRYPTION_KEY_FILE);
    if !at_rest {
        let _ = std::fs::remove_file(&path);
        return Ok(Arc::new(covenant_crypto::EncryptionKeyPair::generate()?));
    }
    if path.exists() {
        let pem = read_pem_file(&path)?;
        return Ok(Arc::new(
            covenant_crypto::EncryptionKeyPair::from_pem(&pem)
                .with_context(|| format!("the node encryption key {}", path.display()))?,
        ));
    }
    std::fs::create_dir_all(node_dir)
        .with_context(|| format!("creating {}", node_dir.display()))?;
    let key = covenant_crypto::EncryptionKeyPair::generate()?;
    write_private_file(&path, key.to_pem()?.as_bytes())?;
    Ok(Arc::new(key))
}

/// What a data directory gave: everything, or (a node that keeps no secrets at
/// rest, restarting) its identity without the service key and ledger secrets,
/// which it gets back by rejoining its network.
pub(crate) enum Loaded {
    Full(NodeFiles),
    NeedsSecrets {
        service_cert: Certificate,
        node: NodeIdentity,
        encryption_key: Arc<covenant_crypto::EncryptionKeyPair>,
    },
}

/// The service and node identities, the ledger secrets and the node's encryption
/// key in `dir`, created on first use with `sans` on the node certificate. With
/// `at_rest`, the service key, the ledger secrets and the encryption key are kept
/// in 0600 files; without, a new service's are never written, and files a
/// network's preparation left (`covenant dev --nodes`) are read once and deleted.
pub(crate) fn load_node_files(
    dir: &Path,
    sans: &[SubjectAltName],
    at_rest: bool,
) -> Result<Loaded> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let node_dir = dir.join("node");
    let secret_path = dir.join(LEDGER_SECRETS_FILE);
    let key_path = dir.join("service_key.pem");
    let encryption_key = load_or_create_encryption_key(&node_dir, at_rest)?;
    if dir.join("service_cert.pem").exists() {
        let node = NodeIdentity::load(&node_dir).context("loading the node identity")?;
        if !secret_path.exists() || !key_path.exists() {
            let service_cert =
                Certificate::from_pem(&read_pem_file(&dir.join("service_cert.pem"))?)?;
            return Ok(Loaded::NeedsSecrets {
                service_cert,
                node,
                encryption_key,
            });
        }
        let service = ServiceIdentity::load(dir).context("loading the service identity")?;
        let raw = zeroize::Zeroizing::new(
            std::fs::read_to_string(&secret_path).context("reading the ledger secrets")?,
        );
        let secrets = covenant_crypto::LedgerSecrets::from_text(&raw)
            .with_context(|| format!("reading {}", secret_path.display()))?;
        if !at_rest {
            std::fs::remove_file(&secret_path)?;
            std::fs::remove_file(&key_path)?;
        }
        return Ok(Loaded::Full(NodeFiles {
            service,
            node,
            secrets,
            encryption_key,
        }));
    }
    let service = ServiceIdentity::generate(Curve::P384)?;
    if at_rest {
        service.save(dir)?;
    } else {
        covenant_crypto::write_public_file(
            &dir.join("service_cert.pem"),
            service.cert.to_pem().as_bytes(),
        )?;
    }
    let node = NodeIdentity::generate(&service, Curve::P384, sans)?;
    node.save(&node_dir)?;
    let secrets = covenant_crypto::LedgerSecrets::from(LedgerSecret::generate()?);
    if at_rest {
        write_private_file(&secret_path, secrets.to_text().as_bytes())?;
    }
    Ok(Loaded::Full(NodeFiles {
        service,
        node,
        secrets,
        encryption_key,
    }))
}

fn demo(
    dir: &Path,
    entries: u64,
    entry_size: usize,
    sig_interval: u64,
    chunk_bytes: u64,
    receipts: u64,
) -> Result<()> {
    if sig_interval == 0 {
        bail!("--sig-interval must be at least 1");
    }
    let NodeFiles {
        node,
        secrets: secret,
        ..
    } = demo_identities(dir)?;
    let mut config = EngineConfig::new(dir.join("ledger"));
    config.sig_tx_interval = sig_interval;
    config.chunk_threshold_bytes = chunk_bytes;
    let mut engine = Engine::open(config, Arc::new(node), secret).context("opening the ledger")?;
    let start_seqno = engine.last_txid().map(|t| t.seqno.0).unwrap_or(0);
    let pb = progress_bar(entries, false, "appending");
    let claim_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let mut written = Vec::new();
    for i in 0..entries {
        let contents = format!("entry {i} {}", "x".repeat(entry_size.saturating_sub(16)));
        let mut tx = engine.begin();
        let n = engine.store().map_len("entries:subledger:0") as u64;
        tx.put("entries:subledger:0", &n.to_be_bytes(), contents.as_bytes());
        tx.put("public:meta", b"last", &n.to_be_bytes());
        // Every 10th entry carries a LedgerEntry application claim.
        let claims = if i % 10 == 0 {
            Some(vec![ApplicationClaim::LedgerEntry {
                ledger_entry: LedgerEntryClaim {
                    collection_id: "subledger:0".into(),
                    contents: contents.clone(),
                    secret_key: claim_key.clone(),
                    protocol: "LedgerEntryV1".into(),
                },
            }])
        } else {
            None
        };
        let digest = claims.as_deref().map(claims_digest).transpose()?;
        let txid = engine.commit_tx(tx, digest)?;
        written.push((txid, claims));
        if i % 1000 == 999 {
            engine.flush()?;
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    if engine.unsigned_txs() > 0 {
        engine.emit_signature()?;
    }
    let committed = engine.flush()?;
    let receipt_dir = dir.join("receipts");
    std::fs::create_dir_all(&receipt_dir)?;
    let step = (written.len() as u64 / receipts.max(1)).max(1) as usize;
    let mut saved = Vec::new();
    for (txid, claims) in written.iter().step_by(step).take(receipts as usize) {
        let response = engine.receipt(*txid)?;
        let path = receipt_dir.join(format!("{txid}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&response)?)?;
        if let Some(c) = claims {
            std::fs::write(
                receipt_dir.join(format!("{txid}.claims.json")),
                serde_json::to_vec_pretty(c)?,
            )?;
        }
        saved.push(path);
    }
    let last = engine
        .last_txid()
        .map(|t| t.to_string())
        .unwrap_or_default();
    println!(
        "wrote {} entries (seqnos {}..{}), committed through seqno {committed}, last transaction {last}",
        entries,
        start_seqno + 1,
        engine.last_txid().map(|t| t.seqno.0).unwrap_or(0)
    );
    println!("data directory: {}", dir.display());
    println!(
        "  service certificate: {}",
        dir.join("service_cert.pem").display()
    );
    println!("  ledger:              {}", dir.join("ledger").display());
    println!("  receipts:            {}", receipt_dir.display());
    // The program as invoked (e.g. target/release/covenant), so the hints run as printed.
    let me = std::env::args().next().unwrap_or_else(|| "covenant".into());
    println!("next:");
    println!(
        "  {me} ledger audit {} --service-cert {}",
        dir.join("ledger").display(),
        dir.join("service_cert.pem").display()
    );
    if let Some(p) = saved.first() {
        println!(
            "  {me} verify-receipt {} --service-cert {}",
            p.display(),
            dir.join("service_cert.pem").display()
        );
    }
    Ok(())
}

/// The ledger type recorded at creation; a later run may not change it.
fn dev_ledger_type(dir: &Path, requested: LedgerType, creating: bool) -> Result<LedgerType> {
    let path = dir.join("ledger_type");
    if creating {
        let word = if requested == LedgerType::Public {
            "public"
        } else {
            "private"
        };
        std::fs::write(&path, word).with_context(|| format!("writing {}", path.display()))?;
        return Ok(requested);
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_else(|_| "private".into());
    let stored = if stored.trim() == "public" {
        LedgerType::Public
    } else {
        LedgerType::Private
    };
    if stored != requested {
        eprintln!("note: this ledger was created as {stored:?}; the type is fixed at creation, ignoring --ledger-type");
    }
    Ok(stored)
}

/// `covenant dev`'s user0 (cert, key, both in user0.pem) and member0 (the same, plus
/// the RSA-OAEP pair recovery shares will be encrypted to).
pub(crate) fn write_dev_user_and_members(dir: &Path, members: u16) -> Result<()> {
    write_client_identity(dir, "user0")?;
    for i in 0..members.max(1) {
        let name = format!("member{i}");
        write_client_identity(dir, &name)?;
        let enc = covenant_crypto::EncryptionKeyPair::generate()?;
        covenant_crypto::write_public_file(
            &dir.join(format!("{name}_enc_pubk.pem")),
            enc.public_key_pem()?.as_bytes(),
        )?;
        write_private_file(
            &dir.join(format!("{name}_enc_privk.pem")),
            enc.to_pem()?.as_bytes(),
        )?;
    }
    Ok(())
}

/// A member's file beside its certificate, as `keygen --enc` and dev name them:
/// `<name>_cert.pem` → `<name><suffix>` (`_enc_pubk.pem`, `_enc_privk.pem`).
pub(crate) fn beside_member_cert(cert: &Path, suffix: &str) -> PathBuf {
    let name = cert
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .replace("_cert.pem", suffix);
    cert.with_file_name(name)
}

/// The encryption public key dev made beside a member's certificate.
pub(crate) fn dev_member_encryption_key(cert: &Path) -> PathBuf {
    beside_member_cert(cert, "_enc_pubk.pem")
}

pub(crate) fn dev_member_certs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for i in 0.. {
        let p = dir.join(format!("member{i}_cert.pem"));
        if !p.exists() {
            break;
        }
        out.push(p);
    }
    Ok(out)
}

pub(crate) fn write_client_identity(dir: &Path, name: &str) -> Result<()> {
    let (key, cert) = covenant_crypto::generate_client_identity(name, Curve::P384)?;
    covenant_crypto::write_public_file(
        &dir.join(format!("{name}_cert.pem")),
        cert.to_pem().as_bytes(),
    )?;
    write_private_file(
        &dir.join(format!("{name}_privk.pem")),
        key.to_pem().as_bytes(),
    )?;
    let both = format!("{}{}", cert.to_pem(), key.to_pem().as_str());
    write_private_file(&dir.join(format!("{name}.pem")), both.as_bytes())?;
    Ok(())
}

/// Everything `covenant dev` is told.
pub(crate) struct DevOptions {
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
    pub(crate) ledger_type: LedgerType,
    pub(crate) sig_ms_interval: u64,
    pub(crate) sig_tx_interval: u64,
    pub(crate) max_body_bytes: usize,
    pub(crate) ledger_id: String,
    pub(crate) jwt_issuer: Option<String>,
    pub(crate) jwks: Option<JwksSource>,
    pub(crate) jwt_audience: Option<String>,
    pub(crate) http2: bool,
    pub(crate) join_policy: String,
    pub(crate) members: u16,
    /// The bundle of `--app`, read (and checked to be one) before anything starts.
    pub(crate) app: Option<serde_json::Value>,
}

/// Where an issuer's keys come from.
pub(crate) enum JwksSource {
    File(PathBuf),
    /// URL and an optional CA certificate file to trust for it.
    Url(String, Option<PathBuf>),
}

/// Loads an issuer's JWKS from a file or fetches it over HTTPS.
pub(crate) fn load_jwks(source: &JwksSource) -> Result<String> {
    match source {
        JwksSource::File(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        }
        JwksSource::Url(url, ca) => {
            let ca = match ca {
                Some(p) => Some(
                    Certificate::from_pem(&read_pem_file(p)?)
                        .with_context(|| format!("CA {}", p.display()))?,
                ),
                None => None,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(covenant_node::jwt::fetch_jwks(url, ca.as_ref()))
                .map_err(|e| anyhow::anyhow!("fetching the JWKS: {e}"))
        }
    }
}

fn dev(o: DevOptions) -> Result<()> {
    let dir = o.dir.as_path();
    if !covenant_node::identity::valid_ledger_id(&o.ledger_id) {
        bail!("--ledger-id must be 1..64 letters, digits, '-' or '_'");
    }
    let mut jwt = covenant_node::jwt::JwtAuth::default();
    match (&o.jwt_issuer, &o.jwks) {
        (Some(issuer), Some(source)) => {
            let doc = load_jwks(source)?;
            let i = covenant_node::jwt::JwtIssuer::from_jwks(issuer, o.jwt_audience.clone(), &doc)
                .map_err(|e| anyhow::anyhow!("the JWKS of {issuer}: {e}"))?;
            jwt.issuers.push(i);
        }
        (Some(_), None) => bail!("--jwt-issuer needs --jwks or --jwks-url"),
        _ => {}
    }
    let creating = !dir.join("service_cert.pem").exists();
    let NodeFiles {
        service,
        node,
        secrets,
        encryption_key,
    } = demo_identities(dir)?;
    let ledger_type = dev_ledger_type(dir, o.ledger_type, creating)?;
    // As `node start` runs a single node: snapshots (so a restart replays only the
    // ledger after the newest one), secrets at rest (dev resumes after Ctrl-C).
    let mut settings = node_start::LedgerSettings::single_node();
    settings.sig_tx_interval = o.sig_tx_interval;
    let config = settings.engine_config(dir, &service.cert);
    let node = Arc::new(node);
    let mut engine = Engine::open_with_key(config, node.clone(), secrets, Some(encryption_key))
        .context("opening the ledger")?;
    let node = node.as_ref();
    if creating {
        write_dev_user_and_members(dir, o.members)?;
        let user0 = Certificate::from_pem(&read_pem_file(&dir.join("user0_cert.pem"))?)?;
        let mut members = Vec::new();
        for path in dev_member_certs(dir)? {
            let member = Certificate::from_pem(&read_pem_file(&path)?)?;
            let enc = read_pem_file(&dev_member_encryption_key(&path)).ok();
            members.push((member, enc));
        }
        let id = covenant_node::UserId::Certificate(covenant_crypto::sha256(user0.der()));
        covenant_node::Genesis {
            users: vec![(user0, vec![covenant_node::Role::Administrator])],
            members,
            constitution: covenant_node::DEFAULT_CONSTITUTION.to_string(),
            ..Default::default()
        }
        .write(&mut engine)?;
        println!(
            "created a new {ledger_type:?} ledger in {}; user0 is an Administrator (ACL id {}, CCF id {})",
            dir.display(),
            id.acl(),
            id.ccf()
        );
    }
    let mut nc =
        covenant_node::NodeConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], o.port)));
    nc.sig_ms_interval = o.sig_ms_interval.max(1);
    nc.max_body_bytes = o.max_body_bytes;
    nc.ledger_public = ledger_type == LedgerType::Public;
    nc.ledger_id = o.ledger_id.clone();
    nc.index_path = Some(dir.join(INDEX_FILE));
    nc.index_progress = Some(index_progress());
    nc.jwt = jwt;
    nc.limits.http2 = o.http2;
    let ready = format!(
        "(service cert {}, user0 credentials {})",
        dir.join("service_cert.pem").display(),
        dir.join("user0.pem").display()
    );
    serve_until_signal(
        nc,
        engine,
        node,
        &service,
        "covenant dev",
        &ready,
        Some((dir, o.app.as_ref())),
    )
    .map(|_| ())
}

/// The async runtime a node serves on: one worker per core (tokio's default,
/// `TOKIO_WORKER_THREADS` overrides). Work that blocks (engine writes, which may
/// wait for a new primary's first entry, scripts, ledger reads) runs on tokio's
/// blocking threads through the service, so workers never wait on the engine.
pub(crate) fn node_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Serves until SIGINT/SIGTERM, printing the ready line; signs and flushes on the way out.
fn serve_until_signal(
    nc: covenant_node::NodeConfig,
    engine: Engine,
    node: &NodeIdentity,
    service: &ServiceIdentity,
    what: &str,
    ready_detail: &str,
    activate_members_in: Option<(&Path, Option<&serde_json::Value>)>,
) -> Result<Option<covenant_node::SnapshotPause>> {
    let runtime = node_runtime()?;
    runtime.block_on(async move {
        let shutdown = Shutdown::listen();
        let bound = covenant_node::BoundNode::bind(nc, engine, node, &service.cert).await?;
        let addr = bound.local_addr;
        let server = tokio::spawn(bound.serve_node(shutdown.wait()));
        if let Some((dir, app)) = activate_members_in {
            // dev: its generated members ack the state digest, as a member would.
            let endpoint = format!("https://{addr}");
            for line in gov_cmds::activate_dev_members(&endpoint, &service.cert, dir).await? {
                println!("{line}");
            }
            if let Some(line) = gov_cmds::open_dev_service(&endpoint, &service.cert, dir).await? {
                println!("{line}");
            }
            if let Some(bundle) = app {
                let line = gov_cmds::deploy_dev_app(&endpoint, &service.cert, dir, bundle).await?;
                println!("{line}");
            }
        }
        println!("{what} ready: https://{addr} {ready_detail}");
        let served = server.await.context("the server task failed")??;
        let committed = served.committed;
        if served.paused.is_some() {
            println!("replication paused; ledger flushed and committed through seqno {committed}");
        } else {
            println!("stopped; ledger flushed and committed through seqno {committed}");
        }
        Ok::<_, anyhow::Error>(served.paused)
    })
}

/// SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    Shutdown::listen().recv().await
}

/// SIGINT and SIGTERM listeners, registered when made (inside the runtime): a signal
/// that arrives after the ready line but before anything awaits it is still seen.
/// (A listener made later misses a signal delivered earlier, and the process would
/// go on running after its supervisor asked it to stop.)
pub(crate) struct Shutdown {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Shutdown {
    pub(crate) fn listen() -> Shutdown {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Shutdown {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Shutdown {}
    }

    /// Resolves at the first SIGINT or SIGTERM since [`Shutdown::listen`].
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = one(&mut self.interrupt) => {}
                () = one(&mut self.terminate) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }

    /// [`Shutdown::recv`], owning the listeners (for a task that outlives the caller).
    pub(crate) async fn wait(mut self) {
        self.recv().await
    }
}

/// The identity service's own TLS identity: a CA clients trust (`cert.pem`) and the
/// leaf it issued for localhost (`leaf.pem`, `key.pem`), created on first run.
fn identity_tls(tls_dir: &Path) -> Result<(covenant_crypto::SigningKeyPair, Certificate)> {
    if !tls_dir.join("leaf.pem").exists() {
        std::fs::create_dir_all(tls_dir)
            .with_context(|| format!("creating {}", tls_dir.display()))?;
        let ca = ServiceIdentity::generate(Curve::P384)?;
        let key = covenant_crypto::SigningKeyPair::generate(Curve::P384)?;
        let leaf = ca.issue_node_cert(&key, &SubjectAltName::dev_defaults(), 3650)?;
        write_private_file(&tls_dir.join("key.pem"), key.to_pem().as_bytes())?;
        covenant_crypto::write_public_file(&tls_dir.join("cert.pem"), ca.cert.to_pem().as_bytes())?;
        covenant_crypto::write_public_file(&tls_dir.join("leaf.pem"), leaf.to_pem().as_bytes())?;
    }
    let leaf = Certificate::from_pem(&read_pem_file(&tls_dir.join("leaf.pem"))?)?;
    let key = covenant_crypto::SigningKeyPair::from_pem(&read_pem_file(&tls_dir.join("key.pem"))?)?;
    Ok((key, leaf))
}

fn identity_service(dir: &Path, port: u16) -> Result<()> {
    let (key, leaf) = identity_tls(&dir.join("identity_tls"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let dir = dir.to_path_buf();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
        let addr = listener.local_addr()?;
        println!(
            "covenant identity service ready: https://{addr}/ledgerIdentity/<ledgerId> (trust {})",
            dir.join("identity_tls/cert.pem").display()
        );
        covenant_node::serve_identity_service(listener, dir, &leaf, &key, shutdown_signal())
            .await?;
        Ok(())
    })
}
