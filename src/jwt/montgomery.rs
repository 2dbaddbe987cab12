//! Modular exponentiation by a public exponent, for RSA verification.
//!
//! Montgomery arithmetic on 28-bit limbs held in `u64`s. A product of two
//! limbs is below 2^56, so a limb of the double-width product sums up to 256
//! of them without any carry handling (wasm has no 64x64 -> 128-bit
//! multiply, and 32-bit limbs need a carry per product); carries are
//! propagated once per block of rows. The product, the squaring (each
//! cross product once) and the Montgomery reduction all go four rows at a
//! time (`add_rows`): each limb of the result is loaded and stored once per
//! four products, so V8 keeps the loop to loads, multiplies and adds.
//! `R = 2^(28 * limbs)` with `4n < R` keeps every result below `2n` with no
//! subtraction between operations; only the exponentiation's result is
//! reduced, and its last multiplication (by the plain base) also leaves
//! Montgomery form. Against the previous separated operand scanning on
//! 32-bit limbs: 2048-bit exponentiation by 65537 in about half the time
//! (node --no-liftoff, opt-level "z" as the filter is built).
//!
//! Everything here is public (modulus, signature, exponent), so variable
//! time is fine. Checked against `num-bigint` (through the `rsa` crate) on
//! random operands up to 8192 bits, and by the Wycheproof and differential
//! suites of RS*/PS*.

/// Bits per limb.
const LIMB_BITS: u32 = 28;
const MASK: u64 = (1 << LIMB_BITS) - 1;
/// Rows of the product added (and reduced) at once.
const ROWS: usize = 4;
/// From this many limbs (3584 bits) a limb of the double-width product can
/// collect more products than a `u64` holds (two per row, 2 * 127 < 256):
/// carries are then propagated every 64 rows.
const BIG: usize = 128;

/// An odd modulus with its Montgomery constants, computed once per key.
#[derive(Clone)]
pub struct Modulus {
    /// Little-endian 28-bit limbs, as many as `4n < R` needs.
    n: Vec<u64>,
    /// `-n^-1 mod 2^28`.
    n0: u64,
    /// `R^2 mod n`: takes a number into Montgomery form.
    r2: Vec<u64>,
    /// Byte length of the modulus (big-endian, no leading zero bytes).
    len: usize,
}

impl Modulus {
    /// `n` big-endian; `None` unless it is odd and above 1.
    pub fn new(n: &[u8]) -> Option<Modulus> {
        let start = n.iter().position(|b| *b != 0)?;
        let n = n.get(start..)?;
        let bits = n.len() * 8 - n.first().map_or(0, |b| b.leading_zeros() as usize);
        // Two spare bits: 4n < R.
        let limbs = limbs_of(n, (bits + 2).div_ceil(LIMB_BITS as usize))?;
        let low = *limbs.first()?;
        if low & 1 == 0 || bits < 2 {
            return None;
        }
        // Newton's iteration doubles the correct low bits: 1, 2, 4, .., 32.
        let mut inv: u64 = 1;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(low.wrapping_mul(inv)));
        }
        let mut modulus = Modulus {
            n0: inv.wrapping_neg() & MASK,
            r2: Vec::new(),
            len: n.len(),
            n: limbs,
        };
        // 2^(2 * 28 * limbs) mod n by doubling from 1: once per key.
        let mut r2 = vec![0u64; modulus.n.len()];
        if let Some(first) = r2.first_mut() {
            *first = 1;
        }
        for _ in 0..2 * LIMB_BITS as usize * modulus.n.len() {
            modulus.double_mod(&mut r2);
        }
        modulus.r2 = r2;
        Some(modulus)
    }

    /// `base^e mod n` as big-endian bytes of the modulus' length; `None`
    /// when `base` (big-endian) is not below `n`, or `e` is 0.
    pub fn pow(&self, base: &[u8], e: u32) -> Option<Vec<u8>> {
        let s = self.n.len();
        let base = limbs_of(base, s)?;
        if !less_than(&base, &self.n) || e == 0 {
            return None;
        }
        // The double-width product, with room for the tails of the last
        // blocks of rows.
        let mut t = vec![0u64; 2 * s + 2 * ROWS];
        let mut base_m = vec![0u64; s];
        self.mul(&base, &self.r2, &mut t, &mut base_m);
        let mut acc = base_m.clone();
        let mut next = vec![0u64; s];
        let top = 31 - e.leading_zeros();
        for bit in (0..top).rev() {
            self.square(&acc, &mut t, &mut next);
            std::mem::swap(&mut acc, &mut next);
            if bit > 0 && (e >> bit) & 1 == 1 {
                self.mul(&acc, &base_m, &mut t, &mut next);
                std::mem::swap(&mut acc, &mut next);
            }
        }
        // The last multiplication also leaves Montgomery form: by the plain
        // base for the exponent's low bit (x R * base / R), else by 1.
        let mut one = vec![0u64; s];
        if let Some(first) = one.first_mut() {
            *first = 1;
        }
        let last = if e & 1 == 1 && top > 0 { &base } else { &one };
        self.mul(&acc, last, &mut t, &mut next);
        if !less_than(&next, &self.n) {
            sub_in_place(&mut next, &self.n);
        }
        Some(bytes_of(&next, self.len))
    }

    /// `out = a * b / R mod n`, below `2n`, for `a`, `b` below `2n`, all
    /// of the modulus' length; `t` is scratch (see `pow`).
    fn mul(&self, a: &[u64], b: &[u64], t: &mut [u64], out: &mut [u64]) {
        t.fill(0);
        let big = self.n.len() >= BIG;
        for (block, rows) in a.chunks(ROWS).enumerate() {
            if let Some(t) = t.get_mut(ROWS * block..) {
                add_rows(t, quad(rows), b);
            }
            if big && block % 16 == 15 {
                normalize(t);
            }
        }
        self.reduce(t, out);
    }

    /// `out = a * a / R mod n` as `mul`, each cross product `a[i] a[j]`
    /// once (doubled): most of an RSA verification is squarings.
    fn square(&self, a: &[u64], t: &mut [u64], out: &mut [u64]) {
        t.fill(0);
        let big = self.n.len() >= BIG;
        for (block, rows) in a.chunks(ROWS).enumerate() {
            let i = ROWS * block;
            let [a0, a1, a2, a3] = quad(rows);
            let twice = [2 * a0, 2 * a1, 2 * a2, 2 * a3];
            // The pairs inside the block, at limbs 2i + 1 ..= 2i + 5.
            if let Some([_, t1, t2, t3, t4, t5, ..]) = t.get_mut(2 * i..) {
                *t1 += twice[0] * a1;
                *t2 += twice[0] * a2;
                *t3 += twice[0] * a3 + twice[1] * a2;
                *t4 += twice[1] * a3;
                *t5 += twice[2] * a3;
            }
            // The block's rows against every limb above it.
            if let (Some(t), Some(rest)) = (t.get_mut(2 * i + ROWS..), a.get(i + ROWS..)) {
                add_rows(t, twice, rest);
            }
            // A doubled product counts as two: 16 blocks are 128 products.
            if big && block % 16 == 15 {
                normalize(t);
            }
        }
        for (pair, &x) in t.chunks_mut(2).zip(a) {
            if let Some(t) = pair.first_mut() {
                *t += x * x;
            }
        }
        self.reduce(t, out);
    }

    /// `out = t / R mod n` (below `2n`) for the double-width `t` below
    /// `4n^2`, four rows at a time: the block's four multipliers of `n` are
    /// worked out first on a copy of its four low limbs, then all four rows
    /// go in one `add_rows`.
    fn reduce(&self, t: &mut [u64], out: &mut [u64]) {
        let s = self.n.len();
        let big = s >= BIG;
        if big {
            normalize(t);
        }
        let n = &self.n;
        let [n0, n1, n2, n3] = quad(n);
        let m_of = |w: u64| ((w & MASK) * self.n0) & MASK;
        for i in (0..s).step_by(ROWS) {
            let Some(row) = t.get_mut(i..) else { return };
            // Rows past the modulus' length are not reduced: their m is 0.
            let live = (s - i).min(ROWS);
            let [mut w0, mut w1, mut w2, mut w3] = quad(row);
            let m0 = m_of(w0);
            w0 += m0 * n0;
            w1 += m0 * n1 + (w0 >> LIMB_BITS);
            w2 += m0 * n2;
            w3 += m0 * n3;
            let m1 = if live > 1 { m_of(w1) } else { 0 };
            w1 += m1 * n0;
            w2 += m1 * n1 + (w1 >> LIMB_BITS);
            w3 += m1 * n2;
            let m2 = if live > 2 { m_of(w2) } else { 0 };
            w2 += m2 * n0;
            w3 += m2 * n1 + (w2 >> LIMB_BITS);
            let m3 = if live > 3 { m_of(w3) } else { 0 };
            add_rows(row, [m0, m1, m2, m3], n);
            // The block's limbs are now multiples of 2^28: carry them on.
            let mut carry = 0u64;
            for limb in row.iter_mut().take(live) {
                carry = (*limb + carry) >> LIMB_BITS;
                *limb = 0;
            }
            if let Some(next) = row.get_mut(live) {
                *next += carry;
            }
            if big && i % 64 == 64 - ROWS {
                if let Some(rest) = t.get_mut(i + ROWS..) {
                    normalize(rest);
                }
            }
        }
        let mut carry = 0u64;
        for (limb, &v) in out.iter_mut().zip(t.get(s..).unwrap_or_default()) {
            let v = v + carry;
            *limb = v & MASK;
            carry = v >> LIMB_BITS;
        }
    }

    /// `x = 2x mod n` for `x` below `n`.
    fn double_mod(&self, x: &mut [u64]) {
        let mut carry = 0u64;
        for limb in x.iter_mut() {
            let v = (*limb << 1) | carry;
            *limb = v & MASK;
            carry = v >> LIMB_BITS;
        }
        if carry != 0 || !less_than(x, &self.n) {
            sub_in_place(x, &self.n);
        }
    }
}

/// Big-endian bytes as `count` little-endian 28-bit limbs; `None` when the
/// number needs more.
fn limbs_of(be: &[u8], count: usize) -> Option<Vec<u64>> {
    let mut limbs = Vec::with_capacity(count + 1);
    let (mut buf, mut bits) = (0u64, 0u32);
    for &byte in be.iter().rev() {
        buf |= u64::from(byte) << bits;
        bits += 8;
        if bits >= LIMB_BITS {
            limbs.push(buf & MASK);
            buf >>= LIMB_BITS;
            bits -= LIMB_BITS;
        }
    }
    limbs.push(buf);
    while limbs.len() > count && limbs.last() == Some(&0) {
        limbs.pop();
    }
    if limbs.len() > count {
        return None;
    }
    limbs.resize(count, 0);
    Some(limbs)
}

/// Little-endian 28-bit limbs as `len` big-endian bytes (the number fits).
fn bytes_of(limbs: &[u64], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut limbs = limbs.iter();
    let (mut buf, mut bits) = (0u64, 0u32);
    for byte in out.iter_mut().rev() {
        if bits < 8 {
            if let Some(limb) = limbs.next() {
                buf |= limb << bits;
                bits += LIMB_BITS;
            }
        }
        *byte = buf as u8;
        buf >>= 8;
        bits = bits.saturating_sub(8);
    }
    out
}

/// `a < b` for little-endian numbers of the same length.
fn less_than(a: &[u64], b: &[u64]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// `a -= b` modulo `2^(28 * len)`.
fn sub_in_place(a: &mut [u64], b: &[u64]) {
    let mut borrow = 0u64;
    for (x, &y) in a.iter_mut().zip(b) {
        let v = x.wrapping_sub(y).wrapping_sub(borrow);
        *x = v & MASK;
        borrow = v >> 63;
    }
}

/// Carries every limb's excess into the next: all but the top below 2^28.
fn normalize(t: &mut [u64]) {
    let mut carry = 0u64;
    for v in t.iter_mut() {
        let x = *v + carry;
        *v = x & MASK;
        carry = x >> LIMB_BITS;
    }
}

/// The first four limbs of `x`, zeros past its end.
#[inline(always)]
fn quad(x: &[u64]) -> [u64; 4] {
    let get = |k: usize| x.get(k).copied().unwrap_or(0);
    [get(0), get(1), get(2), get(3)]
}

/// `t[q + d] += m[d] * b[q]` for every `q` of `b` and `d` below 4: four
/// rows of a product at once, each limb of `t` loaded and stored once for
/// four products (the last three rows' earlier limbs of `b` ride along in
/// registers). `t` needs `b.len() + 3` limbs.
#[inline(always)]
fn add_rows(t: &mut [u64], m: [u64; 4], b: &[u64]) {
    let [m0, m1, m2, m3] = m;
    let (mut p1, mut p2, mut p3) = (0u64, 0u64, 0u64);
    let (body, tail) = t.split_at_mut(b.len().min(t.len()));
    for (tq, &bq) in body.iter_mut().zip(b) {
        *tq += m0 * bq + m1 * p1 + m2 * p2 + m3 * p3;
        p3 = p2;
        p2 = p1;
        p1 = bq;
    }
    if let [t0, t1, t2, ..] = tail {
        *t0 += m1 * p1 + m2 * p2 + m3 * p3;
        *t1 += m2 * p1 + m3 * p2;
        *t2 += m3 * p1;
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
        for len in [
            1, 2, 3, 4, 5, 8, 17, 64, 128, 255, 256, 384, 447, 448, 512, 1024,
        ] {
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
        assert!(checked > 600);
    }

    fn big_of(limbs: &[u64]) -> BigUint {
        limbs.iter().rev().fold(BigUint::from(0u32), |acc, l| {
            (acc << LIMB_BITS as usize) + BigUint::from(*l)
        })
    }

    fn limbs_for(x: &BigUint, count: usize) -> Vec<u64> {
        limbs_of(&x.to_bytes_be(), count).unwrap()
    }

    /// Results stay below 2n for operands below 2n (the lazy reduction's
    /// bound, operands from n to 2n included), with the most limbs at 2^28 - 1.
    #[test]
    fn montgomery_product_and_square_of_operands_below_2n() {
        let mut rng = Rng(0x5eed_0004);
        let mut checked = 0;
        for len in [1, 3, 4, 27, 28, 63, 256, 447, 448, 512, 1024] {
            for case in 0..4 {
                let mut n = rng.bytes(len);
                n[0] |= 0x80 >> (case * 3 % 8);
                n[len - 1] |= 1;
                if case == 3 {
                    n.iter_mut().for_each(|b| *b = 0xff);
                }
                if len == 1 && n[0] == 1 {
                    continue;
                }
                let modulus = Modulus::new(&n).unwrap();
                let s = modulus.n.len();
                let big_n = BigUint::from_bytes_be(&n);
                let r = BigUint::from(1u32) << (LIMB_BITS as usize * s);
                assert!(&big_n * 4u32 < r, "len {len}: 4n < R");
                let two_n = &big_n * 2u32;
                let mut t = vec![0u64; 2 * s + 2 * ROWS];
                let mut out = vec![0u64; s];
                let operands = [
                    &two_n - 1u32,
                    &two_n - 2u32,
                    big_n.clone(),
                    BigUint::from_bytes_be(&rng.bytes(len + 1)) % &two_n,
                    BigUint::from_bytes_be(&rng.bytes(len)) % &big_n,
                ];
                for a in &operands {
                    for b in &operands {
                        let (la, lb) = (limbs_for(a, s), limbs_for(b, s));
                        modulus.mul(&la, &lb, &mut t, &mut out);
                        let got = big_of(&out);
                        assert!(got < two_n, "len {len} case {case}: below 2n");
                        assert_eq!((&got * &r) % &big_n, (a * b) % &big_n, "len {len}");
                        checked += 1;
                    }
                    let la = limbs_for(a, s);
                    modulus.square(&la, &mut t, &mut out);
                    let got = big_of(&out);
                    assert!(got < two_n, "len {len} case {case}: square below 2n");
                    assert_eq!((&got * &r) % &big_n, (a * a) % &big_n, "len {len}");
                }
            }
        }
        assert!(checked > 1000);
    }

    #[test]
    fn moduli_of_all_ones_and_their_largest_bases() {
        for len in [4, 64, 255, 256, 512, 1024] {
            let n = BigUint::from_bytes_be(&vec![0xff; len]) - 2u32;
            let modulus = Modulus::new(&padded(&n, len)).unwrap();
            for base in [&n - 1u32, &n - 2u32, &n >> 1] {
                for e in [3u32, 65537, 0xffff_ffff] {
                    let want = padded(&base.modpow(&BigUint::from(e), &n), len);
                    assert_eq!(
                        modulus.pow(&padded(&base, len), e).unwrap(),
                        want,
                        "len {len} e {e}"
                    );
                }
            }
        }
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
