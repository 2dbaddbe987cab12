//! Just enough XML for AWS STS answers: the text of an element reached by a
//! path of element names, required exactly once. No DTD, no entities but
//! the five predefined ones and character references, no CDATA; anything
//! else in a value the caller reads is refused rather than guessed at.
//! Namespaces (`xmlns` on the root) and attributes are ignored; names are
//! compared without prefix.

/// After a `<`: the length of a declaration, comment or CDATA section
/// (skipped), `None` for an element tag.
fn markup_len(after: &str) -> Option<Result<usize, String>> {
    let end = if after.starts_with("!--") {
        after.find("-->").map(|e| e + 3)
    } else if after.starts_with("![CDATA[") {
        after.find("]]>").map(|e| e + 3)
    } else if after.starts_with('?') || after.starts_with('!') {
        after.find('>').map(|e| e + 1)
    } else {
        return None;
    };
    Some(end.ok_or_else(|| "unterminated markup".to_string()))
}

/// The children elements of `parent`'s content named `name`: their content.
fn children<'a>(content: &'a str, name: &str) -> Result<Vec<&'a str>, String> {
    let mut found = Vec::new();
    let mut rest = content;
    let mut depth_guard = 0usize;
    while let Some(open) = rest.find('<') {
        depth_guard += 1;
        if depth_guard > 10_000 {
            return Err("too many elements".into());
        }
        let after = rest.get(open + 1..).unwrap_or("");
        if let Some(skip) = markup_len(after) {
            rest = after.get(skip?..).unwrap_or("");
            continue;
        }
        let tag_end = after.find('>').ok_or("unterminated tag")?;
        let tag = after.get(..tag_end).unwrap_or("");
        if tag.starts_with('/') {
            return Err("unbalanced closing tag".into());
        }
        let self_closing = tag.ends_with('/');
        let tag_name = tag
            .trim_end_matches('/')
            .split(|c: char| c.is_ascii_whitespace())
            .next()
            .unwrap_or("");
        let local = tag_name.rsplit(':').next().unwrap_or(tag_name);
        let body_start = after.get(tag_end + 1..).unwrap_or("");
        let (body, remaining) = if self_closing {
            ("", body_start)
        } else {
            let (body, remaining) = element_body(body_start, tag_name)?;
            (body, remaining)
        };
        if local == name {
            found.push(body);
        }
        rest = remaining;
    }
    Ok(found)
}

/// The content of an element whose start tag named `tag_name` was just
/// read, and what follows its end tag (nested elements of the same name
/// are balanced).
fn element_body<'a>(text: &'a str, tag_name: &str) -> Result<(&'a str, &'a str), String> {
    // One pass over the markup: linear in the element's size.
    let mut depth = 1usize;
    let mut at = 0usize;
    while let Some(lt) = text.get(at..).and_then(|t| t.find('<')) {
        let start = at + lt;
        let tag = text.get(start + 1..).unwrap_or("");
        if let Some(skip) = markup_len(tag) {
            at = start + 1 + skip?;
            continue;
        }
        let (closing, name_part) = match tag.strip_prefix('/') {
            Some(rest) => (true, rest),
            None => (false, tag),
        };
        let name_len = name_part
            .find(|c: char| c == '>' || c == '/' || c.is_ascii_whitespace())
            .unwrap_or(name_part.len());
        let same = name_part.get(..name_len) == Some(tag_name);
        let end = tag.find('>').ok_or("unterminated tag")?;
        let self_closing = tag.get(..end).is_some_and(|t| t.ends_with('/'));
        if same && closing {
            depth -= 1;
            if depth == 0 {
                let body = text.get(..start).unwrap_or("");
                let remaining = text.get(start + 1 + end + 1..).unwrap_or("");
                return Ok((body, remaining));
            }
        } else if same && !self_closing {
            depth += 1;
        }
        at = start + 1 + end + 1;
    }
    Err("missing closing tag".into())
}

/// Text content with the predefined entities and character references
/// decoded; markup inside is refused.
fn text(content: &str) -> Result<String, String> {
    if content.contains('<') {
        return Err("element has markup where text was expected".into());
    }
    let mut out = String::with_capacity(content.len());
    let mut rest = content;
    while let Some(amp) = rest.find('&') {
        out.push_str(rest.get(..amp).unwrap_or(""));
        let after = rest.get(amp + 1..).unwrap_or("");
        let semi = after.find(';').ok_or("unterminated entity")?;
        let entity = after.get(..semi).unwrap_or("");
        let decoded = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    crate::vocab::hex::number(hex)
                } else if let Some(dec) = entity.strip_prefix('#') {
                    // `parse` would take a sign: digits only.
                    dec.bytes()
                        .all(|b| b.is_ascii_digit())
                        .then(|| dec.parse().ok())
                        .flatten()
                } else {
                    None
                };
                code.and_then(char::from_u32).ok_or("unknown entity")?
            }
        };
        out.push(decoded);
        rest = after.get(semi + 1..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out.trim().to_string())
}

/// The text of the one element at `path` (element names from the root's
/// children down); an error if there is none or more than one at any step.
pub fn text_at(doc: &str, path: &[&str]) -> Result<String, String> {
    let mut content = doc;
    for (depth, name) in path.iter().enumerate() {
        let found = children(content, name)?;
        content = match found.as_slice() {
            [one] => one,
            [] => return Err(format!("no {name} element")),
            _ => return Err(format!("{name} appears more than once")),
        };
        // Below the first step only direct content counts: the next
        // search runs inside this element.
        let _ = depth;
    }
    text(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:ai:gateway</SubjectFromWebIdentityToken>
    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/bedrock/gw</Arn><AssumedRoleId>AROA:gw</AssumedRoleId></AssumedRoleUser>
    <Credentials>
      <SessionToken>AQoDYXdzE&amp;+/=</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <Expiration>2026-12-03T09:41:05.123Z</Expiration>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
    <!-- <Credentials><AccessKeyId>forged</AccessKeyId></Credentials> -->
    <Provider>www.amazon.com</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#;

    fn creds(field: &str) -> Result<String, String> {
        text_at(
            STS,
            &[
                "AssumeRoleWithWebIdentityResponse",
                "AssumeRoleWithWebIdentityResult",
                "Credentials",
                field,
            ],
        )
    }

    #[test]
    fn reads_sts_credentials() {
        assert_eq!(creds("AccessKeyId").unwrap(), "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(creds("SessionToken").unwrap(), "AQoDYXdzE&+/=");
        assert_eq!(creds("Expiration").unwrap(), "2026-12-03T09:41:05.123Z");
        assert!(creds("Nope").is_err());
    }

    #[test]
    fn character_references_are_digits_only() {
        let with = |entity: &str| {
            let doc = STS.replace("ASIAIOSFODNN7EXAMPLE", &format!("ASIA{entity}"));
            text_at(
                &doc,
                &[
                    "AssumeRoleWithWebIdentityResponse",
                    "AssumeRoleWithWebIdentityResult",
                    "Credentials",
                    "AccessKeyId",
                ],
            )
        };
        assert_eq!(with("&#x41;&#65;").unwrap(), "ASIAAA");
        // `from_str_radix` and `parse` take a sign; an entity does not.
        assert!(with("&#x+41;").is_err());
        assert!(with("&#+65;").is_err());
        assert!(with("&#x;").is_err());
    }

    #[test]
    fn refuses_what_it_cannot_read_for_sure() {
        let twice = STS.replace(
            "<Provider>",
            "<Credentials><AccessKeyId>X</AccessKeyId></Credentials><Provider>",
        );
        assert!(text_at(
            &twice,
            &[
                "AssumeRoleWithWebIdentityResponse",
                "AssumeRoleWithWebIdentityResult",
                "Credentials"
            ]
        )
        .is_err());
        for bad in [
            "<a><b>x</a>",
            "<a><b>x &bogus; y</b></a>",
            "<a><b>x<c/>y</b></a>",
            "<a><b>unterminated",
            "</a>",
        ] {
            assert!(text_at(bad, &["a", "b"]).is_err(), "{bad}");
        }
        assert_eq!(
            text_at("<a><b>&#x41;&#66;</b></a>", &["a", "b"]).unwrap(),
            "AB"
        );
        assert_eq!(text_at("<a><b a='1'/></a>", &["a", "b"]).unwrap(), "");
        assert_eq!(
            text_at("<x:a xmlns:x='u'><x:b>v</x:b></x:a>", &["a", "b"]).unwrap(),
            "v"
        );
        // Hostile sizes end, they do not loop.
        let deep = "<a>".repeat(20_000);
        assert!(text_at(&deep, &["a", "b"]).is_err());
    }
}
