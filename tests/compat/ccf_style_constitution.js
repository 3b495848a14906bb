// A constitution written for covenant's tests in the style of CCF's default one
// (CCF 5/6 samples/constitutions/default), not copied from it: it keeps CCF's
// table encodings (single-row tables keyed by 8 zero bytes, the constitution as a
// JSON string, modules keyed "/<name>", user and member ids from ccf.pemToId) and
// calls every governance host function CCF's default actions call, so that
// scripts/compat-ccf proves covenant runs such a constitution unchanged.

const SINGLETON = new ArrayBuffer(8);
const raw = (s) => ccf.strToBuf(s);
const json = (v) => ccf.jsonCompatibleToBuf(v);
const parse = (b) => ccf.bufToJsonCompatible(b);
const table = (name) => ccf.kv[`public:ccf.gov.${name}`];

function expect(cond, what) {
  if (!cond) {
    throw new Error(what);
  }
}
function validPem(pem, what) {
  expect(typeof pem === "string" && ccf.crypto.isValidX509CertBundle(pem), `${what} must be a PEM certificate`);
}
// The validate of the actions whose only required argument is `cert`.
function validCertArgs(args) {
  validPem(args.cert, "cert");
}
// Stores `cert` in `<kind>.certs` under its id (as CCF's actions do), and returns the id.
function putCert(kind, cert) {
  const id = raw(ccf.pemToId(cert));
  table(`${kind}.certs`).set(id, raw(cert));
  return id;
}
// Row `id` of table `name` holds `value()` when `present`, and is gone otherwise
// (an optional field of set_member and set_user).
function setOrDelete(name, id, present, value) {
  if (present) {
    table(name).set(id, value());
  } else {
    table(name).delete(id);
  }
}
function dropOtherOpenProposals(proposalId) {
  const info = table("proposals_info");
  const open = [];
  info.forEach((v, k) => {
    const id = ccf.bufToStr(k);
    const row = parse(v);
    if (id !== proposalId && row.state === "Open") {
      open.push([k, row]);
    }
  });
  for (const [k, row] of open) {
    row.state = "Dropped";
    info.set(k, json(row));
  }
}

const actions = new Map([
  ["set_constitution", {
    validate(args) {
      expect(typeof args.constitution === "string", "constitution must be a string");
      ccf.gov.validateConstitution(args.constitution);
    },
    apply(args, proposalId) {
      table("constitution").set(SINGLETON, json(args.constitution));
      dropOtherOpenProposals(proposalId);
    },
  }],
  ["set_member", {
    validate: validCertArgs,
    apply(args) {
      const id = putCert("members", args.cert);
      setOrDelete("members.encryption_public_keys", id, args.encryption_pub_key, () => raw(args.encryption_pub_key));
      table("members.info").set(id, json({ member_data: args.member_data, status: "Accepted" }));
      const sig = parse(ccf.kv["public:ccf.internal.signatures"].get(SINGLETON));
      table("members.acks").set(id, json({ state_digest: sig.root }));
    },
  }],
  ["remove_member", {
    validate(args) {
      expect(/^[0-9a-f]{64}$/.test(args.member_id), "member_id must be 64 hex digits");
    },
    apply(args) {
      for (const t of ["members.info", "members.encryption_public_keys", "members.certs", "members.acks"]) {
        table(t).delete(raw(args.member_id));
      }
    },
  }],
  ["set_user", {
    validate: validCertArgs,
    apply(args) {
      const id = putCert("users", args.cert);
      setOrDelete("users.info", id, args.user_data !== undefined && args.user_data !== null, () => json({ user_data: args.user_data }));
    },
  }],
  ["remove_user", {
    validate(args) {
      expect(/^[0-9a-f]{64}$/.test(args.user_id), "user_id must be 64 hex digits");
    },
    apply(args) {
      table("users.certs").delete(raw(args.user_id));
      table("users.info").delete(raw(args.user_id));
    },
  }],
  ["set_js_app", {
    validate(args) {
      const b = args.bundle;
      expect(b && Array.isArray(b.modules) && b.metadata && b.metadata.endpoints, "bundle needs modules and metadata.endpoints");
    },
    apply(args) {
      const modules = table("modules");
      const endpoints = table("endpoints");
      modules.clear();
      endpoints.clear();
      for (const m of args.bundle.modules) {
        modules.set(raw("/" + m.name), raw(m.module));
      }
      if (args.disable_bytecode_cache) {
        table("modules_quickjs_bytecode").clear();
        table("modules_quickjs_version").clear();
      } else {
        ccf.refreshAppBytecodeCache();
      }
      table("interpreter.flush").set(SINGLETON, json(true));
      for (const [url, verbs] of Object.entries(args.bundle.metadata.endpoints)) {
        for (const [verb, info] of Object.entries(verbs)) {
          info.js_module = "/" + info.js_module;
          endpoints.set(raw(`${verb.toUpperCase()} ${url}`), json(info));
        }
      }
    },
  }],
  ["transition_service_to_open", {
    validate(args) {
      validPem(args.next_service_identity, "next_service_identity");
    },
    apply(args) {
      const info = parse(table("service.info").get(SINGLETON));
      expect(info.status !== "Recovering" || args.previous_service_identity, "a recovering service needs previous_service_identity");
      const prev = args.previous_service_identity ? raw(args.previous_service_identity) : undefined;
      ccf.node.transitionServiceToOpen(prev, raw(args.next_service_identity));
    },
  }],
  ["set_jwt_issuer", {
    validate(args) {
      expect(typeof args.issuer === "string", "issuer must be a string");
    },
    apply(args) {
      const jwks = args.jwks;
      delete args.jwks;
      if (jwks) {
        ccf.setJwtPublicSigningKeys(args.issuer, args, jwks);
      }
      table("jwt.issuers").set(raw(args.issuer), json(args));
    },
  }],
  ["remove_jwt_issuer", {
    validate(args) {
      expect(typeof args.issuer === "string", "issuer must be a string");
    },
    apply(args) {
      table("jwt.issuers").delete(raw(args.issuer));
      ccf.removeJwtPublicSigningKeys(args.issuer);
    },
  }],
  ["transition_node_to_trusted", {
    validate(args) {
      expect(/^[0-9a-f]{64}$/.test(args.node_id), "node_id must be 64 hex digits");
    },
    apply(args) {
      const nodes = table("nodes.info");
      const node = parse(nodes.get(raw(args.node_id)));
      if (node.status === "Pending") {
        node.status = "Trusted";
        node.ledger_secret_seqno = ccf.network.getLatestLedgerSecretSeqno();
        nodes.set(raw(args.node_id), json(node));
        if (node.certificate_signing_request) {
          const pem = ccf.network.generateEndorsedCertificate(node.certificate_signing_request, args.valid_from, 365);
          table("nodes.endorsed_certificates").set(raw(args.node_id), raw(pem));
        }
      }
    },
  }],
  ["add_host_data_digest", {
    // Exercises ccf.crypto.digest as CCF's add_snp_host_data does.
    validate(args) {
      const d = ccf.crypto.digest("SHA-256", raw(args.policy));
      const hex = Array.from(new Uint8Array(d)).map((b) => b.toString(16).padStart(2, "0")).join("");
      expect(hex === args.host_data, "host_data must be the SHA-256 of policy");
    },
    apply(args) {
      table("nodes.virtual.host_data").set(raw(args.host_data), json(args.policy));
    },
  }],
  ["assert_service_identity", {
    // As CCF's: validate reads the service's certificate from service.info.
    validate(args) {
      validPem(args.service_identity, "service_identity");
      const info = parse(table("service.info").get(SINGLETON));
      expect(info.cert === args.service_identity, "Service identity certificate mismatch");
    },
    apply() {},
  }],
  ["trigger_snapshot", { validate() {}, apply() { ccf.node.triggerSnapshot(); } }],
  ["trigger_ledger_chunk", { validate() {}, apply() { ccf.node.triggerLedgerChunk(); } }],
  ["trigger_ledger_rekey", { validate() {}, apply() { ccf.node.triggerLedgerRekey(); } }],
  ["trigger_recovery_shares_refresh", { validate() {}, apply() { ccf.node.triggerRecoverySharesRefresh(); } }],
  ["set_service_certificate_validity", {
    validate() {},
    apply(args) {
      const info = parse(table("service.info").get(SINGLETON));
      info.cert = ccf.network.generateNetworkCertificate(args.valid_from, 365);
      table("service.info").set(SINGLETON, json(info));
    },
  }],
]);

export function validate(input) {
  const problems = [];
  JSON.parse(input).actions.forEach((a, i) => {
    const action = actions.get(a.name);
    if (action === undefined) {
      problems.push(`${a.name}: no such action`);
      return;
    }
    try {
      action.validate(a.args);
    } catch (e) {
      problems.push(`${a.name} at position ${i} failed validation: ${e}`);
    }
  });
  return { valid: problems.length === 0, description: problems.join(", ") };
}

export function resolve(proposal, proposerId, votes, proposalId) {
  let active = 0;
  table("members.info").forEach((v) => {
    if (parse(v).status === "Active") {
      active += 1;
    }
  });
  const yes = votes.filter((v) => v.vote === true).length;
  return yes > Math.floor(active / 2) ? "Accepted" : "Open";
}

export function apply(proposal, proposalId) {
  for (const a of JSON.parse(proposal).actions) {
    actions.get(a.name).apply(a.args, proposalId);
  }
}
