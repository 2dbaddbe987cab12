//! ES256 with tables prepared once per key. Verifying computes
//! `u1·G + u2·Q`; the `p256` crate builds wNAF tables for both points on
//! every call and runs 256 doublings. A JWKS key lives for months, so when
//! it is loaded we prepare tables for `Q` and its multiples by 2^32, 2^64,
//! .., 2^224 (and, once per VM, the same for `G`): each scalar splits into
//! eight 32-bit parts, and one interleaved (Straus) pass over sixteen bases
//! needs 32 doublings. About 12 KB per key (8 tables of 16 points). Field
//! and point arithmetic stay the crate's; the result is checked against the
//! crate's own verifier in the tests.

use p256::elliptic_curve::group::Group;
use p256::elliptic_curve::ops::Reduce;
use p256::elliptic_curve::point::AffineCoordinates;
use p256::{FieldBytes, ProjectivePoint, Scalar};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use wnaf::array::typenum::U6;

/// Odd multiples up to 31 per base: 16 points, about one addition per 7
/// bits. Not 7 or 8: `wnaf` 0.14.1 overflows its `i8` digit arithmetic
/// there (a panic with overflow checks, a wrap without).
type Window = U6;
type Base = wnaf::WnafBase<ProjectivePoint, Window>;
type Part = wnaf::WnafScalar<Scalar, Window>;

/// How many parts each 256-bit scalar is cut into, and their size.
const PARTS: usize = 8;
const PART_BYTES: usize = 32 / PARTS;

/// A point's tables for `P`, `2^32·P`, .., `2^224·P`.
pub struct Tables([Base; PARTS]);

impl Tables {
    fn new(point: ProjectivePoint) -> Tables {
        let mut current = point;
        Tables(std::array::from_fn(|_| {
            let table = Base::new(&current);
            for _ in 0..PART_BYTES * 8 {
                current = current.double();
            }
            table
        }))
    }
}

fn generator() -> &'static Tables {
    static GENERATOR: OnceLock<Tables> = OnceLock::new();
    GENERATOR.get_or_init(|| Tables::new(ProjectivePoint::GENERATOR))
}

/// A P-256 public key with its tables.
pub struct PreparedKey {
    tables: Tables,
}

impl PreparedKey {
    pub fn new(key: &p256::ecdsa::VerifyingKey) -> PreparedKey {
        PreparedKey {
            tables: Tables::new(ProjectivePoint::from(*key.as_affine())),
        }
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
        let u1 = parts(&(z * s_inv));
        let u2 = parts(&(*r * s_inv));
        let g = generator();
        let pairs =
            g.0.iter()
                .zip(u1.iter())
                .chain(self.tables.0.iter().zip(u2.iter()));
        let x = Base::multiscalar_mul(pairs).to_affine().x();
        *r == <Scalar as Reduce<FieldBytes>>::reduce(&x)
    }
}

/// The scalar's little-endian bytes cut into `PARTS` parts, least significant first.
fn parts(scalar: &Scalar) -> [Part; PARTS] {
    let mut le = scalar.to_bytes();
    le.reverse();
    let mut chunks = le.chunks(PART_BYTES);
    std::array::from_fn(|_| Part::from_le_bytes(chunks.next().unwrap_or(&[])))
}
