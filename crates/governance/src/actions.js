// covenant's governance actions (SPEC §5), installed as `covenant.actions` before a
// constitution runs. Each action has `validate(args)` (throws on bad arguments) and
// `apply(args, proposalId)` (writes the governance maps through ccf.kv). A
// constitution may use them, wrap them, or define its own.
(() => {
  const str = (v) => ccf.strToBuf(v);
  const json = (v) => ccf.jsonCompatibleToBuf(v);
  const map = (name) => ccf.kv[name];

  function need(args, field, type) {
    if (args === null || typeof args !== "object") {
      throw new Error("the action needs an args object");
    }
    const v = args[field];
    if (typeof v !== type) {
      throw new Error(`args.${field} must be a ${type}`);
    }
    return v;
  }
  function optionalObject(args, field) {
    const v = args[field];
    if (v !== undefined && v !== null && typeof v !== "object") {
      throw new Error(`args.${field} must be an object`);
    }
    return v;
  }
  // Reads the JSON row `key` of `name` ({} when absent), lets `change` edit it, writes it.
  function updateRow(name, key, change) {
    const old = map(name).get(str(key));
    const value = old === undefined ? {} : ccf.bufToJsonCompatible(old);
    change(value);
    map(name).set(str(key), json(value));
  }
  // Members whose shares recover the service: Active, with an encryption key.
  function activeRecoveryMembers() {
    let n = 0;
    map("public:ccf.gov.members.encryption_public_keys").forEach((_, id) => {
      const info = map("public:ccf.gov.members.info").get(id);
      if (info !== undefined && ccf.bufToJsonCompatible(info).status === "Active") {
        n += 1;
      }
    });
    return n;
  }
  function serviceOpen() {
    const info = map("public:ccf.gov.service.info").get(str("0"));
    return info === undefined || ccf.bufToJsonCompatible(info).status === "Open";
  }
  // Shares are issued to the active recovery members of an open service, any
  // `threshold` of them together recovering it: a threshold above their number
  // would leave the service unrecoverable.
  function checkRecoveryThreshold(t) {
    const n = activeRecoveryMembers();
    if (serviceOpen() && t > n) {
      throw new Error(`recovery_threshold ${t} is above the ${n} active recovery members`);
    }
  }
  // A JWKS document: a non-empty keys list of public JWKs, each with a kid.
  function checkJwks(jwks) {
    if (jwks === null || typeof jwks !== "object" || !Array.isArray(jwks.keys) || jwks.keys.length === 0) {
      throw new Error("args.jwks must be a JWKS document with a non-empty keys list");
    }
    for (const k of jwks.keys) {
      if (k === null || typeof k !== "object" || typeof k.kty !== "string") {
        throw new Error("every key of args.jwks.keys must be a JWK object with a kty");
      }
      if (k.kty === "oct") {
        throw new Error("symmetric (oct) keys cannot verify tokens from a public key set");
      }
    }
  }
  function clearMap(name) {
    const keys = [];
    map(name).forEach((_, k) => keys.push(k));
    for (const k of keys) {
      map(name).delete(k);
    }
  }
  // Sets the status of an existing node row (which must be `from`, when given).
  function setNodeStatus(nodeId, status, from) {
    if (map("public:ccf.gov.nodes.info").get(str(nodeId)) === undefined) {
      throw new Error(`no node ${nodeId}`);
    }
    updateRow("public:ccf.gov.nodes.info", nodeId, (row) => {
      if (from !== undefined && row.status !== from) {
        throw new Error(`node ${nodeId} is ${row.status}, not ${from}`);
      }
      row.status = status;
    });
  }
  // A certificate user's id as CCF spells it: lower-case hex SHA-256 of the DER
  // (ccf.pemToId). The ACL spelling (upper-case pairs joined by ':') of the same
  // digest is accepted where an id is given, and names rows older ledgers wrote.
  function ccfUserId(id) {
    return /^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$/.test(id) ? id.replace(/:/g, "").toLowerCase() : id;
  }
  function aclUserId(id) {
    return /^[0-9a-f]{64}$/.test(id) ? id.toUpperCase().match(/../g).join(":") : id;
  }
  const ROLES = ["Reader", "Contributor", "Administrator"];

  const actions = {
    set_user: {
      validate(args) {
        ccf.pemToId(need(args, "cert", "string"));
        const data = optionalObject(args, "user_data");
        const roles = data && data.assignedRoles;
        if (roles !== undefined && (!Array.isArray(roles) || !roles.every((r) => ROLES.includes(r)))) {
          throw new Error(`user_data.assignedRoles must list roles among ${ROLES.join(", ")}`);
        }
      },
      // A CCF user (for JS apps); a user of the ledger API too only with
      // user_data.assignedRoles. Without user_data there is no info row (CCF's rule).
      apply(args) {
        const id = ccf.pemToId(args.cert);
        map("public:ccf.gov.users.certs").set(str(id), str(args.cert));
        if (args.user_data === undefined || args.user_data === null) {
          map("public:ccf.gov.users.info").delete(str(id));
        } else {
          map("public:ccf.gov.users.info").set(str(id), json({ user_data: args.user_data }));
        }
        for (const t of ["certs", "info"]) {
          map(`public:ccf.gov.users.${t}`).delete(str(aclUserId(id)));
        }
      },
    },
    set_user_data: {
      validate(args) {
        need(args, "user_id", "string");
        optionalObject(args, "user_data");
      },
      apply(args) {
        const id = ccfUserId(args.user_id);
        if (args.user_data === undefined || args.user_data === null) {
          map("public:ccf.gov.users.info").delete(str(id));
        } else {
          map("public:ccf.gov.users.info").set(str(id), json({ user_data: args.user_data }));
        }
      },
    },
    remove_user: {
      validate(args) {
        need(args, "user_id", "string");
      },
      apply(args) {
        const id = ccfUserId(args.user_id);
        for (const key of [id, aclUserId(id)]) {
          map("public:ccf.gov.users.certs").delete(str(key));
          map("public:ccf.gov.users.info").delete(str(key));
        }
      },
    },
    set_member: {
      validate(args) {
        ccf.pemToId(need(args, "cert", "string"));
        if (args.encryption_pub_key !== undefined) {
          need(args, "encryption_pub_key", "string");
        }
      },
      apply(args) {
        const id = ccf.pemToId(args.cert);
        map("public:ccf.gov.members.certs").set(str(id), str(args.cert));
        map("public:ccf.gov.members.info").set(
          str(id),
          json({ status: "Accepted", member_data: args.member_data === undefined ? null : args.member_data }),
        );
        if (args.encryption_pub_key !== undefined) {
          map("public:ccf.gov.members.encryption_public_keys").set(str(id), str(args.encryption_pub_key));
        }
      },
    },
    remove_member: {
      validate(args) {
        need(args, "member_id", "string");
      },
      apply(args) {
        for (const m of ["certs", "info", "encryption_public_keys", "acks"]) {
          map(`public:ccf.gov.members.${m}`).delete(str(args.member_id));
        }
      },
    },
    set_constitution: {
      validate(args) {
        need(args, "constitution", "string");
      },
      apply(args) {
        map("public:ccf.gov.constitution").set(str("0"), str(args.constitution));
      },
    },
    add_node_code: {
      validate(args) {
        if (!/^[0-9a-f]{64}$/.test(need(args, "code_id", "string"))) {
          throw new Error("args.code_id must be 64 lower-case hex digits");
        }
      },
      apply(args) {
        map("public:ccf.gov.nodes.code_ids").set(str(args.code_id), json("AllowedToJoin"));
      },
    },
    remove_node_code: {
      validate(args) {
        need(args, "code_id", "string");
      },
      apply(args) {
        map("public:ccf.gov.nodes.code_ids").delete(str(args.code_id));
      },
    },
    // The node layer completes these in the same transaction: a Trusted row gets an
    // endorsed certificate and a Raft id and the node joins the configuration; a
    // Retired row leaves it.
    transition_node_to_trusted: {
      validate(args) {
        need(args, "node_id", "string");
      },
      apply(args) {
        setNodeStatus(args.node_id, "Trusted", "Pending");
      },
    },
    set_node_data: {
      validate(args) {
        need(args, "node_id", "string");
      },
      apply(args) {
        if (map("public:ccf.gov.nodes.info").get(str(args.node_id)) === undefined) {
          throw new Error(`no node ${args.node_id}`);
        }
        updateRow("public:ccf.gov.nodes.info", args.node_id, (row) => {
          row.node_data = args.node_data === undefined ? null : args.node_data;
        });
      },
    },
    remove_node: {
      validate(args) {
        need(args, "node_id", "string");
      },
      apply(args) {
        setNodeStatus(args.node_id, "Retired");
      },
    },
    set_jwt_issuer: {
      // args: {issuer, jwks?: {keys: [JWK...]}, audience?, ca_cert_bundle_name?}. Keys
      // are given inline here or later with set_jwt_public_signing_keys: a node
      // never fetches them itself (auto_refresh is not supported).
      validate(args) {
        const issuer = need(args, "issuer", "string");
        if (issuer.length === 0) {
          throw new Error("args.issuer must not be empty");
        }
        if (args.jwks !== undefined) {
          checkJwks(args.jwks);
        }
        if (args.audience !== undefined && typeof args.audience !== "string") {
          throw new Error("args.audience must be a string");
        }
        if (args.auto_refresh === true) {
          throw new Error(
            "auto_refresh is not supported (covenant never fetches keys): pass the issuer's keys in args.jwks or with set_jwt_public_signing_keys",
          );
        }
      },
      apply(args) {
        const old = map("public:ccf.gov.jwt.issuers").get(str(args.issuer));
        const row = Object.assign({}, args);
        if (row.jwks === undefined && old !== undefined) {
          const kept = ccf.bufToJsonCompatible(old).jwks;
          if (kept !== undefined) {
            row.jwks = kept;
          }
        }
        map("public:ccf.gov.jwt.issuers").set(str(args.issuer), json(row));
      },
    },
    set_jwt_public_signing_keys: {
      // args: {issuer, jwks}: replaces the keys of an issuer set before.
      validate(args) {
        need(args, "issuer", "string");
        checkJwks(args.jwks);
      },
      apply(args) {
        updateRow("public:ccf.gov.jwt.issuers", args.issuer, (row) => {
          if (row.issuer === undefined) {
            throw new Error(`no JWT issuer ${args.issuer}: set_jwt_issuer first`);
          }
          row.jwks = args.jwks;
        });
      },
    },
    remove_jwt_issuer: {
      validate(args) {
        need(args, "issuer", "string");
      },
      apply(args) {
        map("public:ccf.gov.jwt.issuers").delete(str(args.issuer));
        map("public:ccf.gov.jwt.issuer_keys").delete(str(args.issuer));
      },
    },
    // CA bundles (PEM) an issuer's key endpoint would be checked against; kept for
    // CCF's tooling (covenant fetches no keys, so none is used yet).
    set_ca_cert_bundle: {
      validate(args) {
        need(args, "name", "string");
        if (!ccf.crypto.isValidX509CertBundle(need(args, "cert_bundle", "string"))) {
          throw new Error("args.cert_bundle must be PEM certificates");
        }
      },
      apply(args) {
        map("public:ccf.gov.tls.ca_cert_bundles").set(str(args.name), json(args.cert_bundle));
      },
    },
    remove_ca_cert_bundle: {
      validate(args) {
        need(args, "name", "string");
      },
      apply(args) {
        map("public:ccf.gov.tls.ca_cert_bundles").delete(str(args.name));
      },
    },
    set_recovery_threshold: {
      validate(args) {
        const t = need(args, "recovery_threshold", "number");
        if (!Number.isInteger(t) || t < 1 || t > 255) {
          throw new Error("args.recovery_threshold must be an integer in 1..255");
        }
        checkRecoveryThreshold(t);
      },
      apply(args) {
        checkRecoveryThreshold(args.recovery_threshold);
        updateRow("public:ccf.gov.service.config", "0", (c) => {
          c.recovery_threshold = args.recovery_threshold;
        });
      },
    },
    // A new ledger secret for every transaction after this proposal's; each trusted
    // node receives it sealed to its encryption key, and new recovery shares wrap it.
    trigger_ledger_rekey: {
      validate() {},
      apply() {
        ccf.node.triggerLedgerRekey();
      },
    },
    // New recovery shares of the same ledger secret for the active recovery members
    // (the service issues them in this proposal's transaction).
    trigger_recovery_shares_refresh: {
      validate() {},
      apply() {
        ccf.node.triggerRecoverySharesRefresh();
      },
    },
    // args: {bundle: {metadata: {endpoints: {path: {method: props}}}, modules: [{name, module}]},
    //        disable_bytecode_cache?}. Replaces the whole app: modules by name (no leading
    // "/"), endpoints as "<METHOD> <path>" (served under /app).
    set_js_app: {
      validate(args) {
        const bundle = need(args, "bundle", "object");
        if (bundle === null || !Array.isArray(bundle.modules)) {
          throw new Error("args.bundle.modules must be a list of {name, module}");
        }
        const names = new Set();
        for (const m of bundle.modules) {
          if (m === null || typeof m.name !== "string" || typeof m.module !== "string" || m.name.length === 0) {
            throw new Error("every module needs a name and a module (its source)");
          }
          names.add(m.name.replace(/^\/+/, ""));
        }
        const endpoints = bundle.metadata && bundle.metadata.endpoints;
        if (endpoints === null || typeof endpoints !== "object") {
          throw new Error("args.bundle.metadata.endpoints must be an object");
        }
        const METHODS = ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"];
        for (const [path, methods] of Object.entries(endpoints)) {
          if (!path.startsWith("/")) {
            throw new Error(`endpoint path ${path} must start with /`);
          }
          for (const [method, props] of Object.entries(methods)) {
            if (!METHODS.includes(method.toUpperCase())) {
              throw new Error(`endpoint ${path}: unknown method ${method}`);
            }
            if (props === null || typeof props.js_module !== "string" || typeof props.js_function !== "string") {
              throw new Error(`endpoint ${method} ${path} needs js_module and js_function`);
            }
            if (!names.has(props.js_module.replace(/^\/+/, ""))) {
              throw new Error(`endpoint ${method} ${path}: module ${props.js_module} is not in the bundle`);
            }
            const mode = props.mode;
            if (mode !== undefined && !["readwrite", "readonly", "historical"].includes(mode)) {
              throw new Error(`endpoint ${method} ${path}: mode must be readwrite, readonly or historical`);
            }
            if (props.authn_policies !== undefined && !Array.isArray(props.authn_policies)) {
              throw new Error(`endpoint ${method} ${path}: authn_policies must be a list`);
            }
          }
        }
      },
      apply(args) {
        clearMap("public:ccf.gov.modules");
        clearMap("public:ccf.gov.endpoints");
        for (const m of args.bundle.modules) {
          map("public:ccf.gov.modules").set(str(m.name.replace(/^\/+/, "")), str(m.module));
        }
        for (const [path, methods] of Object.entries(args.bundle.metadata.endpoints)) {
          for (const [method, props] of Object.entries(methods)) {
            map("public:ccf.gov.endpoints").set(str(`${method.toUpperCase()} ${path}`), json(props));
          }
        }
      },
    },
    remove_js_app: {
      validate() {},
      apply() {
        clearMap("public:ccf.gov.modules");
        clearMap("public:ccf.gov.endpoints");
      },
    },
    // args: {max_heap_bytes, max_stack_bytes, max_execution_time_ms, log_exception_details?,
    // return_exception_details?, max_cached_interpreters?}: the limits every app handler
    // runs under (one row, key "0").
    set_js_runtime_options: {
      validate(args) {
        const limits = {
          max_heap_bytes: [64 * 1024, 4 * 1024 * 1024 * 1024],
          max_stack_bytes: [16 * 1024, 256 * 1024 * 1024],
          max_execution_time_ms: [1, 600000],
        };
        for (const [field, [lo, hi]] of Object.entries(limits)) {
          const v = need(args, field, "number");
          if (!Number.isInteger(v) || v < lo || v > hi) {
            throw new Error(`args.${field} must be an integer in ${lo}..${hi}`);
          }
        }
        for (const field of ["log_exception_details", "return_exception_details"]) {
          if (args[field] !== undefined && typeof args[field] !== "boolean") {
            throw new Error(`args.${field} must be a boolean`);
          }
        }
        const c = args.max_cached_interpreters;
        if (c !== undefined && (!Number.isInteger(c) || c < 0)) {
          throw new Error("args.max_cached_interpreters must be a non-negative integer");
        }
      },
      apply(args) {
        map("public:ccf.gov.js_runtime_options").set(str("0"), json(args));
      },
    },
    // covenant's own: how a joining node is admitted under the default constitution's
    // join_policy ("auto": trusted at once if it presents the join token whose
    // SHA-256 is join_token_sha256; "pending": after transition_node_to_trusted).
    // join_token_sha256 (64 hex digits) replaces the token's digest; null removes it
    // (no node is then trusted without a proposal); absent leaves it as it is.
    set_join_policy: {
      validate(args) {
        const p = need(args, "join_policy", "string");
        if (p !== "auto" && p !== "pending") {
          throw new Error('args.join_policy must be "auto" or "pending"');
        }
        const d = args.join_token_sha256;
        if (d !== undefined && d !== null && !(typeof d === "string" && /^[0-9a-f]{64}$/.test(d))) {
          throw new Error("args.join_token_sha256 must be 64 lower-case hex digits or null");
        }
      },
      apply(args) {
        updateRow("public:ccf.gov.service.config", "0", (c) => {
          c.join_policy = args.join_policy;
          if (args.join_token_sha256 === null) {
            delete c.join_token_sha256;
          } else if (args.join_token_sha256 !== undefined) {
            c.join_token_sha256 = args.join_token_sha256;
          }
        });
      },
    },
    // args (optional while Opening): {previous_service_identity?, next_service_identity}
    // as PEM. After a disaster recovery both are required and checked, and the
    // service then waits for the recovery members' shares.
    transition_service_to_open: {
      validate(args) {
        if (args === undefined || args === null) {
          return;
        }
        for (const f of ["previous_service_identity", "next_service_identity"]) {
          if (args[f] !== undefined && typeof args[f] !== "string") {
            throw new Error(`args.${f} must be a PEM string`);
          }
        }
      },
      apply(args) {
        const a = args || {};
        const info = map("public:ccf.gov.service.info").get(str("0"));
        const status = info === undefined ? undefined : ccf.bufToJsonCompatible(info).status;
        if (status === "Recovering" || status === "WaitingForRecoveryShares") {
          ccf.node.transitionServiceToOpen(
            a.previous_service_identity === undefined ? undefined : str(a.previous_service_identity),
            str(a.next_service_identity || ""),
          );
          return;
        }
        updateRow("public:ccf.gov.service.info", "0", (i) => {
          i.status = "Open";
        });
      },
    },
    set_service_recent_cose_proposals_window_size: {
      validate(args) {
        const n = need(args, "proposals_window_size", "number");
        if (!Number.isInteger(n) || n < 1 || n > 10000) {
          throw new Error("args.proposals_window_size must be an integer in 1..10000");
        }
      },
      apply(args) {
        updateRow("public:ccf.gov.service.config", "0", (c) => {
          c.recent_cose_proposals_window_size = args.proposals_window_size;
        });
      },
    },
  };
  globalThis.covenant = Object.freeze({ actions: Object.freeze(actions) });
})();
