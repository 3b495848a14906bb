//! Shamir secret sharing over the prime field p = 2^31 - 1, ten field elements
//! ("limbs") at a time: one polynomial of degree t-1 per limb, evaluated at
//! x = 1..n for the shares and at x = 0 for the secret. The layout follows CCF's
//! (research/ccf-internals.md §7): a share is `u32 x` then ten `u32 y`, little-endian,
//! 44 bytes.

use zeroize::{Zeroize, Zeroizing};

use crate::RecoveryError;

/// The field's modulus, 2^31 - 1.
pub const PRIME: u64 = (1 << 31) - 1;
/// Field elements per share.
pub const LIMBS: usize = 10;
/// Bytes of a serialized share.
pub const SHARE_LEN: usize = 4 + 4 * LIMBS;
/// Most shares one split can make (x stays a small non-zero field element).
pub const MAX_SHARES: usize = 255;

/// One point of every limb's polynomial. `x = 0` is the secret itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Share {
    pub x: u32,
    pub y: [u32; LIMBS],
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share(x={}, ..)", self.x)
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.y.zeroize();
    }
}

impl Share {
    /// A fresh random secret (x = 0): ten uniform field elements.
    pub fn random_secret() -> Result<Share, RecoveryError> {
        let mut y = [0u32; LIMBS];
        for v in &mut y {
            *v = random_element()?;
        }
        Ok(Share { x: 0, y })
    }

    /// `x` then the ten limbs, each a little-endian u32.
    pub fn to_bytes(&self) -> Zeroizing<[u8; SHARE_LEN]> {
        let mut out = Zeroizing::new([0u8; SHARE_LEN]);
        out[..4].copy_from_slice(&self.x.to_le_bytes());
        for (i, v) in self.y.iter().enumerate() {
            out[4 + 4 * i..8 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// The ten limbs as bytes (what the wrapping key is derived from).
    pub fn y_bytes(&self) -> Zeroizing<[u8; 4 * LIMBS]> {
        let mut out = Zeroizing::new([0u8; 4 * LIMBS]);
        out.copy_from_slice(&self.to_bytes()[4..]);
        out
    }

    /// Parses a share, refusing any other length and limbs outside the field.
    pub fn from_bytes(bytes: &[u8]) -> Result<Share, RecoveryError> {
        if bytes.len() != SHARE_LEN {
            return Err(RecoveryError::MalformedShare(format!(
                "a recovery share is {SHARE_LEN} bytes, not {}",
                bytes.len()
            )));
        }
        let word = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&bytes[4 * i..4 * i + 4]);
            u32::from_le_bytes(w)
        };
        let mut share = Share {
            x: word(0),
            y: [0; LIMBS],
        };
        for i in 0..LIMBS {
            let v = word(i + 1);
            if u64::from(v) >= PRIME {
                return Err(RecoveryError::MalformedShare(
                    "a limb of the share is outside the field".into(),
                ));
            }
            share.y[i] = v;
        }
        Ok(share)
    }
}

/// A uniform element of the field (rejection sampling over 31 random bits).
fn random_element() -> Result<u32, RecoveryError> {
    loop {
        let mut b = [0u8; 4];
        aws_lc_rs::rand::fill(&mut b).map_err(|_| RecoveryError::Random)?;
        let v = u32::from_le_bytes(b) & 0x7fff_ffff;
        if u64::from(v) < PRIME {
            return Ok(v);
        }
    }
}

fn mul(a: u64, b: u64) -> u64 {
    a * b % PRIME
}

fn pow(mut base: u64, mut exp: u64) -> u64 {
    let mut acc = 1;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = mul(acc, base);
        }
        base = mul(base, base);
        exp >>= 1;
    }
    acc
}

/// The multiplicative inverse of a non-zero element (Fermat: a^(p-2)).
fn inverse(a: u64) -> u64 {
    pow(a, PRIME - 2)
}

/// Splits `secret` (x = 0) into `n` shares (x = 1..n), any `threshold` of which
/// rebuild it.
pub fn split(secret: &Share, n: usize, threshold: usize) -> Result<Vec<Share>, RecoveryError> {
    if secret.x != 0 {
        return Err(RecoveryError::MalformedShare(
            "the secret to split is the point at x = 0".into(),
        ));
    }
    if threshold == 0 || threshold > n || n > MAX_SHARES {
        return Err(RecoveryError::Threshold {
            threshold,
            members: n,
        });
    }
    // coefficients[limb][k]: k = 0 is the secret's limb, the rest random.
    let mut coefficients = Zeroizing::new(vec![[0u64; MAX_SHARES]; LIMBS]);
    for (limb, c) in coefficients.iter_mut().enumerate() {
        c[0] = u64::from(secret.y[limb]);
        for k in c.iter_mut().take(threshold).skip(1) {
            *k = u64::from(random_element()?);
        }
    }
    let mut shares = Vec::with_capacity(n);
    for x in 1..=n as u64 {
        let mut y = [0u32; LIMBS];
        for (limb, c) in coefficients.iter().enumerate() {
            // Horner's rule from the highest coefficient.
            let mut acc = 0u64;
            for k in (0..threshold).rev() {
                acc = (mul(acc, x) + c[k]) % PRIME;
            }
            y[limb] = acc as u32;
        }
        shares.push(Share { x: x as u32, y });
    }
    Ok(shares)
}

/// Rebuilds the secret (x = 0) from shares by Lagrange interpolation. Any
/// `threshold` distinct shares of one split give the secret; fewer give an
/// unrelated value, which only the wrapped ledger secret can tell apart.
pub fn combine(shares: &[Share]) -> Result<Share, RecoveryError> {
    if shares.is_empty() {
        return Err(RecoveryError::MalformedShare("no shares to combine".into()));
    }
    for (i, s) in shares.iter().enumerate() {
        if s.x == 0 || u64::from(s.x) >= PRIME {
            return Err(RecoveryError::MalformedShare(format!(
                "share x = {} is not a share's point",
                s.x
            )));
        }
        if shares[..i].iter().any(|o| o.x == s.x) {
            return Err(RecoveryError::MalformedShare(format!(
                "two shares have x = {}",
                s.x
            )));
        }
    }
    let mut y = [0u32; LIMBS];
    for (j, sj) in shares.iter().enumerate() {
        // The Lagrange basis polynomial of share j, evaluated at 0.
        let xj = u64::from(sj.x);
        let mut num = 1u64;
        let mut den = 1u64;
        for (m, sm) in shares.iter().enumerate() {
            if m != j {
                let xm = u64::from(sm.x);
                num = mul(num, xm);
                den = mul(den, (xm + PRIME - xj) % PRIME);
            }
        }
        let basis = mul(num, inverse(den));
        for (limb, out) in y.iter_mut().enumerate() {
            *out = ((u64::from(*out) + mul(u64::from(sj.y[limb]), basis)) % PRIME) as u32;
        }
    }
    Ok(Share { x: 0, y })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn field_inverse() {
        for a in [1u64, 2, 3, 12345, PRIME - 1] {
            assert_eq!(mul(a, inverse(a)), 1);
        }
    }

    #[test]
    fn a_share_is_44_bytes_little_endian() {
        let s = Share {
            x: 3,
            y: [1, 2, 3, 4, 5, 6, 7, 8, 9, (PRIME - 1) as u32],
        };
        let b = s.to_bytes();
        assert_eq!(b.len(), 44);
        assert_eq!(&b[..8], &[3, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(Share::from_bytes(&b[..]).unwrap(), s);
        assert!(Share::from_bytes(&b[..43]).is_err());
        let mut out_of_field = *b;
        out_of_field[40..44].copy_from_slice(&(PRIME as u32).to_le_bytes());
        assert!(Share::from_bytes(&out_of_field).is_err());
    }

    #[test]
    fn bad_splits_and_combines_are_refused() {
        let s = Share::random_secret().unwrap();
        assert!(split(&s, 3, 0).is_err());
        assert!(split(&s, 3, 4).is_err());
        assert!(split(&s, 256, 2).is_err());
        let shares = split(&s, 3, 2).unwrap();
        assert!(combine(&[]).is_err());
        assert!(combine(&[shares[0].clone(), shares[0].clone()]).is_err());
        assert!(combine(&[s.clone(), shares[1].clone()]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any t of n shares rebuild the secret, in any order.
        #[test]
        fn any_threshold_of_the_shares_rebuilds_the_secret(
            n in 1usize..12,
            t_frac in 0.0f64..1.0,
            pick in proptest::collection::vec(any::<u32>(), 12),
        ) {
            let t = 1 + ((n - 1) as f64 * t_frac) as usize;
            let secret = Share::random_secret().unwrap();
            let shares = split(&secret, n, t).unwrap();
            prop_assert_eq!(shares.len(), n);
            // A random selection of t distinct shares.
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                order.swap(i, pick[i] as usize % (i + 1));
            }
            let chosen: Vec<Share> = order[..t].iter().map(|&i| shares[i].clone()).collect();
            prop_assert_eq!(combine(&chosen).unwrap(), secret.clone());
            // More than t rebuild it too.
            prop_assert_eq!(combine(&shares).unwrap(), secret);
        }

        /// t-1 shares give a value that is not the secret (for t >= 2).
        #[test]
        fn fewer_than_the_threshold_do_not(n in 2usize..12, t_frac in 0.0f64..1.0) {
            let t = 2 + ((n - 2) as f64 * t_frac) as usize;
            let secret = Share::random_secret().unwrap();
            let shares = split(&secret, n, t).unwrap();
            let got = combine(&shares[..t - 1]).unwrap();
            prop_assert_ne!(got, secret);
        }

        /// t-1 shares reveal nothing checkable: whatever secret one guesses, some
        /// t-th share makes the t-1 shares combine to exactly that guess, so the
        /// t-1 shares are as consistent with any secret as with the real one.
        #[test]
        fn fewer_than_the_threshold_fit_any_secret(n in 2usize..12, t_frac in 0.0f64..1.0) {
            let t = 2 + ((n - 2) as f64 * t_frac) as usize;
            let secret = Share::random_secret().unwrap();
            let shares = split(&secret, n, t).unwrap();
            let known = &shares[..t - 1];
            let guess = Share::random_secret().unwrap();
            // The polynomial through the guess (x = 0) and the known shares,
            // evaluated at a point no share uses.
            let mut points = vec![guess.clone()];
            points.extend_from_slice(known);
            let x = n as u64 + 1;
            let mut y = [0u32; LIMBS];
            for (j, pj) in points.iter().enumerate() {
                let xj = u64::from(pj.x);
                let (mut num, mut den) = (1u64, 1u64);
                for (m, pm) in points.iter().enumerate() {
                    if m != j {
                        let xm = u64::from(pm.x);
                        num = mul(num, (x + PRIME - xm) % PRIME);
                        den = mul(den, (xj + PRIME - xm) % PRIME);
                    }
                }
                let basis = mul(num, inverse(den));
                for (limb, out) in y.iter_mut().enumerate() {
                    *out = ((u64::from(*out) + mul(u64::from(pj.y[limb]), basis)) % PRIME) as u32;
                }
            }
            let mut forged = known.to_vec();
            forged.push(Share { x: x as u32, y });
            prop_assert_eq!(combine(&forged).unwrap(), guess);
        }

        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Share::from_bytes(&bytes);
        }
    }
}
