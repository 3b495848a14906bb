//! The maps a governance script sees ([`covenant_js::kv::BufferedKv`]) and what it
//! may write: only a proposal's `apply`, only `public:ccf.gov.*` maps other than the
//! proposals themselves.

use std::sync::Arc;

pub use covenant_js::kv::BufferedKv as GovKv;
use covenant_js::kv::WritePolicy;

/// The governance write policy; `writable`: only a proposal's `apply` writes.
pub fn policy(writable: bool) -> WritePolicy {
    Arc::new(move |map: &str| {
        if !writable {
            return Err(format!(
                "{map} is read-only here: only a proposal's apply writes"
            ));
        }
        if !map.starts_with("public:ccf.gov.")
            || map == crate::PROPOSALS
            || map == crate::PROPOSALS_INFO
        {
            return Err(format!(
                "governance may not write {map} (only public:ccf.gov.* maps other than proposals)"
            ));
        }
        Ok(())
    })
}
