//! The proxy-wasm ABI's wire formats for header maps and property paths.
//!
//! Pure byte handling, compiled natively for its tests: what the host hands
//! us is parsed with bounds checks only, so a malformed map is an error, never
//! a panic.
//!
//! A map is `count: u32`, then `count` pairs of lengths `(key: u32, value:
//! u32)`, then each key and value followed by a NUL byte (little endian).

/// A map that does not follow the format (or cannot be written in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

fn read_u32(bytes: &[u8], at: usize) -> Result<usize, Malformed> {
    let end = at.checked_add(4).ok_or(Malformed)?;
    let word: [u8; 4] = bytes
        .get(at..end)
        .and_then(|b| b.try_into().ok())
        .ok_or(Malformed)?;
    usize::try_from(u32::from_le_bytes(word)).map_err(|_| Malformed)
}

/// A header map's pairs as bytes, in the host's order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Parses a serialized map. An empty buffer is an empty map.
pub fn decode(bytes: &[u8]) -> Result<Pairs, Malformed> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let count = read_u32(bytes, 0)?;
    // Every pair needs 8 bytes of lengths and 2 NULs: a count the buffer
    // cannot hold is refused before anything is allocated for it.
    let lengths_end = count
        .checked_mul(8)
        .and_then(|n| n.checked_add(4))
        .filter(|&end| end <= bytes.len())
        .ok_or(Malformed)?;
    let mut pairs = Vec::with_capacity(count);
    let mut data = lengths_end;
    let mut take = |len: usize| -> Result<Vec<u8>, Malformed> {
        let end = data.checked_add(len).ok_or(Malformed)?;
        let item = bytes.get(data..end).ok_or(Malformed)?.to_vec();
        // Each item is followed by a NUL the host wrote.
        if bytes.get(end) != Some(&0) {
            return Err(Malformed);
        }
        data = end + 1;
        Ok(item)
    };
    for n in 0..count {
        let at = 4 + n * 8;
        let key_len = read_u32(bytes, at)?;
        let value_len = read_u32(bytes, at + 4)?;
        let key = take(key_len)?;
        let value = take(value_len)?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn push_len(out: &mut Vec<u8>, len: usize) -> Result<(), Malformed> {
    let len = u32::try_from(len).map_err(|_| Malformed)?;
    out.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Serializes a map for the host.
pub fn encode<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Result<Vec<u8>, Malformed> {
    let size = pairs.iter().fold(4usize, |n, (k, v)| {
        n.saturating_add(k.as_ref().len())
            .saturating_add(v.as_ref().len())
            .saturating_add(10)
    });
    let mut out = Vec::with_capacity(size);
    push_len(&mut out, pairs.len())?;
    for (k, v) in pairs {
        push_len(&mut out, k.as_ref().len())?;
        push_len(&mut out, v.as_ref().len())?;
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    Ok(out)
}

/// A property path (`["xds", "cluster_name"]`): the parts joined by NUL.
pub fn property_path(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let pairs = vec![
            (":status".to_string(), "200".to_string()),
            ("x-empty".to_string(), String::new()),
            (String::new(), "v".to_string()),
        ];
        let bytes = encode(&pairs).unwrap();
        let back = decode(&bytes).unwrap();
        let back: Vec<(String, String)> = back
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(back, pairs);
        assert_eq!(decode(&encode::<&str, &str>(&[]).unwrap()).unwrap(), vec![]);
        assert_eq!(decode(&[]).unwrap(), vec![]);
    }

    #[test]
    fn malformed_maps_are_errors_not_panics() {
        let good = encode(&[("key", "value"), ("k2", "v2")]).unwrap();
        // Every truncation of a valid map is refused.
        for cut in 1..good.len() {
            assert_eq!(decode(&good[..cut]), Err(Malformed), "cut at {cut}");
        }
        // A count larger than the buffer can hold, and the largest count.
        assert_eq!(decode(&[9, 0, 0, 0, 0, 0, 0, 0]), Err(Malformed));
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff]), Err(Malformed));
        // Lengths pointing past the end.
        let mut long = good.clone();
        long[4] = 0xff;
        long[5] = 0xff;
        assert_eq!(decode(&long), Err(Malformed));
        // A missing NUL terminator.
        let mut no_nul = good.clone();
        let first_nul = 4 + 2 * 8 + 3;
        no_nul[first_nul] = b'x';
        assert_eq!(decode(&no_nul), Err(Malformed));
    }

    #[test]
    fn property_paths_are_nul_joined() {
        assert_eq!(
            property_path(&["xds", "cluster_name"]),
            b"xds\0cluster_name"
        );
        assert_eq!(property_path(&["route_name"]), b"route_name");
        assert_eq!(property_path(&[]), b"");
    }
}
