//! Modular exponentiation by a public exponent, for RSA verification:
//! Montgomery multiplication (separated operand scanning) on 32-bit limbs
//! with 64-bit products, the widest multiply wasm has natively.
//! `crypto-bigint`'s constant-time `BoxedMontyForm` took 1.7-1.9x as long
//! (node's V8, 300 exponentiations by 65537 modulo 2048 bits, 3 rounds); everything here is public (modulus, signature,
//! exponent), so variable time is fine. Checked against `num-bigint`
//! (through the `rsa` crate) on random operands, and by the Wycheproof and
//! differential suites of RS*/PS*.

/// An odd modulus with its Montgomery constants, computed once per key.
#[derive(Clone)]
pub struct Modulus {
    /// Little-endian 32-bit limbs.
    n: Vec<u32>,
    /// `-n^-1 mod 2^32`.
    n0: u32,
    /// `R^2 mod n`, `R = 2^(32 * limbs)`: takes a number into Montgomery form.
    r2: Vec<u32>,
    /// Byte length of the modulus (big-endian, no leading zero bytes).
    len: usize,
}

impl Modulus {
    /// `n` big-endian; `None` unless it is odd and above 1.
    pub fn new(n: &[u8]) -> Option<Modulus> {
        let start = n.iter().position(|b| *b != 0)?;
        let n = n.get(start..)?;
        let limbs = limbs_of(n, n.len().div_ceil(4));
        let low = *limbs.first()?;
        if low & 1 == 0 || (limbs.len() == 1 && low == 1) {
            return None;
        }
        // Newton's iteration doubles the correct low bits: 1, 2, 4, .., 32.
        let mut inv: u32 = 1;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u32.wrapping_sub(low.wrapping_mul(inv)));
        }
        let mut modulus = Modulus {
            n0: inv.wrapping_neg(),
            r2: Vec::new(),
            len: n.len(),
            n: limbs,
        };
        // 2^(2 * 32 * limbs) mod n by doubling from 1: once per key.
        let mut r2 = vec![0u32; modulus.n.len()];
        if let Some(first) = r2.first_mut() {
            *first = 1;
        }
        for _ in 0..64 * modulus.n.len() {
            modulus.double_mod(&mut r2);
        }
        modulus.r2 = r2;
        Some(modulus)
    }

    /// `base^e mod n` as big-endian bytes of the modulus' length; `None`
    /// when `base` (big-endian) is not below `n`.
    pub fn pow(&self, base: &[u8], e: u32) -> Option<Vec<u8>> {
        let base = limbs_of(base, self.n.len());
        if base.len() != self.n.len() || !less_than(&base, &self.n) || e == 0 {
            return None;
        }
        let mut scratch = vec![0u32; 2 * self.n.len() + 1];
        let mut base_m = vec![0u32; self.n.len()];
        self.mul(&base, &self.r2, &mut scratch, &mut base_m);
        let mut acc = base_m.clone();
        let mut next = vec![0u32; self.n.len()];
        let top = 31 - e.leading_zeros();
        for bit in (0..top).rev() {
            self.square(&acc, &mut scratch, &mut next);
            std::mem::swap(&mut acc, &mut next);
            if (e >> bit) & 1 == 1 {
                self.mul(&acc, &base_m, &mut scratch, &mut next);
                std::mem::swap(&mut acc, &mut next);
            }
        }
        // Out of Montgomery form: multiply by 1.
        let mut one = vec![0u32; self.n.len()];
        if let Some(first) = one.first_mut() {
            *first = 1;
        }
        self.mul(&acc, &one, &mut scratch, &mut next);
        let mut out: Vec<u8> = next.iter().rev().flat_map(|l| l.to_be_bytes()).collect();
        out.drain(..out.len().saturating_sub(self.len));
        Some(out)
    }

    /// `out = a * b * R^-1 mod n` for `a`, `b` below `n`.
    fn mul(&self, a: &[u32], b: &[u32], t: &mut [u32], out: &mut [u32]) {
        let s = self.n.len();
        t.fill(0);
        // The product, row by row: row i adds a * b[i] at limb i.
        for (i, &bi) in b.iter().enumerate() {
            let Some(row) = t.get_mut(i..) else { return };
            let (body, rest) = row.split_at_mut(s.min(row.len()));
            let carry = mul_add(body, a, bi);
            if let Some(next) = rest.first_mut() {
                *next = carry;
            }
        }
        self.reduce(t, out);
    }

    /// `out = a * a * R^-1 mod n`: each cross product once, doubled, plus
    /// the squares; most of an RSA verification is squarings.
    fn square(&self, a: &[u32], t: &mut [u32], out: &mut [u32]) {
        let s = self.n.len();
        t.fill(0);
        for (i, &ai) in a.iter().enumerate() {
            let (Some(row), Some(rest_of_a)) = (t.get_mut(2 * i + 1..), a.get(i + 1..)) else {
                continue;
            };
            let (body, rest) = row.split_at_mut(rest_of_a.len().min(row.len()));
            let carry = mul_add(body, rest_of_a, ai);
            if let Some(next) = rest.first_mut() {
                *next = carry;
            }
        }
        let mut high_bit = 0u32;
        for limb in t.iter_mut().take(2 * s) {
            let next = *limb >> 31;
            *limb = (*limb << 1) | high_bit;
            high_bit = next;
        }
        let mut carry = 0u64;
        for (pair, &ai) in t.chunks_mut(2).zip(a) {
            let square = u64::from(ai) * u64::from(ai);
            for (limb, half) in pair.iter_mut().zip([square & 0xffff_ffff, square >> 32]) {
                let v = u64::from(*limb) + half + carry;
                *limb = v as u32;
                carry = v >> 32;
            }
        }
        self.reduce(t, out);
    }

    /// `out = t * R^-1 mod n` for the double-width `t` below `n * R`.
    fn reduce(&self, t: &mut [u32], out: &mut [u32]) {
        let s = self.n.len();
        // Montgomery reduction: each step clears limb i by adding m * n.
        for i in 0..s {
            let Some(row) = t.get_mut(i..) else { return };
            let m = row.first().map_or(0, |t0| t0.wrapping_mul(self.n0));
            let (body, rest) = row.split_at_mut(s.min(row.len()));
            let mut carry = u64::from(mul_add(body, &self.n, m));
            for tj in rest {
                if carry == 0 {
                    break;
                }
                let v = u64::from(*tj) + carry;
                *tj = v as u32;
                carry = v >> 32;
            }
        }
        // t / R is below 2n: one subtraction at most.
        let high = t.get(s..2 * s).unwrap_or_default();
        let overflow = t.get(2 * s).is_some_and(|top| *top != 0);
        out.copy_from_slice(high);
        if overflow || !less_than(out, &self.n) {
            sub_in_place(out, &self.n);
        }
    }

    /// `x = 2x mod n` for `x` below `n`.
    fn double_mod(&self, x: &mut [u32]) {
        let mut carry = 0u32;
        for limb in x.iter_mut() {
            let next = *limb >> 31;
            *limb = (*limb << 1) | carry;
            carry = next;
        }
        if carry != 0 || !less_than(x, &self.n) {
            sub_in_place(x, &self.n);
        }
    }
}

/// `acc += a * b` over `acc`'s length; returns the carry out.
fn mul_add(acc: &mut [u32], a: &[u32], b: u32) -> u32 {
    let mut carry = 0u64;
    for (limb, &x) in acc.iter_mut().zip(a) {
        let v = u64::from(*limb) + u64::from(x) * u64::from(b) + carry;
        *limb = v as u32;
        carry = v >> 32;
    }
    carry as u32
}

/// Big-endian bytes as `count` little-endian limbs; more limbs than
/// `count` are kept (the caller compares lengths).
fn limbs_of(be: &[u8], count: usize) -> Vec<u32> {
    let mut limbs: Vec<u32> = be
        .rchunks(4)
        .map(|chunk| chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
        .collect();
    while limbs.len() > count && limbs.last() == Some(&0) {
        limbs.pop();
    }
    if limbs.len() < count {
        limbs.resize(count, 0);
    }
    limbs
}

/// `a < b` for little-endian numbers of the same length.
fn less_than(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// `a -= b` modulo `2^(32 * len)`.
fn sub_in_place(a: &mut [u32], b: &[u32]) {
    let mut borrow = 0u64;
    for (x, &y) in a.iter_mut().zip(b) {
        let v = u64::from(*x)
            .wrapping_sub(u64::from(y))
            .wrapping_sub(borrow);
        *x = v as u32;
        borrow = (v >> 63) & 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::rsa::BigUint;
    use ai_auth_testkit::rng::Rng;

    fn padded(x: &BigUint, len: usize) -> Vec<u8> {
        let mut out = x.to_bytes_be();
        while out.len() < len {
            out.insert(0, 0);
        }
        out
    }

    #[test]
    fn agrees_with_num_bigint_on_random_operands() {
        let mut rng = Rng(0x5eed_0003);
        let mut checked = 0;
        for len in [1, 2, 3, 4, 5, 8, 17, 64, 128, 255, 256, 384, 512] {
            for case in 0..6 {
                let mut n = rng.bytes(len);
                n[0] |= 0x80 >> (case % 8);
                n[len - 1] |= 1;
                if len == 1 && n[0] == 1 {
                    continue;
                }
                let modulus = Modulus::new(&n).unwrap();
                let big_n = BigUint::from_bytes_be(&n);
                for e in [
                    3u32,
                    17,
                    65537,
                    0xffff_ffff,
                    2,
                    1,
                    rng.next_u64() as u32 | 1,
                ] {
                    let base = BigUint::from_bytes_be(&rng.bytes(len)) % &big_n;
                    let base_bytes = padded(&base, len);
                    let want = padded(&base.modpow(&BigUint::from(e), &big_n), len);
                    assert_eq!(
                        modulus.pow(&base_bytes, e).unwrap(),
                        want,
                        "len {len} e {e}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 400);
    }

    #[test]
    fn edge_operands() {
        let n = BigUint::from_bytes_be(&[0xff; 256]) - 2u32; // odd
        let n_bytes = padded(&n, 256);
        let modulus = Modulus::new(&n_bytes).unwrap();
        let below = padded(&(n.clone() - 1u32), 256);
        let want = padded(
            &(n.clone() - 1u32).modpow(&BigUint::from(65537u32), &n),
            256,
        );
        assert_eq!(modulus.pow(&below, 65537).unwrap(), want);
        assert_eq!(modulus.pow(&[0; 256], 65537).unwrap(), vec![0; 256]);
        let mut one = vec![0; 256];
        one[255] = 1;
        assert_eq!(modulus.pow(&one, 65537).unwrap(), one);
        // Not below n, or longer than n: refused.
        assert_eq!(modulus.pow(&n_bytes, 3), None);
        assert_eq!(modulus.pow(&[0xff; 256], 3), None);
        assert_eq!(modulus.pow(&[1; 257], 3), None);
        // Leading zero bytes on the base are fine.
        let mut long = vec![0; 4];
        long.extend_from_slice(&one);
        assert_eq!(modulus.pow(&long, 3).unwrap(), one);
        // Even, zero and one are not moduli.
        assert!(Modulus::new(&[0x12, 0x34]).is_none());
        assert!(Modulus::new(&[0, 0]).is_none());
        assert!(Modulus::new(&[0, 1]).is_none());
        assert!(Modulus::new(&[]).is_none());
        let short = Modulus::new(&[0, 0, 0x80, 1]).unwrap();
        assert_eq!(short.pow(&[0, 2], 3).unwrap(), vec![0, 8]);
    }
}
