//! Model patterns: a model name, or a name with `*` wildcards
//! (`gpt-4o*`, `*-mini`, `claude-*-haiku-*`, `*`). Case-sensitive, as
//! providers treat model names.

/// Whether `name` matches `pattern`. Linear in their lengths for one `*`;
/// each further `*` is a leftmost search, which is enough for a glob
/// without `?` or classes.
pub fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let middle_and_last: Vec<&str> = parts.collect();
    let Some((last, middle)) = middle_and_last.split_last() else {
        return pattern == name;
    };
    let Some(rest) = name.strip_prefix(first) else {
        return false;
    };
    let Some(mut rest) = rest.strip_suffix(last) else {
        return false;
    };
    // The prefix and the suffix must not overlap.
    if first.len() + last.len() > name.len() {
        return false;
    }
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = rest.get(at + part.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn exact_and_wildcards() {
        let cases = [
            ("gpt-4o", "gpt-4o", true),
            ("gpt-4o", "gpt-4o-mini", false),
            ("gpt-4o*", "gpt-4o", true),
            ("gpt-4o*", "gpt-4o-mini", true),
            ("gpt-4o*", "gpt-4", false),
            ("gpt-4o*", "GPT-4o", false),
            ("*-mini", "gpt-4o-mini", true),
            ("*-mini", "gpt-4o-mini-2024", false),
            ("claude-*-haiku-*", "claude-3-5-haiku-latest", true),
            ("claude-*-haiku-*", "claude-3-5-sonnet-latest", false),
            ("claude-*-haiku-*", "claude--haiku-", true),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("ab*ba", "aba", false),
            ("*", "anything", true),
            ("*", "", true),
            ("**", "x", true),
            ("", "", true),
            ("", "x", false),
            ("a*b*c", "a-c-b", false),
            ("a*b*c", "a-b-c", true),
            ("é*", "éclair", true),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(matches(pattern, name), want, "{pattern} ~ {name}");
        }
    }
}
