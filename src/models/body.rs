//! The `model` of an OpenAI- or Anthropic-shaped JSON request, read from
//! the start of the body without parsing the rest of it.
//!
//! The top-level object is scanned key by key; other values are skipped
//! (strings, numbers, nested objects and arrays) without being decoded.
//! Keys and the model are decoded as JSON decodes them (`"mod\u0065l"` is
//! `model`), and a `model` that appears twice is refused: a provider that
//! keeps the last one would otherwise get another model than the one checked.

/// What the body says about its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelField {
    /// `model` once, as a string. `whole`: the object was read to its end;
    /// otherwise only its start was (the body was longer than the limit) and
    /// a second `model` further on cannot be ruled out.
    Model { name: String, whole: bool },
    /// No readable `model`, and why.
    Unreadable(Unreadable),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    NoBody,
    NotJsonObject,
    NoModel,
    NotAString,
    TooLong,
    Duplicate,
    /// Not in the part of the body that was read.
    NotInStart,
}

impl Unreadable {
    pub fn reason(self) -> &'static str {
        match self {
            Unreadable::NoBody => "the request has no body",
            Unreadable::NotJsonObject => "the body is not a JSON object",
            Unreadable::NoModel => "the body has no model",
            Unreadable::NotAString => "model is not a string",
            Unreadable::TooLong => "model is longer than 256 bytes",
            Unreadable::Duplicate => "model appears more than once",
            Unreadable::NotInStart => "no model in the part of the body that is read",
        }
    }
}

/// Longest model name taken.
pub const MAX_MODEL_LEN: usize = 256;
/// Keys longer than this cannot be `model`: they are skipped, not decoded.
const MAX_KEY_LEN: usize = 64;

/// Reads `model` from `body`, which is the whole request body or, when
/// `truncated`, only its start.
pub fn model_field(body: &[u8], truncated: bool) -> ModelField {
    if body.is_empty() && !truncated {
        return ModelField::Unreadable(Unreadable::NoBody);
    }
    let mut s = Scanner {
        bytes: body,
        pos: 0,
    };
    match s.top_level() {
        Ok(Some(name)) => ModelField::Model { name, whole: true },
        Ok(None) => ModelField::Unreadable(Unreadable::NoModel),
        Err(Stop::End(found)) if truncated => match found {
            Some(name) => ModelField::Model { name, whole: false },
            None => ModelField::Unreadable(Unreadable::NotInStart),
        },
        Err(Stop::End(_)) => ModelField::Unreadable(Unreadable::NotJsonObject),
        Err(Stop::Invalid(why)) => ModelField::Unreadable(why),
    }
}

/// Why the scan stopped early.
enum Stop {
    /// Out of bytes, with the model found so far.
    End(Option<String>),
    Invalid(Unreadable),
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

const INVALID: Stop = Stop::Invalid(Unreadable::NotJsonObject);

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// The next byte after whitespace, consumed; `found` is reported if the
    /// bytes run out.
    fn next_token(&mut self, found: &Option<String>) -> Result<u8, Stop> {
        self.skip_ws();
        let b = self.peek().ok_or_else(|| Stop::End(found.clone()))?;
        self.pos += 1;
        Ok(b)
    }

    fn top_level(&mut self) -> Result<Option<String>, Stop> {
        let mut found: Option<String> = None;
        // A UTF-8 byte order mark is skipped, as Python's json.loads skips it in bytes.
        if self.bytes.starts_with(&[0xef, 0xbb, 0xbf]) {
            self.pos = 3;
        }
        if self.next_token(&found)? != b'{' {
            return Err(INVALID);
        }
        self.skip_ws();
        if self.peek() == Some(b'}') {
            return Ok(found);
        }
        loop {
            if self.next_token(&found)? != b'"' {
                return Err(INVALID);
            }
            let is_model = self.key_is_model(&found)?;
            if self.next_token(&found)? != b':' {
                return Err(INVALID);
            }
            if is_model {
                if found.is_some() {
                    return Err(Stop::Invalid(Unreadable::Duplicate));
                }
                match self.next_token(&found)? {
                    b'"' => {
                        let name = self.string(MAX_MODEL_LEN, &found)?;
                        found = Some(name.ok_or(Stop::Invalid(Unreadable::TooLong))?);
                    }
                    _ => return Err(Stop::Invalid(Unreadable::NotAString)),
                }
            } else {
                self.skip_value(&found)?;
            }
            match self.next_token(&found)? {
                b',' => {}
                b'}' => return Ok(found),
                _ => return Err(INVALID),
            }
        }
    }

    /// After the opening quote of a key: whether it decodes to `model`.
    fn key_is_model(&mut self, found: &Option<String>) -> Result<bool, Stop> {
        Ok(self.string(MAX_KEY_LEN, found)?.as_deref() == Some("model"))
    }

    /// After an opening quote: the decoded string, `None` when it is longer
    /// than `max` bytes (it is still read to its end).
    fn string(&mut self, max: usize, found: &Option<String>) -> Result<Option<String>, Stop> {
        let mut out: Vec<u8> = Vec::new();
        let mut fits = true;
        let mut push = |out: &mut Vec<u8>, bytes: &[u8]| {
            if out.len() + bytes.len() > max {
                fits = false;
            } else {
                out.extend_from_slice(bytes);
            }
        };
        loop {
            let b = self.peek().ok_or_else(|| Stop::End(found.clone()))?;
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = self.peek().ok_or_else(|| Stop::End(found.clone()))?;
                    self.pos += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape(found)?,
                        _ => return Err(INVALID),
                    };
                    let mut buf = [0u8; 4];
                    push(&mut out, c.encode_utf8(&mut buf).as_bytes());
                }
                0x00..=0x1f => return Err(INVALID),
                _ => push(&mut out, &[b]),
            }
        }
        if !fits {
            return Ok(None);
        }
        String::from_utf8(out).map(Some).map_err(|_| INVALID)
    }

    fn hex4(&mut self, found: &Option<String>) -> Result<u32, Stop> {
        let mut v = 0u32;
        for _ in 0..4 {
            let b = self.peek().ok_or_else(|| Stop::End(found.clone()))?;
            self.pos += 1;
            v = v * 16 + (b as char).to_digit(16).ok_or(INVALID)?;
        }
        Ok(v)
    }

    /// After `\u`: one code point, a surrogate pair joined. A lone
    /// surrogate becomes U+FFFD (as Python's json keeps it, it can never
    /// equal a configured name either way).
    fn unicode_escape(&mut self, found: &Option<String>) -> Result<char, Stop> {
        let first = self.hex4(found)?;
        if (0xd800..0xdc00).contains(&first)
            && self.bytes.get(self.pos..self.pos + 2) == Some(b"\\u")
        {
            let save = self.pos;
            self.pos += 2;
            let second = self.hex4(found)?;
            if (0xdc00..0xe000).contains(&second) {
                let c = 0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00);
                return Ok(char::from_u32(c).unwrap_or('\u{fffd}'));
            }
            self.pos = save;
        }
        Ok(char::from_u32(first).unwrap_or('\u{fffd}'))
    }

    /// Skips one value (after whitespace): nested containers by depth,
    /// strings with their escapes, scalars to the next delimiter.
    fn skip_value(&mut self, found: &Option<String>) -> Result<(), Stop> {
        self.skip_ws();
        let mut depth = 0usize;
        loop {
            let b = self.peek().ok_or_else(|| Stop::End(found.clone()))?;
            match b {
                b'"' => {
                    self.pos += 1;
                    self.skip_string(found)?;
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.pos += 1;
                }
                b'}' | b']' if depth > 0 => {
                    depth -= 1;
                    self.pos += 1;
                }
                b',' | b'}' | b']' if depth == 0 => return Ok(()),
                b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => return Ok(()),
                0x00..=0x1f if !matches!(b, b'\t' | b'\n' | b'\r') => return Err(INVALID),
                _ => self.pos += 1,
            }
            if depth == 0 && matches!(b, b'"' | b'}' | b']') {
                return Ok(());
            }
        }
    }

    /// After an opening quote: to the closing one, without decoding.
    fn skip_string(&mut self, found: &Option<String>) -> Result<(), Stop> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let mut i = 0;
        while let Some(&b) = rest.get(i) {
            match b {
                b'"' => {
                    self.pos += i + 1;
                    return Ok(());
                }
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
        Err(Stop::End(found.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(body: &str) -> ModelField {
        model_field(body.as_bytes(), false)
    }

    fn found(name: &str) -> ModelField {
        ModelField::Model {
            name: name.into(),
            whole: true,
        }
    }

    fn unreadable(why: Unreadable) -> ModelField {
        ModelField::Unreadable(why)
    }

    #[test]
    fn openai_and_anthropic_shapes() {
        assert_eq!(
            model(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}"#),
            found("gpt-4o-mini")
        );
        // The openai and anthropic Python SDKs put `messages` first, with spaces.
        assert_eq!(
            model(
                r#"{"messages": [{"role": "user", "content": "a \"quoted\" {brace} [x]"}], "model": "gpt-4o", "stream": true}"#
            ),
            found("gpt-4o")
        );
        assert_eq!(
            model(
                "{\n  \"max_tokens\": 1024,\n  \"messages\": [],\n  \"model\": \"claude-3-5-sonnet-latest\",\n  \"temperature\": 0.5, \"x\": null, \"y\": [true, false, -1.5e3]\n}"
            ),
            found("claude-3-5-sonnet-latest")
        );
    }

    #[test]
    fn escapes_are_decoded_in_keys_and_values() {
        assert_eq!(model(r#"{"mod\u0065l": "gpt-4o"}"#), found("gpt-4o"));
        assert_eq!(model(r#"{"model": "gpt\u002d4o\/x"}"#), found("gpt-4o/x"));
        assert_eq!(model(r#"{"model": "\ud83d\ude00"}"#), found("\u{1f600}"));
        assert_eq!(
            model(r#"{"models": "x", "model_id": "y"}"#),
            unreadable(Unreadable::NoModel)
        );
    }

    #[test]
    fn a_second_model_is_refused_even_spelled_otherwise() {
        assert_eq!(
            model(r#"{"model": "gpt-4o-mini", "model": "o1-pro"}"#),
            unreadable(Unreadable::Duplicate)
        );
        assert_eq!(
            model(r#"{"model": "gpt-4o-mini", "messages": [], "m\u006fdel": "o1-pro"}"#),
            unreadable(Unreadable::Duplicate)
        );
        // Nested `model` keys are not the request's model.
        assert_eq!(
            model(r#"{"metadata": {"model": "x"}, "tools": [{"model": "y"}], "model": "z"}"#),
            found("z")
        );
    }

    #[test]
    fn unreadable_bodies() {
        assert_eq!(model(""), unreadable(Unreadable::NoBody));
        assert_eq!(model("{}"), unreadable(Unreadable::NoModel));
        assert_eq!(model("[]"), unreadable(Unreadable::NotJsonObject));
        assert_eq!(model("model=gpt-4o"), unreadable(Unreadable::NotJsonObject));
        assert_eq!(model(r#"{"model": 4}"#), unreadable(Unreadable::NotAString));
        assert_eq!(
            model(r#"{"model": null}"#),
            unreadable(Unreadable::NotAString)
        );
        assert_eq!(
            model(r#"{"model": ["a"]}"#),
            unreadable(Unreadable::NotAString)
        );
        assert_eq!(
            model(r#"{"model": "gpt-4o""#),
            unreadable(Unreadable::NotJsonObject)
        );
        assert_eq!(
            model(r#"{"model" "gpt-4o"}"#),
            unreadable(Unreadable::NotJsonObject)
        );
        assert_eq!(
            model(r#"{"model": "a\qb"}"#),
            unreadable(Unreadable::NotJsonObject)
        );
        assert_eq!(
            model("{\"model\": \"a\nb\"}"),
            unreadable(Unreadable::NotJsonObject)
        );
        assert_eq!(
            model(r#"{,"model": "a"}"#),
            unreadable(Unreadable::NotJsonObject)
        );
        let long = format!(r#"{{"model": "{}"}}"#, "m".repeat(MAX_MODEL_LEN + 1));
        assert_eq!(model(&long), unreadable(Unreadable::TooLong));
        let just = format!(r#"{{"model": "{}"}}"#, "m".repeat(MAX_MODEL_LEN));
        assert_eq!(model(&just), found(&"m".repeat(MAX_MODEL_LEN)));
        // Invalid UTF-8 in the model.
        assert_eq!(
            model_field(b"{\"model\": \"\xff\"}", false),
            unreadable(Unreadable::NotJsonObject)
        );
    }

    #[test]
    fn only_the_start_of_a_long_body() {
        let body = format!(
            r#"{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
            "x".repeat(10_000)
        );
        let start = &body.as_bytes()[..100];
        assert_eq!(
            model_field(start, true),
            ModelField::Model {
                name: "gpt-4o".into(),
                whole: false
            }
        );
        let late = format!(
            r#"{{"messages": [{{"role": "user", "content": "{}"}}], "model": "gpt-4o"}}"#,
            "x".repeat(10_000)
        );
        assert_eq!(
            model_field(&late.as_bytes()[..100], true),
            unreadable(Unreadable::NotInStart)
        );
        // Cut inside the model name: not found.
        assert_eq!(
            model_field(br#"{"model": "gpt-4"#, true),
            unreadable(Unreadable::NotInStart)
        );
        assert_eq!(model_field(b"", true), unreadable(Unreadable::NotInStart));
        // A complete body that ends early is malformed, not cut.
        assert_eq!(
            model_field(br#"{"model": "gpt-4o", "#, false),
            unreadable(Unreadable::NotJsonObject)
        );
    }

    #[test]
    fn every_prefix_of_hostile_input_is_an_answer_not_a_panic() {
        let inputs: [&[u8]; 5] = [
            br#"{"a": "\u", "model": "\ud800\u0041", "b": [[[{"c": "\\\""}]]]}"#,
            br#"{"model": "x\\", "y": "\\\\\"", "z": {"}": "]"}}"#,
            b"\xef\xbb\xbf{\"model\": \"bom\"}",
            br#"{"model": "\udc00\ud800"}"#,
            b"{\"\xff\": 1, \"model\": \"a\"}",
        ];
        for input in inputs {
            for end in 0..=input.len() {
                let _ = model_field(&input[..end], end < input.len());
                let _ = model_field(&input[..end], false);
            }
        }
        assert_eq!(
            model_field(b"\xef\xbb\xbf{\"model\": \"bom\"}", false),
            found("bom")
        );
    }
}
