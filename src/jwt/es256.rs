//! ES256 with tables prepared once per key, or per call. Verifying computes
//! `R = u1·G + u2·Q` and compares `x(R) mod n` with `r`. A JWKS key lives
//! for months, so when it is loaded we prepare affine tables of odd
//! multiples of `Q`, `2^32·Q`, .., `2^224·Q` (and, once per VM, the same for
//! `G`): each scalar splits into eight 32-bit parts, and one interleaved
//! (Straus) wNAF pass over sixteen bases needs 32 doublings. A key used
//! once (a DPoP proof's) has no tables: its scalar goes whole through the
//! same pass over a small table built per call (256 doublings).
//!
//! The pass (issue 14) runs in Jacobian coordinates: mixed additions of
//! affine table points (7M + 4S) and a = -3 doublings (3M + 5S) instead of
//! `p256`'s complete projective formulas (12M and 8M + 3S, each with two
//! more multiplications by `b`), and no inversion at the end: `x(R) = X/Z²`,
//! so `r·Z² == X` (or `(r + n)·Z² == X` when `r + n < p`) is checked
//! instead. Its field arithmetic is our own (`es256_field.rs`: 32-bit words
//! and NIST's reduction, where `p256`'s 64-bit limbs cost a call per product
//! on wasm32). All of it is variable time, which is fine here: a
//! verification handles public data only. The formulas' exceptional cases
//! (adding a point to itself or to its negation, the identity) are handled
//! explicitly; the tests check the verdicts against the crate's own
//! verifier, Wycheproof included, and the points and field operations
//! against the crate's arithmetic. Scalars, hashing and the tables' set-up
//! stay the crate's.

use p256::elliptic_curve::ff::PrimeField;
use p256::elliptic_curve::group::Group;
use p256::elliptic_curve::ops::Reduce;
use p256::elliptic_curve::point::{AffineCoordinates, BatchNormalize};
use p256::{AffinePoint, FieldBytes, ProjectivePoint, Scalar};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

#[path = "es256_field.rs"]
mod field;
use field::Fe;

/// Window of the wNAF digits: odd digits up to ±(2^(W-1) - 1), so each
/// table holds the odd multiples 1·P, 3·P, .., (2^(W-1) - 1)·P.
const W: u32 = 6;
const TABLE: usize = 1 << (W - 2);

/// How many parts each 256-bit scalar is cut into, and their size.
const PARTS: usize = 8;
const PART_BITS: usize = 256 / PARTS;
/// A `PART_BITS`-bit number has at most one more wNAF digit than bits.
const DIGITS: usize = PART_BITS + 1;

/// `p - n` (big-endian): `r + n` is below `p` only when `r` is below this.
const P_MINUS_N: [u8; 32] = [
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x43, 0x19, 0x05, 0x53, 0x58, 0xe8, 0x61, 0x7b,
    0x0c, 0x46, 0x35, 0x3d, 0x03, 0x9c, 0xda, 0xae,
];

/// A point other than the identity, in affine coordinates.
#[derive(Clone, Copy)]
struct Affine {
    x: Fe,
    y: Fe,
}

/// A point in Jacobian coordinates, `(X/Z², Y/Z³)`; `Z = 0` is the identity.
#[derive(Clone, Copy)]
struct Jacobian {
    x: Fe,
    y: Fe,
    z: Fe,
}

impl Jacobian {
    const IDENTITY: Jacobian = Jacobian {
        x: Fe::ONE,
        y: Fe::ONE,
        z: Fe::ZERO,
    };

    fn from_affine(p: &Affine) -> Jacobian {
        Jacobian {
            x: p.x,
            y: p.y,
            z: Fe::ONE,
        }
    }

    fn is_identity(&self) -> bool {
        self.z.is_zero_vartime()
    }

    /// `2·self` (dbl-2001-b, a = -3). The identity stays the identity
    /// (`Z3 = (Y + 0)² - Y² - 0`); P-256 has no point of order two.
    fn double(&self) -> Jacobian {
        let delta = self.z.square();
        let gamma = self.y.square();
        let beta4 = (self.x * gamma).double().double();
        let t = (self.x - delta) * (self.x + delta);
        let alpha = t.double() + t;
        let x = alpha.square() - beta4.double();
        let z = (self.y + self.z).square() - gamma - delta;
        let y = alpha * (beta4 - x) - gamma.square().double().double().double();
        Jacobian { x, y, z }
    }

    /// `self + p` (madd-2007-bl), with the cases the formula does not cover:
    /// the identity, `p` itself (a doubling), `-p` (the identity).
    fn add(&self, p: &Affine) -> Jacobian {
        if self.is_identity() {
            return Jacobian::from_affine(p);
        }
        let z1z1 = self.z.square();
        let s2 = p.y * self.z * z1z1;
        self.add_core(self.x, self.y, p.x * z1z1, s2, z1z1, None)
    }

    /// `self + p` for a Jacobian `p` with `Z²` and `Z³` kept (add-2007-bl,
    /// 10M + 4S with them), the same cases covered.
    fn add_cached(&self, p: &Cached) -> Jacobian {
        if self.is_identity() {
            return p.point;
        }
        if p.point.is_identity() {
            return *self;
        }
        let z1z1 = self.z.square();
        let s2 = p.point.y * self.z * z1z1;
        let u2 = p.point.x * z1z1;
        self.add_core(self.x * p.zz, self.y * p.zzz, u2, s2, z1z1, Some(p))
    }

    /// The formulas' common part, from `U1 = X1·Z2²`, `S1 = Y1·Z2³`,
    /// `U2 = X2·Z1²`, `S2 = Y2·Z1³` (`Z2 = 1` when `p` is `None`).
    fn add_core(&self, u1: Fe, s1: Fe, u2: Fe, s2: Fe, z1z1: Fe, p: Option<&Cached>) -> Jacobian {
        let h = u2 - u1;
        let r = (s2 - s1).double();
        if h.is_zero_vartime() {
            // The same point (`self` doubled is `p` doubled) or its negation.
            return if r.is_zero_vartime() {
                self.double()
            } else {
                Jacobian::IDENTITY
            };
        }
        let hh = h.square();
        let i = hh.double().double();
        let j = h * i;
        let v = u1 * i;
        let x = r.square() - j - v.double();
        let y = r * (v - x) - (s1 * j).double();
        let z = match p {
            None => (self.z + h).square() - z1z1 - hh,
            Some(p) => ((self.z + p.point.z).square() - z1z1 - p.zz) * h,
        };
        Jacobian { x, y, z }
    }

    /// Whether `x(self) mod n == r`, without inverting `Z`: `x(self)` is a
    /// field element below `p < 2n`, so it is `r` or `r + n`.
    fn x_mod_n_is(&self, r: &Scalar) -> bool {
        if self.is_identity() {
            return false;
        }
        let r_bytes: [u8; 32] = r.to_repr().into();
        // `r < n < p`: a field element as it is.
        let Some(r_fe) = Fe::from_be_bytes(&r_bytes) else {
            return false;
        };
        let zz = self.z.square();
        if r_fe * zz == self.x {
            return true;
        }
        r_bytes < P_MINUS_N && (r_fe + order()) * zz == self.x
    }
}

/// The group order `n` as a field element (`n < p`).
fn order() -> Fe {
    let n = b"\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xbc\xe6\xfa\xad\xa7\x17\x9e\x84\xf3\xb9\xca\xc2\xfc\x63\x25\x51";
    Fe::from_be_bytes(n).unwrap_or(Fe::ZERO)
}

/// A point's tables: the odd multiples of `P`, `2^32·P`, .., `2^224·P`.
pub struct Tables([[Affine; TABLE]; PARTS]);

impl Tables {
    /// `None` for the identity (which no key is: `VerifyingKey` refuses it,
    /// and no multiple in the tables of another point is the identity, the
    /// group's order being a prime far above them).
    fn new(point: ProjectivePoint) -> Option<Tables> {
        let mut tables = [[Affine {
            x: Fe::ZERO,
            y: Fe::ZERO,
        }; TABLE]; PARTS];
        let mut base = point;
        for table in &mut tables {
            let twice = base.double();
            let mut multiple = base;
            let odd: [ProjectivePoint; TABLE] = std::array::from_fn(|_| {
                let current = multiple;
                multiple += twice;
                current
            });
            if odd.iter().any(|p| bool::from(p.is_identity())) {
                return None;
            }
            let affine: [AffinePoint; TABLE] = ProjectivePoint::batch_normalize(&odd);
            for (slot, p) in table.iter_mut().zip(affine.iter()) {
                *slot = affine_coordinates(p)?;
            }
            for _ in 0..PART_BITS {
                base = base.double();
            }
        }
        Some(Tables(tables))
    }
}

fn affine_coordinates(p: &AffinePoint) -> Option<Affine> {
    if bool::from(p.is_identity()) {
        return None;
    }
    Some(Affine {
        x: Fe::from_be_bytes(&p.x().into())?,
        y: Fe::from_be_bytes(&p.y().into())?,
    })
}

fn generator() -> Option<&'static Tables> {
    static GENERATOR: OnceLock<Option<Tables>> = OnceLock::new();
    GENERATOR
        .get_or_init(|| Tables::new(ProjectivePoint::GENERATOR))
        .as_ref()
}

/// A P-256 public key with its tables.
pub struct PreparedKey {
    tables: Tables,
}

impl PreparedKey {
    pub fn new(key: &p256::ecdsa::VerifyingKey) -> Option<PreparedKey> {
        Some(PreparedKey {
            tables: Tables::new(ProjectivePoint::from(*key.as_affine()))?,
        })
    }

    /// ES256 per RFC 7518 3.4 (SHA-256, `R || S`), as `ecdsa`'s
    /// `verify_prehashed` does it for P-256 (high `S` accepted).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Some((r, u1, u2)) = scalars(message, signature) else {
            return false;
        };
        let Some(g) = generator() else {
            return false;
        };
        prepared_sum(g, &u1, &self.tables, &u2).x_mod_n_is(&r)
    }
}

/// `u1·G + u2·Q` with tables for both.
fn prepared_sum(g: &Tables, u1: &Scalar, q: &Tables, u2: &Scalar) -> Jacobian {
    let mut bases = part_digits(g, u1).into_iter().chain(part_digits(q, u2));
    let bases: [_; 2 * PARTS] = std::array::from_fn(|_| bases.next().unwrap_or(NO_DIGITS));
    straus(&bases, None)
}

/// ES256 with a key used once (a DPoP proof's): no tables of its own for
/// the key, whose 32-bit parts would cost 224 doublings to reach. The key's
/// scalar is recoded whole (width `W_ONE_OFF`) over a small table of odd
/// multiples built per call in Jacobian coordinates, added with `Z²` and
/// `Z³` kept (10M + 4S): an inversion to make it affine would cost more
/// than the mixed additions save (about 255S against 43 times 3M). The
/// generator's tables and the rest of the pass are the prepared keys'.
pub fn verify_one_off(key: &p256::ecdsa::VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    let Some((r, u1, u2)) = scalars(message, signature) else {
        return false;
    };
    let (Some(g), Some(q)) = (generator(), affine_coordinates(key.as_affine())) else {
        return false;
    };
    one_off_sum(g, &u1, &q, &u2).x_mod_n_is(&r)
}

/// `u1·G + u2·Q`, tables for `G` only.
fn one_off_sum(g: &Tables, u1: &Scalar, q: &Affine, u2: &Scalar) -> Jacobian {
    let q = Jacobian::from_affine(q);
    let twice = Cached::new(q.double());
    let mut multiple = Cached::new(q);
    let table: [Cached; ONE_OFF_TABLE] = std::array::from_fn(|i| {
        let current = multiple;
        if i + 1 < ONE_OFF_TABLE {
            multiple = Cached::new(current.point.add_cached(&twice));
        }
        current
    });
    let mut digits = [0i8; ONE_OFF_DIGITS];
    wnaf(&words(u2), W_ONE_OFF, &mut digits);
    straus(&part_digits(g, u1), Some((&digits, &table)))
}

/// Window of the one-off key's wNAF. Counted, table and additions: width 4
/// about 550M + 227S, 5 about 509M + 213S, 6 about 536M + 228S (in node the
/// three, and an affine table, were within the noise of one another).
const W_ONE_OFF: u32 = 5;
const ONE_OFF_TABLE: usize = 1 << (W_ONE_OFF - 2);
const ONE_OFF_DIGITS: usize = 256 + 1;

/// A point in Jacobian coordinates with its `Z²` and `Z³`, for additions.
#[derive(Clone, Copy)]
struct Cached {
    point: Jacobian,
    zz: Fe,
    zzz: Fe,
}

impl Cached {
    fn new(point: Jacobian) -> Cached {
        let zz = point.z.square();
        Cached {
            point,
            zz,
            zzz: zz * point.z,
        }
    }
}

/// A table entry that a digit adds, negated for a negative digit.
trait Addend: Copy {
    fn added_to(&self, sum: &Jacobian) -> Jacobian;
    fn negated(&self) -> Self;
}

impl Addend for Affine {
    fn added_to(&self, sum: &Jacobian) -> Jacobian {
        sum.add(self)
    }
    fn negated(&self) -> Self {
        Affine {
            x: self.x,
            y: -self.y,
        }
    }
}

impl Addend for Cached {
    fn added_to(&self, sum: &Jacobian) -> Jacobian {
        sum.add_cached(self)
    }
    fn negated(&self) -> Self {
        let mut p = *self;
        p.point.y = -p.point.y;
        p
    }
}

/// `sum += digit·P`, the table holding the odd multiples of `P`. In place,
/// and nothing done for the (frequent) zero digits: copying the sum back
/// each time was 8% of a prepared key's verification.
fn add_digit<T: Addend>(sum: &mut Jacobian, table: &[T], digit: i8) {
    if digit == 0 {
        return;
    }
    let Some(p) = table.get(usize::from(digit.unsigned_abs() / 2)) else {
        return;
    };
    *sum = if digit > 0 {
        p.added_to(sum)
    } else {
        p.negated().added_to(sum)
    };
}

/// `r`, `u1 = z/s` and `u2 = r/s` of the signature over `message`.
fn scalars(message: &[u8], signature: &[u8]) -> Option<(Scalar, Scalar, Scalar)> {
    if signature.len() != 64 {
        return None;
    }
    let signature = p256::ecdsa::Signature::from_slice(signature).ok()?;
    let (r, s) = signature.split_scalars();
    let z = <Scalar as Reduce<FieldBytes>>::reduce(&Sha256::digest(message));
    // `s` is not zero, so it has an inverse.
    let s_inv = Option::<Scalar>::from(s.invert_vartime())?;
    Some((*r, z * s_inv, *r * s_inv))
}

/// One 32-bit part's wNAF digits and the table they select from.
type PartDigits<'a> = ([i8; DIGITS], &'a [Affine; TABLE]);

const NO_DIGITS: PartDigits<'static> = (
    [0; DIGITS],
    &[Affine {
        x: Fe::ZERO,
        y: Fe::ZERO,
    }; TABLE],
);

/// The scalar's 32-bit parts recoded, each with its table.
fn part_digits<'a>(tables: &'a Tables, scalar: &Scalar) -> [PartDigits<'a>; PARTS] {
    let mut parts = parts(scalar).into_iter().zip(tables.0.iter());
    std::array::from_fn(|_| {
        parts.next().map_or(NO_DIGITS, |(part, table)| {
            let mut digits = [0i8; DIGITS];
            wnaf(&[u64::from(part)], W, &mut digits);
            (digits, table)
        })
    })
}

/// `Σ k·P` in one interleaved (Straus) pass: the parts over affine tables,
/// and a one-off key's whole scalar over its Jacobian table.
fn straus(
    parts: &[PartDigits<'_>],
    whole: Option<(&[i8; ONE_OFF_DIGITS], &[Cached; ONE_OFF_TABLE])>,
) -> Jacobian {
    let top = if whole.is_some() {
        ONE_OFF_DIGITS
    } else {
        DIGITS
    };
    let mut sum = Jacobian::IDENTITY;
    for i in (0..top).rev() {
        if !sum.is_identity() {
            sum = sum.double();
        }
        if let Some((digits, table)) = whole {
            add_digit(&mut sum, table, digits.get(i).copied().unwrap_or(0));
        }
        for (digits, table) in parts {
            if let Some(&digit) = digits.get(i) {
                add_digit(&mut sum, *table, digit);
            }
        }
    }
    sum
}

/// The scalar as little-endian 64-bit words.
fn words(scalar: &Scalar) -> [u64; 4] {
    let be = scalar.to_repr();
    let mut chunks = be.rchunks(8);
    std::array::from_fn(|_| {
        chunks.next().map_or(0, |c| {
            c.iter()
                .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte))
        })
    })
}

/// The scalar cut into `PARTS` numbers of `PART_BITS` bits, least significant first.
fn parts(scalar: &Scalar) -> [u32; PARTS] {
    let words = words(scalar);
    std::array::from_fn(|i| {
        let word = words.get(i / 2).copied().unwrap_or(0);
        (word >> (32 * (i % 2))) as u32
    })
}

/// The width-`w` NAF of the little-endian number `k`, least significant
/// digit first: each digit is zero or odd and below 2^(w-1) in magnitude,
/// and `Σ d_i·2^i = k`. `out` needs one digit more than `k` has bits.
fn wnaf(k: &[u64], w: u32, out: &mut [i8]) {
    let window = 1u64 << w;
    // Bits `pos..pos + w` of `k`.
    let bits = |pos: usize| {
        let word = |i: usize| k.get(i).copied().unwrap_or(0);
        let (i, shift) = (pos / 64, pos % 64);
        let mut b = word(i) >> shift;
        if shift + w as usize > 64 {
            b |= word(i + 1) << (64 - shift);
        }
        b & (window - 1)
    };
    // Whether the digits so far stand for one more than the bits read.
    let mut carry = 0u64;
    let mut pos = 0;
    while pos < out.len() {
        let value = bits(pos) + carry;
        if value & 1 == 0 {
            // Even: no digit here; a carry moves on (bit `pos` was 1).
            pos += 1;
            continue;
        }
        let digit = if value < window / 2 {
            carry = 0;
            value as i64
        } else {
            carry = 1;
            value as i64 - window as i64
        };
        if let Some(slot) = out.get_mut(pos) {
            *slot = digit as i8;
        }
        pos += w as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Σ d_i·2^i` as little-endian 64-bit words (five: room for a carry).
    fn value(digits: &[i8]) -> [u64; 5] {
        let mut limbs = [0i128; 5];
        for (i, &d) in digits.iter().enumerate() {
            limbs[i / 64] += i128::from(d) << (i % 64);
        }
        let mut out = [0u64; 5];
        let mut carry = 0i128;
        for (o, l) in out.iter_mut().zip(limbs) {
            let t = l + carry;
            *o = t as u64;
            carry = t >> 64;
        }
        assert_eq!(carry, 0);
        out
    }

    /// The digits' value, bounds and spacing.
    fn check_wnaf(k: &[u64], w: u32, digits: &[i8]) {
        let mut expected = [0u64; 5];
        expected[..k.len()].copy_from_slice(k);
        assert_eq!(value(digits), expected, "{k:x?}");
        for (i, &d) in digits.iter().enumerate() {
            assert!(d == 0 || (d % 2 != 0 && d.unsigned_abs() < 1 << (w - 1)));
            // Non-adjacent: a digit is followed by at least w - 1 zeros.
            if d != 0 {
                let next = digits.iter().skip(i + 1).take(w as usize - 1);
                assert!(next.clone().all(|&e| e == 0), "{k:x?}");
            }
        }
    }

    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    #[test]
    fn wnaf_recodes_every_part() {
        let mut samples = vec![
            0u32,
            1,
            2,
            31,
            32,
            33,
            63,
            64,
            u32::MAX,
            u32::MAX - 1,
            1 << 31,
        ];
        let mut x = 0x9e37_79b9u64;
        for _ in 0..100_000 {
            samples.push(xorshift(&mut x) as u32);
        }
        for k in samples {
            let mut digits = [0i8; DIGITS];
            wnaf(&[u64::from(k)], W, &mut digits);
            check_wnaf(&[u64::from(k)], W, &digits);
        }
    }

    /// The one-off key's whole scalar: any 256-bit number, at every width
    /// tried, words at their extremes included.
    #[test]
    fn wnaf_recodes_whole_scalars() {
        let mut samples = vec![
            [0u64; 4],
            [1, 0, 0, 0],
            [u64::MAX; 4],
            [0, 0, 0, 1 << 63],
            [u64::MAX, 0, u64::MAX, 0],
            words(&-Scalar::ONE),
        ];
        let mut x = 0x0ff0_e256u64;
        for _ in 0..20_000 {
            samples.push(std::array::from_fn(|_| match xorshift(&mut x) % 5 {
                0 => 0,
                1 => u64::MAX,
                _ => xorshift(&mut x),
            }));
        }
        for k in samples {
            for w in 2..=7 {
                let mut digits = [0i8; ONE_OFF_DIGITS];
                wnaf(&k, w, &mut digits);
                check_wnaf(&k, w, &digits);
            }
        }
    }

    #[test]
    fn words_and_parts_of_a_scalar() {
        let s = Scalar::from(0x1234_5678_9abc_def0u64) + Scalar::from(7u64);
        assert_eq!(words(&s), [0x1234_5678_9abc_def7, 0, 0, 0]);
        assert_eq!(parts(&s), [0x9abc_def7, 0x1234_5678, 0, 0, 0, 0, 0, 0]);
        let top = parts(&-Scalar::ONE);
        assert_eq!(top[7], 0xffff_ffff);
        assert_eq!(top[0], 0xfc63_2550);
    }

    #[test]
    fn p_minus_n_is_p_minus_n() {
        let p_minus_n = Fe::from_be_bytes(&P_MINUS_N).unwrap();
        assert_eq!(p_minus_n + order(), Fe::ZERO);
        assert_ne!(order(), Fe::ZERO);
    }

    /// Our Jacobian result as the crate's point.
    fn to_crate(p: &Jacobian) -> ProjectivePoint {
        if p.is_identity() {
            return ProjectivePoint::IDENTITY;
        }
        use p256::elliptic_curve::hazmat::FieldArithmetic;
        type Theirs = <p256::NistP256 as FieldArithmetic>::FieldElement;
        let theirs = |a: Fe| Theirs::from_repr(FieldBytes::from(a.to_be_bytes())).unwrap();
        let zinv = theirs(p.z).invert().unwrap();
        let x = theirs(p.x) * zinv.square();
        let y = theirs(p.y) * zinv.square() * zinv;
        let a = AffinePoint::from_coordinates(&x.to_repr(), &y.to_repr()).unwrap();
        ProjectivePoint::from(a)
    }

    fn scalar(rng: &mut u64) -> Scalar {
        let mut bytes = FieldBytes::default();
        for b in bytes.iter_mut() {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            *b = *rng as u8;
        }
        <Scalar as Reduce<FieldBytes>>::reduce(&bytes)
    }

    /// `u1·G + u2·Q` against the crate's arithmetic, edge scalars included,
    /// with `Q = G` and `Q = -G` so that additions meet their own point and
    /// its negation.
    #[test]
    fn straus_matches_the_crate() {
        let mut rng = 0x5eed_e256u64;
        let g = generator().unwrap();
        let minus_one = -Scalar::ONE;
        let mut scalars = vec![
            Scalar::ZERO,
            Scalar::ONE,
            minus_one,
            Scalar::from(2u64),
            -Scalar::from(2u64),
        ];
        scalars.push(Scalar::from(u64::from(u32::MAX)));
        for _ in 0..12 {
            scalars.push(scalar(&mut rng));
        }
        let mut keys = vec![ProjectivePoint::GENERATOR, -ProjectivePoint::GENERATOR];
        for _ in 0..3 {
            keys.push(ProjectivePoint::GENERATOR * scalar(&mut rng));
        }
        for q in keys {
            let tables = Tables::new(q).unwrap();
            let affine = affine_coordinates(&q.to_affine()).unwrap();
            for u1 in &scalars {
                for u2 in scalars.iter().chain([u1, &-*u1]) {
                    let theirs = ProjectivePoint::GENERATOR * u1 + q * u2;
                    let prepared = prepared_sum(g, u1, &tables, u2);
                    assert_eq!(to_crate(&prepared), theirs);
                    let one_off = one_off_sum(g, u1, &affine, u2);
                    assert_eq!(to_crate(&one_off), theirs);
                }
            }
        }
    }

    /// The Jacobian addition's cases one by one, with `Z != 1` on both sides.
    #[test]
    fn cached_additions_of_a_point_its_double_and_its_negation() {
        let g = Jacobian::from_affine(&generator().unwrap().0[0][0]);
        let two_g = g.double();
        let three_g = two_g.add_cached(&Cached::new(g));
        let g_again = three_g.add_cached(&Cached::new(two_g).negated());
        let (gp, g2) = (
            ProjectivePoint::GENERATOR,
            ProjectivePoint::GENERATOR.double(),
        );
        assert_eq!(to_crate(&three_g), g2 + gp);
        assert_eq!(to_crate(&g_again), gp);
        // `g_again` is `G` with `Z != 1`: a point met again, and its negation.
        let cached = Cached::new(g_again);
        assert_eq!(to_crate(&g.add_cached(&cached)), g2);
        assert_eq!(
            to_crate(&three_g.add_cached(&Cached::new(three_g))),
            (g2 + gp).double()
        );
        assert!(g.add_cached(&cached.negated()).is_identity());
        assert!(three_g
            .add_cached(&Cached::new(three_g).negated())
            .is_identity());
        assert_eq!(to_crate(&Jacobian::IDENTITY.add_cached(&cached)), gp);
        let none = Cached::new(Jacobian::IDENTITY);
        assert_eq!(to_crate(&three_g.add_cached(&none)), g2 + gp);
        assert!(Jacobian::IDENTITY.add_cached(&none).is_identity());
    }

    /// The cases the addition formula does not cover, one by one.
    #[test]
    fn additions_of_a_point_its_double_and_its_negation() {
        let g = generator().unwrap().0[0][0];
        let minus_g = Affine { x: g.x, y: -g.y };
        let g2 = ProjectivePoint::GENERATOR.double();
        assert_eq!(
            to_crate(&Jacobian::IDENTITY.add(&g)),
            ProjectivePoint::GENERATOR
        );
        assert_eq!(to_crate(&Jacobian::from_affine(&g).add(&g)), g2);
        assert!(Jacobian::from_affine(&g).add(&minus_g).is_identity());
        // The same with `Z != 1`.
        let two_g = Jacobian::from_affine(&g).double();
        assert_eq!(to_crate(&two_g), g2);
        let three_g = two_g.add(&g);
        assert_eq!(to_crate(&three_g), g2 + ProjectivePoint::GENERATOR);
        let g_again = three_g.add(&minus_g).add(&minus_g);
        assert_eq!(to_crate(&g_again), ProjectivePoint::GENERATOR);
        assert_eq!(to_crate(&g_again.add(&g)), g2);
        assert!(g_again.add(&minus_g).is_identity());
        assert!(Jacobian::IDENTITY.double().is_identity());
        assert!(!Jacobian::IDENTITY.x_mod_n_is(&Scalar::ONE));
    }

    /// `(r, s)` over `message` with the nonce `k`, as ECDSA signs (none of
    /// the crate's signers takes a chosen nonce).
    fn sign_with_nonce(d: &Scalar, k: &Scalar, message: &[u8]) -> Option<[u8; 64]> {
        let z = <Scalar as Reduce<FieldBytes>>::reduce(&Sha256::digest(message));
        let x = (ProjectivePoint::GENERATOR * k).to_affine().x();
        let r = <Scalar as Reduce<FieldBytes>>::reduce(&x);
        let s = Option::<Scalar>::from(k.invert())? * (z + r * d);
        let sig = p256::ecdsa::Signature::from_scalars(r, s).ok()?;
        Some(sig.to_bytes().into())
    }

    /// Verdicts of the one-off path against the crate's verifier (and the
    /// prepared path): keys `1`, `-1`, `2` and random ones, nonces at the
    /// edges (so `R` is `±G`, `±2G`, `±Q`), both `S`, and the same
    /// signatures with a bit flipped in `r`, `s` or the message; then
    /// `r` and `s` at the edges of their range, valid or not.
    #[test]
    fn one_off_verdicts_match_the_crate() {
        use p256::ecdsa::signature::Verifier;
        let mut rng = 0x0d09_e256u64;
        let one = Scalar::ONE;
        let edges = [one, -one, one.double(), -one.double(), Scalar::from(3u64)];
        let mut keys = edges.to_vec();
        for _ in 0..6 {
            keys.push(scalar(&mut rng));
        }
        let (mut valid, mut compared) = (0, 0);
        for d in &keys {
            let point = (ProjectivePoint::GENERATOR * d).to_affine();
            let key = p256::ecdsa::VerifyingKey::from_affine(point).unwrap();
            let prepared = PreparedKey::new(&key).unwrap();
            let mut check = |message: &[u8], sig: &[u8]| {
                let theirs = p256::ecdsa::Signature::from_slice(sig)
                    .is_ok_and(|s| key.verify(message, &s).is_ok());
                let ours = verify_one_off(&key, message, sig);
                assert_eq!(ours, theirs, "d {d:?} sig {sig:02x?}");
                assert_eq!(prepared.verify(message, sig), theirs);
                compared += 1;
                valid += usize::from(ours);
            };
            let mut nonces = edges.to_vec();
            nonces.extend([*d, -*d, scalar(&mut rng), scalar(&mut rng)]);
            for k in nonces {
                let message = format!("m{:x}", rng).into_bytes();
                let Some(sig) = sign_with_nonce(d, &k, &message) else {
                    continue;
                };
                check(&message, &sig);
                // The other `S`.
                let parsed = p256::ecdsa::Signature::from_slice(&sig).unwrap();
                let (r, s) = parsed.split_scalars();
                let flipped = p256::ecdsa::Signature::from_scalars(r, -s).unwrap();
                check(&message, &flipped.to_bytes());
                for bit in [0, 7, 100, 255, 256, 300, 511] {
                    let mut bad = sig;
                    bad[bit / 8] ^= 1 << (bit % 8);
                    check(&message, &bad);
                }
                let mut other = message.clone();
                other[0] ^= 1;
                check(&other, &sig);
            }
            // `r` and `s` at their edges: zero, one, n - 1, n, p - n, 2^256 - 1.
            let n_minus_one: [u8; 32] = (-one).to_repr().into();
            let mut n = n_minus_one;
            n[31] += 1;
            let mut edge_values = vec![[0u8; 32], one.to_repr().into(), n_minus_one, n, P_MINUS_N];
            edge_values.push([0xff; 32]);
            for r in &edge_values {
                for s in &edge_values {
                    let mut sig = [0u8; 64];
                    sig[..32].copy_from_slice(r);
                    sig[32..].copy_from_slice(s);
                    check(b"edge", &sig);
                }
            }
            check(b"short", &[1u8; 63]);
        }
        assert!(valid > 0 && valid < compared);
    }

    #[test]
    fn the_identity_has_no_tables() {
        assert!(Tables::new(ProjectivePoint::IDENTITY).is_none());
    }
}
