//! The maps a governance script sees ([`covenant_js::kv::BufferedKv`]) and what it
//! may write: only a proposal's `apply`, only `public:ccf.gov.*` maps other than the
//! proposals themselves (their info, which CCF's constitutions update, may be).

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
        // CCF's constitutions mark other open proposals Dropped themselves (in
        // proposals_info); the proposals as submitted stay out of reach.
        if !map.starts_with("public:ccf.gov.") || map == crate::PROPOSALS {
            return Err(format!(
                "governance may not write {map} (only public:ccf.gov.* maps other than the proposals themselves)"
            ));
        }
        Ok(())
    })
}
