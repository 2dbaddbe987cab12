//! P-256's base field for the verification pass of `es256`, shaped for
//! wasm32 (issue 14): `p256` keeps 64-bit limbs there, and each of its
//! 64×64-bit products is a call to the 128-bit multiplication routine
//! (`__multi3`), about half the time of a verification. Here: eight 32-bit
//! words, each product a native 64-bit multiplication, and the reduction by
//! p = 2^256 - 2^224 + 2^192 + 2^96 - 1 done with additions of words (NIST's
//! fast reduction, FIPS 186-4 D.2.3) instead of Montgomery steps.
//!
//! Variable time, for public data only (a signature verification). Values
//! are kept fully reduced (below p), so equality is equality of words. The
//! tests compare every operation with `p256`'s field.

use std::ops::{Add, Mul, Neg, Sub};

// The filter is built at opt-level "z", which neither unrolls loops nor
// inlines iterator adapters: the word loops below are written out through
// `words!`, with constant indices.

/// `$body` once per word index, `$i` a constant from 0 to 7.
macro_rules! words {
    ($i:ident => $body:block) => {{
        words!(@ $i $body 0 1 2 3 4 5 6 7);
    }};
    (@ $i:ident $body:block $($n:literal)*) => {
        $({
            const $i: usize = $n;
            $body
        })*
    };
}

/// An element of GF(p), little-endian 32-bit words, always below p.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Fe([u32; 8]);

const P: [u32; 8] = [
    0xffff_ffff,
    0xffff_ffff,
    0xffff_ffff,
    0,
    0,
    0,
    1,
    0xffff_ffff,
];

impl Fe {
    pub const ZERO: Fe = Fe([0; 8]);
    pub const ONE: Fe = Fe([1, 0, 0, 0, 0, 0, 0, 0]);

    /// From 32 big-endian bytes; `None` unless below p.
    pub fn from_be_bytes(bytes: &[u8; 32]) -> Option<Fe> {
        let mut words = [0u32; 8];
        for (word, chunk) in words.iter_mut().zip(bytes.rchunks_exact(4)) {
            *word = chunk
                .iter()
                .fold(0u32, |acc, &byte| (acc << 8) | u32::from(byte));
        }
        let (_, borrow) = minus_p(&words);
        borrow.then_some(Fe(words))
    }

    #[cfg(test)]
    pub fn to_be_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, word) in out.rchunks_exact_mut(4).zip(self.0) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    #[inline(always)]
    pub fn is_zero_vartime(&self) -> bool {
        self.0 == [0; 8]
    }

    #[inline(always)]
    pub fn double(&self) -> Fe {
        *self + *self
    }

    /// `self²`: each cross product once, doubled, then the squares of the
    /// words: 36 products instead of 64.
    // `J > I` compares the unrolled loop's constants (`J = 0` among them).
    #[allow(clippy::absurd_extreme_comparisons)]
    pub fn square(&self) -> Fe {
        let a = self.0;
        let mut c = [0u32; 16];
        words!(I => {
            let ai = u64::from(a[I]);
            let mut carry = 0u64;
            words!(J => {
                if J > I {
                    let t = ai * u64::from(a[J]) + u64::from(c[I + J]) + carry;
                    c[I + J] = t as u32;
                    carry = t >> 32;
                }
            });
            c[I + 8] = carry as u32;
        });
        // 2·c + the squares; the carry stays below 3.
        let mut carry = 0u64;
        words!(I => {
            let square = u64::from(a[I]) * u64::from(a[I]);
            let t = 2 * u64::from(c[2 * I]) + (square & 0xffff_ffff) + carry;
            c[2 * I] = t as u32;
            carry = t >> 32;
            let t = 2 * u64::from(c[2 * I + 1]) + (square >> 32) + carry;
            c[2 * I + 1] = t as u32;
            carry = t >> 32;
        });
        // Nothing is left: a² < 2^512.
        let _ = carry;
        reduce(&c)
    }
}

/// `words - p` modulo 2^256, and whether it borrowed (`words < p`).
#[inline(always)]
fn minus_p(words: &[u32; 8]) -> ([u32; 8], bool) {
    let mut out = [0u32; 8];
    let mut borrow = 0i64;
    words!(I => {
        let t = i64::from(words[I]) - i64::from(P[I]) + borrow;
        out[I] = t as u32;
        borrow = t >> 32;
    });
    (out, borrow != 0)
}

impl Add for Fe {
    type Output = Fe;
    fn add(self, rhs: Fe) -> Fe {
        let mut out = [0u32; 8];
        let mut carry = 0u64;
        words!(I => {
            let t = u64::from(self.0[I]) + u64::from(rhs.0[I]) + carry;
            out[I] = t as u32;
            carry = t >> 32;
        });
        // Below 2p: one subtraction of p at most.
        let (reduced, borrow) = minus_p(&out);
        Fe(if carry != 0 || !borrow { reduced } else { out })
    }
}

impl Sub for Fe {
    type Output = Fe;
    fn sub(self, rhs: Fe) -> Fe {
        let mut out = [0u32; 8];
        let mut borrow = 0i64;
        words!(I => {
            let t = i64::from(self.0[I]) - i64::from(rhs.0[I]) + borrow;
            out[I] = t as u32;
            borrow = t >> 32;
        });
        if borrow != 0 {
            // Below zero: add p back (the carry out cancels the borrow).
            let mut carry = 0u64;
            words!(I => {
                let t = u64::from(out[I]) + u64::from(P[I]) + carry;
                out[I] = t as u32;
                carry = t >> 32;
            });
            let _ = carry;
        }
        Fe(out)
    }
}

impl Neg for Fe {
    type Output = Fe;
    fn neg(self) -> Fe {
        Fe::ZERO - self
    }
}

impl Mul for Fe {
    type Output = Fe;
    fn mul(self, rhs: Fe) -> Fe {
        // Schoolbook, a row per word of `self`: a·b + word + carry < 2^64.
        let mut c = [0u32; 16];
        words!(I => {
            let a = u64::from(self.0[I]);
            let mut carry = 0u64;
            words!(J => {
                let t = a * u64::from(rhs.0[J]) + u64::from(c[I + J]) + carry;
                c[I + J] = t as u32;
                carry = t >> 32;
            });
            c[I + 8] = carry as u32;
        });
        reduce(&c)
    }
}

/// The 512-bit `c` modulo p: with `c_i` its words, FIPS 186-4 D.2.3's
/// `s1 + 2·s2 + 2·s3 + s4 + s5 - s6 - s7 - s8 - s9`, summed word by word.
#[inline(always)]
fn reduce(c: &[u32; 16]) -> Fe {
    let [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15] = *c;
    // Not `map`: opt-level "z" leaves it a call with a loop.
    macro_rules! wide {
        ($($c:ident),*) => { $(let $c = i64::from($c);)* };
    }
    wide!(c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15);
    let mut sums: [i64; 8] = [
        c0 + c8 + c9 - c11 - c12 - c13 - c14,
        c1 + c9 + c10 - c12 - c13 - c14 - c15,
        c2 + c10 + c11 - c13 - c14 - c15,
        c3 + 2 * c11 + 2 * c12 + c13 - c15 - c8 - c9,
        c4 + 2 * c12 + 2 * c13 + c14 - c9 - c10,
        c5 + 2 * c13 + 2 * c14 + c15 - c10 - c11,
        c6 + 3 * c14 + 2 * c15 + c13 - c8 - c9,
        c7 + 3 * c15 + c8 - c10 - c11 - c12 - c13,
    ];
    let mut words = [0u32; 8];
    loop {
        let mut acc = 0i64;
        words!(I => {
            acc += sums[I];
            words[I] = acc as u32;
            acc >>= 32;
        });
        if acc == 0 {
            break;
        }
        // `acc·2^256` is left: 2^256 ≡ 2^224 - 2^192 - 2^96 + 1 (mod p).
        // `acc` is a few units, and each round leaves at most one.
        words!(I => {
            sums[I] = i64::from(words[I]);
        });
        sums[0] += acc;
        sums[3] -= acc;
        sums[6] -= acc;
        sums[7] += acc;
    }
    let (reduced, borrow) = minus_p(&words);
    Fe(if borrow { words } else { reduced })
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::ff::PrimeField;
    use p256::elliptic_curve::hazmat::FieldArithmetic;
    use p256::FieldBytes;

    type Theirs = <p256::NistP256 as FieldArithmetic>::FieldElement;

    fn theirs(a: Fe) -> Theirs {
        Theirs::from_repr(FieldBytes::from(a.to_be_bytes())).unwrap()
    }

    fn ours(a: Theirs) -> Fe {
        Fe::from_be_bytes(&a.to_repr().into()).unwrap()
    }

    /// Edge values: 0, 1, 2, p - 1, p - 2, all words at their extremes
    /// below p, powers of two, and p's own neighbours word by word.
    fn edges() -> Vec<Fe> {
        let mut out = vec![
            Fe::ZERO,
            Fe::ONE,
            Fe::ONE.double(),
            -Fe::ONE,
            -Fe::ONE.double(),
        ];
        let mut p_minus_one = P;
        p_minus_one[0] -= 1;
        out.push(Fe(p_minus_one));
        for bit in [31, 32, 95, 96, 191, 192, 223, 224, 254, 255] {
            let mut words = [0u32; 8];
            words[bit / 32] = 1 << (bit % 32);
            out.extend(Fe::from_be_bytes(&Fe(words).to_be_bytes()));
        }
        for fill in [0xffff_ffff, 0x8000_0000, 0x7fff_ffff, 1] {
            let mut words = [fill; 8];
            words[7] = 0xffff_fffe;
            out.push(Fe(words));
            out.push(Fe([fill, fill, fill, fill, fill, fill, 0, 0]));
        }
        out
    }

    fn random(state: &mut u64) -> Fe {
        loop {
            let mut bytes = [0u8; 32];
            for b in &mut bytes {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                *b = *state as u8;
            }
            // Mostly random words, sometimes a word pushed to an extreme.
            if *state % 5 == 0 {
                let i = (*state >> 8) as usize % 32;
                bytes[i] = if *state & 0x100 == 0 { 0 } else { 0xff };
            }
            if let Some(fe) = Fe::from_be_bytes(&bytes) {
                return fe;
            }
        }
    }

    #[test]
    fn operations_match_the_crate() {
        let mut state = 0x0f1e_1d00u64;
        let mut values = edges();
        for _ in 0..300 {
            values.push(random(&mut state));
        }
        for &a in &values {
            assert_eq!(ours(theirs(a)), a);
            assert_eq!(ours(-theirs(a)), -a, "{a:?}");
            assert_eq!(ours(theirs(a).square()), a.square(), "{a:?}");
            assert_eq!(a * a, a.square(), "{a:?}");
            assert_eq!(ours(theirs(a).double()), a.double(), "{a:?}");
            assert_eq!(a.is_zero_vartime(), bool::from(theirs(a).is_zero()));
            for &b in &values {
                let (ta, tb) = (theirs(a), theirs(b));
                assert_eq!(ours(ta * tb), a * b, "{a:?} * {b:?}");
                assert_eq!(ours(ta + tb), a + b, "{a:?} + {b:?}");
                assert_eq!(ours(ta - tb), a - b, "{a:?} - {b:?}");
            }
        }
    }

    #[test]
    fn bytes_at_and_above_p_are_refused() {
        let p = Fe(P).to_be_bytes();
        assert_eq!(Fe::from_be_bytes(&p), None);
        assert_eq!(Fe::from_be_bytes(&[0xff; 32]), None);
        let mut p_minus_one = p;
        p_minus_one[31] -= 1;
        assert_eq!(Fe::from_be_bytes(&p_minus_one), Some(-Fe::ONE));
    }

    /// The largest and smallest word sums of the reduction, and any 512-bit
    /// number (not only products), through the carry loop.
    #[test]
    fn reduction_extremes() {
        let cases: [[u32; 16]; 4] = [
            [0xffff_ffff; 16],
            [0; 16],
            {
                // Only the words the reduction subtracts.
                let mut c = [0u32; 16];
                for i in [8, 9, 10, 11, 12, 13, 14, 15] {
                    c[i] = 0xffff_ffff;
                }
                c
            },
            {
                let mut c = [0u32; 16];
                for i in [11, 12, 13, 14, 15] {
                    c[i] = 0xffff_ffff;
                }
                c
            },
        ];
        let mut state = 0xc0ff_ee00u64;
        let random = (0..2000).map(|_| {
            std::array::from_fn(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Some words at their extremes, the others random.
                match state % 7 {
                    0 => 0,
                    1 => u32::MAX,
                    _ => (state >> 16) as u32,
                }
            })
        });
        for c in cases.into_iter().chain(random) {
            // The same value through the crate: c = hi·2^256 + lo.
            let word = |i: usize| Fe::from_be_bytes(&Fe([c[i], 0, 0, 0, 0, 0, 0, 0]).to_be_bytes());
            let mut expected = Theirs::ZERO;
            let two32 = theirs(Fe([0, 1, 0, 0, 0, 0, 0, 0]));
            for i in (0..16).rev() {
                expected = expected * two32 + theirs(word(i).unwrap());
            }
            assert_eq!(reduce(&c), ours(expected), "{c:x?}");
        }
    }
}
