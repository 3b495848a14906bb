//! When to emit a signature. A transaction commits only once a signature after it
//! is durable (or replicated), so a fixed signing period puts half of it into
//! every commit's latency. Signing as soon as the pipeline goes quiet, and after
//! a short, bounded wait while transactions keep coming, commits in milliseconds;
//! the wait is never shorter than a multiple of what one signature costs, so under
//! load signatures stay a small, fixed share of the work, each covering more
//! transactions.

use std::time::{Duration, Instant};

use covenant_types::SeqNo;

/// Signing may take at most 1/`COST_FACTOR` of the time while transactions flow.
const COST_FACTOR: u32 = 20;
/// The shortest wait between signatures under load.
const MIN_GAP: Duration = Duration::from_millis(1);
/// How often to look again while something is unsigned.
pub const PACER_POLL: Duration = Duration::from_millis(1);

/// Decides, from what the engine shows, whether to sign now (see the module doc).
#[derive(Debug, Clone)]
pub struct SignPacer {
    max_delay: Duration,
    /// What the last signature took (an estimate until the first one).
    cost: Duration,
    last_signed: Option<Instant>,
    /// When something unsigned was first seen.
    unsigned_since: Option<Instant>,
    /// The last seqno seen by [`SignPacer::due`].
    last_seen: SeqNo,
}

impl SignPacer {
    /// `max_delay`: the longest anything waits unsigned (`sig_ms_interval`).
    pub fn new(max_delay: Duration) -> SignPacer {
        SignPacer {
            max_delay,
            cost: Duration::from_micros(200),
            last_signed: None,
            unsigned_since: None,
            last_seen: SeqNo::ZERO,
        }
    }

    /// The wait between signatures while transactions keep coming.
    pub fn gap(&self) -> Duration {
        (self.cost * COST_FACTOR).clamp(MIN_GAP, self.max_delay.max(MIN_GAP))
    }

    /// Whether to sign now, given the engine's last seqno and how many
    /// transactions are unsigned. Quiet (nothing appended since the previous
    /// look): sign at once. Busy: once the oldest unsigned one waited a gap, and at
    /// the latest after `max_delay`.
    pub fn due(&mut self, now: Instant, last_seqno: SeqNo, unsigned: u64) -> bool {
        let quiet = last_seqno == self.last_seen;
        self.last_seen = last_seqno;
        if unsigned == 0 {
            self.unsigned_since = None;
            return false;
        }
        let since = *self.unsigned_since.get_or_insert(now);
        let waited = now.saturating_duration_since(since);
        if waited >= self.max_delay {
            return true;
        }
        let gap = self.gap();
        let spaced = self
            .last_signed
            .is_none_or(|at| now.saturating_duration_since(at) >= gap);
        spaced && (quiet || waited >= gap)
    }

    /// Records a signature emitted at `at` that took `cost`.
    pub fn signed(&mut self, at: Instant, cost: Duration) {
        self.last_signed = Some(at);
        self.unsigned_since = None;
        // Smoothed, so one slow signature (a page fault, a busy core) does not
        // stretch the next gaps much.
        self.cost = (self.cost * 3 + cost) / 4;
    }

    /// How long a caller may sleep before looking again.
    pub fn poll(&self) -> Duration {
        match self.unsigned_since {
            Some(_) => PACER_POLL,
            None => self.max_delay.min(Duration::from_millis(5)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn quiet_signs_at_once_busy_waits_a_gap_and_never_past_the_max() {
        let t0 = Instant::now();
        let mut p = SignPacer::new(ms(100));
        // Nothing unsigned: never.
        assert!(!p.due(t0, SeqNo(0), 0));
        // One transaction arrives; the next look sees nothing new: sign.
        assert!(!p.due(t0, SeqNo(1), 1));
        assert!(p.due(t0 + ms(1), SeqNo(1), 1));
        p.signed(t0 + ms(1), Duration::from_micros(200));
        // Busy: a new transaction at every look. Not before a gap has passed.
        let gap = p.gap();
        assert_eq!(gap, Duration::from_micros(200) * COST_FACTOR);
        let mut now = t0 + ms(1);
        let mut seq = 1;
        let mut signed_at = None;
        for _ in 0..200 {
            now += Duration::from_micros(500);
            seq += 1;
            if p.due(now, SeqNo(seq), 5) {
                signed_at = Some(now);
                break;
            }
        }
        let waited = signed_at.unwrap() - (t0 + ms(1));
        assert!(
            waited >= gap && waited <= gap * 2,
            "{waited:?} vs gap {gap:?}"
        );
    }

    #[test]
    fn an_expensive_signature_spaces_the_next_ones_up_to_the_max() {
        let t0 = Instant::now();
        let mut p = SignPacer::new(ms(50));
        for _ in 0..20 {
            p.signed(t0, ms(10));
        }
        assert_eq!(p.gap(), ms(50), "capped at the max delay");
        // Busy for 49 ms after the signature: not yet; at 50 ms, whatever else.
        assert!(!p.due(t0 + ms(1), SeqNo(1), 1));
        assert!(!p.due(t0 + ms(49), SeqNo(2), 2));
        assert!(p.due(t0 + ms(51), SeqNo(3), 3));
    }

    #[test]
    fn a_quiet_pipeline_still_respects_the_gap_after_a_signature() {
        let t0 = Instant::now();
        let mut p = SignPacer::new(ms(100));
        p.signed(t0, ms(1));
        let gap = p.gap();
        assert!(!p.due(t0, SeqNo(1), 1));
        assert!(!p.due(t0 + gap / 2, SeqNo(1), 1), "too soon after the last");
        assert!(p.due(t0 + gap, SeqNo(1), 1));
    }
}
