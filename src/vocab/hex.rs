//! Hex digits and `%XX` escapes, read strictly. `u8::from_str_radix` also
//! takes a sign (`"+f"` is 15), which no escape, digest or entity may have:
//! every reader of hex in the filter goes through here.

use std::borrow::Cow;

/// The value of one hex digit, either case.
pub fn digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Exactly two hex digits as a byte.
pub fn byte(pair: &[u8]) -> Option<u8> {
    match pair {
        [high, low] => Some(digit(*high)? << 4 | digit(*low)?),
        _ => None,
    }
}

/// Hex text (either case, even length) as bytes.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.len() % 2 != 0 {
        return None;
    }
    bytes.chunks(2).map(byte).collect()
}

/// Lower-case hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    encode_with(bytes, b"0123456789abcdef")
}

/// Upper-case hex of `bytes`, as percent-encoding writes it.
pub fn encode_upper(bytes: &[u8]) -> String {
    encode_with(bytes, b"0123456789ABCDEF")
}

fn encode_with(bytes: &[u8], digits: &[u8; 16]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            if let Some(&c) = digits.get(usize::from(nibble)) {
                out.push(char::from(c));
            }
        }
    }
    out
}

/// A number of one to eight hex digits (a character reference's `#x...`).
pub fn number(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 8 {
        return None;
    }
    text.bytes()
        .try_fold(0u32, |acc, b| Some(acc << 4 | u32::from(digit(b)?)))
}

/// `%XX` escapes decoded; a `%` not followed by two hex digits stays as it is.
pub fn percent_decode(text: &str) -> Cow<'_, [u8]> {
    let bytes = text.as_bytes();
    if !bytes.contains(&b'%') {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match bytes.get(i + 1..i + 3).and_then(byte) {
            Some(decoded) if b == b'%' => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_non_hex_are_not_digits() {
        // `from_str_radix` reads "+f" as 15: the class of bug this module ends.
        assert_eq!(byte(b"+f"), None);
        assert_eq!(byte(b"-1"), None);
        assert_eq!(byte(b"g0"), None);
        assert_eq!(byte(b"f"), None);
        assert_eq!(byte(b"fAb"), None);
        assert_eq!(byte(b"fA"), Some(0xfa));
        assert_eq!(decode("+f+f"), None);
        assert_eq!(decode("0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(decode("abc"), None);
        assert_eq!(number("+41"), None);
        assert_eq!(number(""), None);
        assert_eq!(number("123456789"), None);
        assert_eq!(number("1F600"), Some(0x1f600));
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("a%5Fb").as_ref(), b"a_b");
        assert_eq!(percent_decode("%+1%2").as_ref(), b"%+1%2");
        assert_eq!(percent_decode("%%41").as_ref(), b"%A");
        assert_eq!(percent_decode("100%").as_ref(), b"100%");
        assert!(matches!(percent_decode("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn encoding_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&bytes)), Some(bytes.clone()));
        assert_eq!(decode(&encode_upper(&bytes)), Some(bytes));
        assert_eq!(encode_upper(&[0xab, 0x01]), "AB01");
    }
}
