//! ES256 with tables prepared once per key. Verifying computes
//! `R = u1·G + u2·Q` and compares `x(R) mod n` with `r`. A JWKS key lives
//! for months, so when it is loaded we prepare affine tables of odd
//! multiples of `Q`, `2^32·Q`, .., `2^224·Q` (and, once per VM, the same for
//! `G`): each scalar splits into eight 32-bit parts, and one interleaved
//! (Straus) wNAF pass over sixteen bases needs 32 doublings.
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
        let h = p.x * z1z1 - self.x;
        let r = (p.y * self.z * z1z1 - self.y).double();
        if h.is_zero_vartime() {
            return if r.is_zero_vartime() {
                Jacobian::from_affine(p).double()
            } else {
                Jacobian::IDENTITY
            };
        }
        let hh = h.square();
        let i = hh.double().double();
        let j = h * i;
        let v = self.x * i;
        let x = r.square() - j - v.double();
        let y = r * (v - x) - (self.y * j).double();
        let z = (self.z + h).square() - z1z1 - hh;
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
        if signature.len() != 64 {
            return false;
        }
        let Ok(signature) = p256::ecdsa::Signature::from_slice(signature) else {
            return false;
        };
        let (r, s) = signature.split_scalars();
        let z = <Scalar as Reduce<FieldBytes>>::reduce(&Sha256::digest(message));
        // `s` is not zero, so it has an inverse.
        let Some(s_inv) = Option::<Scalar>::from(s.invert_vartime()) else {
            return false;
        };
        let Some(g) = generator() else {
            return false;
        };
        let sum = straus([(g, &(z * s_inv)), (&self.tables, &(*r * s_inv))]);
        sum.x_mod_n_is(&r)
    }
}

/// `Σ k·P` over the pairs, one wNAF per 32-bit part of each scalar.
fn straus(pairs: [(&Tables, &Scalar); 2]) -> Jacobian {
    let mut digits = [[0i8; DIGITS]; 2 * PARTS];
    let mut bases: [&[Affine; TABLE]; 2 * PARTS] = [&[Affine {
        x: Fe::ZERO,
        y: Fe::ZERO,
    }; TABLE]; 2 * PARTS];
    let mut slots = digits.iter_mut().zip(bases.iter_mut());
    for (tables, scalar) in pairs {
        for (part, table) in parts(scalar).into_iter().zip(tables.0.iter()) {
            if let Some((d, b)) = slots.next() {
                *d = wnaf(part);
                *b = table;
            }
        }
    }
    let mut sum = Jacobian::IDENTITY;
    for i in (0..DIGITS).rev() {
        if !sum.is_identity() {
            sum = sum.double();
        }
        for (d, table) in digits.iter().zip(bases.iter()) {
            let digit = d.get(i).copied().unwrap_or(0);
            let Some(p) = table.get(usize::from(digit.unsigned_abs() / 2)) else {
                continue;
            };
            if digit > 0 {
                sum = sum.add(p);
            } else if digit < 0 {
                sum = sum.add(&Affine { x: p.x, y: -p.y });
            }
        }
    }
    sum
}

/// The scalar cut into `PARTS` numbers of `PART_BITS` bits, least significant first.
fn parts(scalar: &Scalar) -> [u32; PARTS] {
    let be = scalar.to_repr();
    let mut chunks = be.rchunks(PART_BITS / 8);
    std::array::from_fn(|_| {
        chunks.next().map_or(0, |c| {
            c.iter()
                .fold(0u32, |acc, &byte| (acc << 8) | u32::from(byte))
        })
    })
}

/// The width-`W` NAF of `k`, least significant digit first: each digit is
/// zero or odd and below 2^(W-1) in magnitude, and `Σ d_i·2^i = k`.
fn wnaf(k: u32) -> [i8; DIGITS] {
    let mut out = [0i8; DIGITS];
    let mut k = u64::from(k);
    let window = 1i64 << W;
    for slot in &mut out {
        if k == 0 {
            break;
        }
        if k & 1 == 1 {
            // `k mod 2^W`, taken into (-2^(W-1), 2^(W-1)).
            let mut d = (k & (window as u64 - 1)) as i64;
            if d >= window / 2 {
                d -= window;
            }
            k = k.wrapping_sub(d as u64);
            *slot = d as i8;
        }
        k >>= 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut x = 0x9e37_79b9u32;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            samples.push(x);
        }
        for k in samples {
            let digits = wnaf(k);
            let value = digits
                .iter()
                .rev()
                .fold(0i64, |acc, &d| 2 * acc + i64::from(d));
            assert_eq!(value, i64::from(k), "{k:#x}");
            for (i, &d) in digits.iter().enumerate() {
                assert!(d == 0 || (d % 2 != 0 && d.unsigned_abs() < 1 << (W - 1)));
                // Non-adjacent: a digit is followed by at least W - 1 zeros.
                if d != 0 {
                    let next = digits.iter().skip(i + 1).take(W as usize - 1);
                    assert!(next.clone().all(|&e| e == 0), "{k:#x}");
                }
            }
        }
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
            for u1 in &scalars {
                for u2 in scalars.iter().chain([u1, &-*u1]) {
                    let ours = straus([(g, u1), (&tables, u2)]);
                    let theirs = ProjectivePoint::GENERATOR * u1 + q * u2;
                    assert_eq!(to_crate(&ours), theirs);
                }
            }
        }
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

    #[test]
    fn the_identity_has_no_tables() {
        assert!(Tables::new(ProjectivePoint::IDENTITY).is_none());
    }
}
