//! Text that came from outside (JWKS, discovery documents, token and
//! auth-service replies) as it may appear in a log line: a short, escaped,
//! quoted prefix. A remote document can be 64 KiB with newlines in it; a log
//! line must stay one short line that says where the text was cut.

/// At most this many characters of remote text go into a log line.
pub const MAX_QUOTED_CHARS: usize = 64;

/// The quoted, escaped prefix, and whether the text was longer.
fn quoted_prefix(text: &str) -> (String, bool) {
    let mut out = String::with_capacity(MAX_QUOTED_CHARS + 16);
    out.push('"');
    let mut cut = false;
    for (n, c) in text.chars().enumerate() {
        if n == MAX_QUOTED_CHARS {
            cut = true;
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    (out, cut)
}

/// `"prefix"`, escaped (control characters, quotes and backslashes as Rust
/// escapes: no newline survives), at most [`MAX_QUOTED_CHARS`] characters of
/// the text, then `...(N bytes)` when it was cut.
pub fn quote(text: &str) -> String {
    let (mut out, cut) = quoted_prefix(text);
    if cut {
        out.push_str(&format!("...({} bytes)", text.len()));
    }
    out
}

/// As [`quote`], for bytes that need not be UTF-8 (invalid sequences are
/// replaced).
pub fn quote_bytes(bytes: &[u8]) -> String {
    // Only what can be shown is converted: a huge body costs nothing more.
    let shown = bytes.get(..MAX_QUOTED_CHARS * 4).unwrap_or(bytes);
    let (mut out, cut) = quoted_prefix(&String::from_utf8_lossy(shown));
    if cut || shown.len() < bytes.len() {
        out.push_str(&format!("...({} bytes)", bytes.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_quoted_whole() {
        assert_eq!(quote("P-256K"), "\"P-256K\"");
        assert_eq!(quote(""), "\"\"");
    }

    #[test]
    fn control_characters_quotes_and_newlines_are_escaped() {
        let q = quote("a\nb\r\"c\"\\\u{1b}[31m\u{0}");
        assert_eq!(q, r#""a\nb\r\"c\"\\\u{1b}[31m\0""#);
        assert!(!q.chars().any(char::is_control));
    }

    #[test]
    fn long_text_is_cut_and_says_its_size() {
        let long = "x\n".repeat(32 * 1024);
        let q = quote(&long);
        assert!(q.starts_with("\"x\\nx\\n"));
        assert!(q.ends_with("\"...(65536 bytes)"), "{q}");
        assert!(q.len() < 2 * MAX_QUOTED_CHARS + 32, "{}", q.len());
        assert!(!q.contains('\n'));
        // Exactly the limit is not cut.
        let exact = "y".repeat(MAX_QUOTED_CHARS);
        assert_eq!(quote(&exact), format!("\"{exact}\""));
        // Multi-byte characters are counted as characters, never split.
        let wide = "é".repeat(100);
        assert!(quote(&wide).ends_with("\"...(200 bytes)"));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced() {
        assert_eq!(quote_bytes(b"1\xff0"), "\"1\u{fffd}0\"");
        let huge = vec![b'\n'; 1 << 20];
        let q = quote_bytes(&huge);
        assert!(q.ends_with("...(1048576 bytes)"), "{q}");
        assert!(!q.contains('\n'));
        let just_over = vec![b'z'; MAX_QUOTED_CHARS * 4 + 1];
        assert!(quote_bytes(&just_over).ends_with(&format!("...({} bytes)", just_over.len())));
    }
}
