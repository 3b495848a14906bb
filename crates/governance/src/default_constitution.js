// covenant's default constitution. The governance engine (QuickJS) calls these three
// functions for every proposal; operators may start a ledger with their own.
//
// validate(input): is the proposal well formed? Returns {valid, description}.
// resolve(proposal, proposerId, votes): "Open", "Accepted" or "Rejected"; a strict
//   majority of *active* members must vote for it (accepted members do not vote yet).
// join_policy(node): "Trusted" or "Pending" for a node asking to join; this one follows
//   the service's join_policy setting ("auto" trusts a node that presented the
//   service's join token, anything else waits for a transition_node_to_trusted
//   proposal). The node never becomes Trusted at once without that token, whatever
//   this returns. A constitution without it keeps joiners Pending.
// apply(proposal, proposalId): performs the accepted actions with the action table
//   the governance engine provides as `covenant.actions` (validate/apply per action).

export function validate(input) {
  let proposal;
  try {
    proposal = JSON.parse(input);
  } catch (e) {
    return { valid: false, description: `proposal is not JSON: ${e}` };
  }
  if (!Array.isArray(proposal.actions) || proposal.actions.length === 0) {
    return { valid: false, description: "proposal needs a non-empty actions list" };
  }
  for (const action of proposal.actions) {
    if (typeof action.name !== "string" || action.name.length === 0) {
      return { valid: false, description: "every action needs a name" };
    }
    const known = covenant.actions[action.name];
    if (known === undefined) {
      return { valid: false, description: `unknown action ${action.name}` };
    }
    try {
      known.validate(action.args);
    } catch (e) {
      return { valid: false, description: `${action.name}: ${e.message}` };
    }
  }
  return { valid: true, description: "OK" };
}

function activeMembers() {
  const members = [];
  ccf.kv["public:ccf.gov.members.info"].forEach((value, key) => {
    const info = ccf.bufToJsonCompatible(value);
    if (info.status === "Active") {
      members.push(ccf.bufToStr(key));
    }
  });
  return members;
}

export function resolve(proposal, proposerId, votes) {
  const active = activeMembers();
  const inFavour = votes.filter((v) => v.vote === true && active.includes(v.member_id)).length;
  const against = votes.filter((v) => v.vote === false && active.includes(v.member_id)).length;
  const majority = Math.floor(active.length / 2) + 1;
  if (inFavour >= majority) {
    return "Accepted";
  }
  if (against >= majority) {
    return "Rejected";
  }
  return "Open";
}

export function apply(proposal, proposalId) {
  const actions = JSON.parse(proposal).actions;
  for (const action of actions) {
    const handler = covenant.actions[action.name];
    if (handler === undefined) {
      throw new Error(`unknown action ${action.name}`);
    }
    handler.apply(action.args, proposalId);
  }
}

export function join_policy(node) {
  const raw = ccf.kv["public:ccf.gov.service.config"].get(ccf.strToBuf("0"));
  const config = raw === undefined ? {} : ccf.bufToJsonCompatible(raw);
  return config.join_policy === "auto" && node.join_token_verified === true
    ? "Trusted"
    : "Pending";
}
