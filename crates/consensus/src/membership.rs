//! Raft membership as ledger state: the configuration (voters and learners) is a
//! public map written by ordinary transactions, so a change is replicated, audited
//! and rolled back like any other write. Every node applies a change to raft-rs
//! when Raft commits the transaction that wrote it (the same "apply at commit" rule
//! raft-rs's own configuration entries follow), and only one change may be in
//! flight at a time, each adding, promoting or removing exactly one node, so the
//! majorities of consecutive configurations always overlap.

use std::collections::{BTreeMap, BTreeSet};

use raft::eraftpb::{ConfChange, ConfChangeType, ConfState};
use serde::{Deserialize, Serialize};

use crate::ConsensusError;

/// The map holding the current configuration (key [`MEMBERSHIP_KEY`]).
pub const MEMBERSHIP_MAP: &str = "public:ccf.internal.membership";
pub const MEMBERSHIP_KEY: &[u8] = b"0";

/// A Raft configuration: voting nodes and learners (nodes catching up, which
/// receive the log but do not count towards a majority), by Raft id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub voters: BTreeSet<u64>,
    #[serde(default)]
    pub learners: BTreeSet<u64>,
}

impl Membership {
    pub fn with_voters(voters: impl IntoIterator<Item = u64>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// Whether `id` takes part at all (voter or learner).
    pub fn contains(&self, id: u64) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    pub(crate) fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            ..Default::default()
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Membership, ConsensusError> {
        let m: Membership = serde_json::from_slice(bytes)
            .map_err(|e| ConsensusError::BadMembership(format!("not a configuration: {e}")))?;
        m.check()?;
        Ok(m)
    }

    /// The JSON stored in [`MEMBERSHIP_MAP`].
    pub fn encode(&self) -> Vec<u8> {
        // Two sets of integers always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn check(&self) -> Result<(), ConsensusError> {
        if self.voters.is_empty() {
            return Err(ConsensusError::BadMembership(
                "a configuration needs at least one voter".into(),
            ));
        }
        if self.voters.contains(&0) || self.learners.contains(&0) {
            return Err(ConsensusError::BadMembership(
                "raft id 0 is reserved".into(),
            ));
        }
        if let Some(both) = self.voters.intersection(&self.learners).next() {
            return Err(ConsensusError::BadMembership(format!(
                "node {both} is both a voter and a learner"
            )));
        }
        Ok(())
    }

    /// The one raft-rs change that turns `self` into `target`: add a learner, add
    /// or promote a voter, or remove a node. Anything else is refused.
    pub fn change_to(&self, target: &Membership) -> Result<ConfChange, ConsensusError> {
        target.check()?;
        let nodes: BTreeSet<u64> = self
            .voters
            .iter()
            .chain(&self.learners)
            .chain(&target.voters)
            .chain(&target.learners)
            .copied()
            .collect();
        let role = |m: &Membership, id: u64| {
            if m.voters.contains(&id) {
                2
            } else if m.learners.contains(&id) {
                1
            } else {
                0
            }
        };
        let changed: Vec<u64> = nodes
            .into_iter()
            .filter(|id| role(self, *id) != role(target, *id))
            .collect();
        let [id] = changed[..] else {
            return Err(ConsensusError::BadMembership(format!(
                "a configuration change must change exactly one node, not {}",
                changed.len()
            )));
        };
        let change_type = match (role(self, id), role(target, id)) {
            (_, 0) => ConfChangeType::RemoveNode,
            (0, 1) => ConfChangeType::AddLearnerNode,
            (_, 2) => ConfChangeType::AddNode,
            _ => {
                return Err(ConsensusError::BadMembership(format!(
                    "node {id} cannot be demoted from voter to learner"
                )))
            }
        };
        Ok(ConfChange {
            change_type,
            node_id: id,
            ..Default::default()
        })
    }
}

/// The configuration applied to raft-rs and the change (at most one) written but
/// not yet committed.
#[derive(Debug, Clone, Default)]
pub(crate) struct MembershipState {
    /// Seqno of the transaction that wrote the applied configuration (0: the
    /// bootstrap configuration from the node's settings).
    pub applied_seqno: u64,
    pub applied: Membership,
    /// Seqno → configuration written there, not yet committed by Raft.
    pub pending: BTreeMap<u64, Membership>,
}

impl MembershipState {
    /// A learner whose log has reached `committed` (by `matched`, the primary's view
    /// of each follower), ready to vote.
    pub fn learners_caught_up(
        &self,
        matched: impl Fn(u64) -> Option<u64>,
        committed: u64,
    ) -> Option<u64> {
        self.applied
            .learners
            .iter()
            .copied()
            .find(|id| matched(*id).is_some_and(|m| m >= committed))
    }

    /// Forgets changes rolled back with the suffix after `seqno`.
    pub fn rollback(&mut self, seqno: u64) {
        self.pending.split_off(&(seqno + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(voters: &[u64], learners: &[u64]) -> Membership {
        Membership {
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
        }
    }

    #[test]
    fn single_changes_are_recognized_and_others_refused() {
        let three = m(&[1, 2, 3], &[]);
        let add = three.change_to(&m(&[1, 2, 3], &[4])).unwrap();
        assert_eq!(
            (add.change_type, add.node_id),
            (ConfChangeType::AddLearnerNode, 4)
        );
        let promote = m(&[1, 2, 3], &[4])
            .change_to(&m(&[1, 2, 3, 4], &[]))
            .unwrap();
        assert_eq!(
            (promote.change_type, promote.node_id),
            (ConfChangeType::AddNode, 4)
        );
        let remove = three.change_to(&m(&[1, 3], &[])).unwrap();
        assert_eq!(
            (remove.change_type, remove.node_id),
            (ConfChangeType::RemoveNode, 2)
        );
        assert!(three.change_to(&m(&[1, 2, 3], &[4, 5])).is_err());
        assert!(three.change_to(&three).is_err());
        assert!(three.change_to(&m(&[1, 2], &[3])).is_err());
        assert!(three.change_to(&m(&[], &[1, 2, 3])).is_err());
        assert!(three.change_to(&m(&[1, 2, 3, 0], &[])).is_err());
    }

    #[test]
    fn decoding_validates() {
        let ok = m(&[1, 2], &[3]);
        assert_eq!(Membership::decode(&ok.encode()).unwrap(), ok);
        assert!(Membership::decode(b"{\"voters\":[]}").is_err());
        assert!(Membership::decode(b"{\"voters\":[1],\"learners\":[1]}").is_err());
        assert!(Membership::decode(b"not json").is_err());
    }

    #[test]
    fn rollback_drops_later_pending_changes() {
        let mut s = MembershipState::default();
        s.pending.insert(10, m(&[1], &[2]));
        s.pending.insert(20, m(&[1, 2], &[]));
        s.rollback(15);
        assert_eq!(s.pending.keys().copied().collect::<Vec<_>>(), vec![10]);
    }
}
