//! The configuration's JSON as a tree (keys in order, duplicates kept), and a
//! serde `Deserializer` over it that names the field an error comes from.
//!
//! Why not `serde_path_to_error` over `serde_json`'s text deserializer: every
//! configuration type's `Deserialize` code was compiled for two stacked
//! generic deserializers (the path tracker and the text parser), about 300 KB
//! of the `.wasm`. Here the text is parsed once into [`Json`] (one small
//! instantiation), and the types are compiled for this one deserializer,
//! which tracks no path while it works: a failing step appends its key or
//! index to the error on the way out.

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, Visitor};
use std::fmt;

/// A JSON value as written: object members in order, duplicates kept (the
/// types that care, `UniqueMap` and derived structs, refuse them).
#[derive(Debug)]
pub enum Json {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl<'de> de::Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
                Ok(Json::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
                Ok(Json::U64(n))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
                Ok(Json::I64(n))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Json, E> {
                Ok(Json::F64(n))
            }
            fn visit_str<E>(self, s: &str) -> Result<Json, E> {
                Ok(Json::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Json, E> {
                Ok(Json::Str(s))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Json::Arr(out))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    let v = map.next_value()?;
                    out.push((k, v));
                }
                Ok(Json::Obj(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

/// serde's message, and where it happened (innermost segment first while
/// the error travels up, reversed by [`Error::path`]).
#[derive(Debug)]
pub struct Error {
    message: String,
    rev_path: Vec<Segment>,
}

impl Error {
    fn at(mut self, segment: Segment) -> Self {
        self.rev_path.push(segment);
        self
    }

    // The error paths of the accessors below, out of line: the accessors
    // are compiled once per field type (about 150 copies), these once.
    #[inline(never)]
    fn at_key(self, key: &str) -> Self {
        self.at(Segment::Key(key.to_string()))
    }

    #[inline(never)]
    fn at_index(self, index: usize) -> Self {
        self.at(Segment::Index(index))
    }

    #[inline(never)]
    fn no_key() -> Self {
        de::Error::custom("a value without its key")
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// `a.b[2].c`, as `serde_path_to_error` printed it; empty at the root.
    pub fn path(&self) -> String {
        let mut out = String::new();
        for segment in self.rev_path.iter().rev() {
            match segment {
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
                Segment::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
            }
        }
        out
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            message: msg.to_string(),
            rev_path: Vec::new(),
        }
    }
}

fn unexpected(v: &Json) -> de::Unexpected<'_> {
    match v {
        Json::Null => de::Unexpected::Unit,
        Json::Bool(b) => de::Unexpected::Bool(*b),
        Json::U64(n) => de::Unexpected::Unsigned(*n),
        Json::I64(n) => de::Unexpected::Signed(*n),
        Json::F64(n) => de::Unexpected::Float(*n),
        Json::Str(s) => de::Unexpected::Str(s),
        Json::Arr(_) => de::Unexpected::Seq,
        Json::Obj(_) => de::Unexpected::Map,
    }
}

/// Deserialises `T` from the tree; the error names the field.
pub fn from_tree<T: de::DeserializeOwned>(v: &Json) -> Result<T, Error> {
    T::deserialize(v)
}

impl<'de> Deserializer<'de> for &Json {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Json::Null => visitor.visit_unit(),
            Json::Bool(b) => visitor.visit_bool(*b),
            Json::U64(n) => visitor.visit_u64(*n),
            Json::I64(n) => visitor.visit_i64(*n),
            Json::F64(n) => visitor.visit_f64(*n),
            Json::Str(s) => visitor.visit_str(s),
            Json::Arr(items) => visitor.visit_seq(Seq {
                items: items.iter(),
                index: 0,
            }),
            Json::Obj(members) => visitor.visit_map(Map {
                members: members.iter(),
                key: None,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Json::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    // Structs and maps take only objects: not compiling every struct's
    // positional (array) form keeps the module smaller, and a configuration
    // never writes a struct as an array.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Json::Obj(members) => visitor.visit_map(Map {
                members: members.iter(),
                key: None,
            }),
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Json::Arr(items) => visitor.visit_seq(Seq {
                items: items.iter(),
                index: 0,
            }),
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self {
            Json::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Json::Obj(members) => match members.as_slice() {
                [(variant, value)] => visitor.visit_enum(Variant { variant, value }),
                _ => Err(de::Error::invalid_value(
                    de::Unexpected::Map,
                    &"an object with a single key",
                )),
            },
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct identifier
    }
}

struct Seq<'a> {
    items: std::slice::Iter<'a, Json>,
    index: usize,
}

impl<'de> de::SeqAccess<'de> for Seq<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        match seed.deserialize(item) {
            Ok(v) => Ok(Some(v)),
            Err(e) => Err(e.at_index(index)),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'a> {
    members: std::slice::Iter<'a, (String, Json)>,
    key: Option<&'a (String, Json)>,
}

impl<'de> de::MapAccess<'de> for Map<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(member) = self.members.next() else {
            return Ok(None);
        };
        self.key = Some(member);
        let key: de::value::StrDeserializer<'_, Error> = member.0.as_str().into_deserializer();
        // An unknown field is refused at its key: the path names it.
        match seed.deserialize(key) {
            Ok(k) => Ok(Some(k)),
            Err(e) => Err(e.at_key(&member.0)),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((key, value)) = self.key.take() else {
            return Err(Error::no_key());
        };
        match seed.deserialize(value) {
            Ok(v) => Ok(v),
            Err(e) => Err(e.at_key(key)),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.members.len())
    }
}

struct Variant<'a> {
    variant: &'a str,
    value: &'a Json,
}

impl<'a, 'de> de::EnumAccess<'de> for Variant<'a> {
    type Error = Error;
    type Variant = Variant<'a>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Error> {
        let name: de::value::StrDeserializer<'_, Error> = self.variant.into_deserializer();
        Ok((seed.deserialize(name)?, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        de::Deserialize::deserialize(self.value).map_err(|e| self.under(e))
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self.value).map_err(|e| self.under(e))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.value
            .deserialize_seq(visitor)
            .map_err(|e| self.under(e))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.value
            .deserialize_map(visitor)
            .map_err(|e| self.under(e))
    }
}

impl Variant<'_> {
    fn under(&self, e: Error) -> Error {
        e.at_key(self.variant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn parse<T: de::DeserializeOwned>(text: &str) -> Result<T, (String, String)> {
        let tree: Json = serde_json::from_str(text).unwrap();
        from_tree(&tree).map_err(|e| (e.path(), e.message().to_string()))
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        n: u32,
        #[serde(default)]
        s: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Source {
        Inline(String),
        File { path: String },
        Nothing,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        items: Vec<Inner>,
        #[serde(default)]
        source: Option<Source>,
        #[serde(default)]
        any: Option<serde_json::Value>,
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let o: Outer = parse(
            r#"{"items": [{"n": 1}, {"n": 2, "s": "x"}], "source": {"file": {"path": "p"}},
                "any": {"b": [1, -2, 1.5, null, true], "a": "s"}}"#,
        )
        .unwrap();
        assert_eq!(o.items[1].s.as_deref(), Some("x"));
        assert_eq!(
            o.source,
            Some(Source::File {
                path: "p".to_string()
            })
        );
        assert_eq!(
            o.any,
            Some(serde_json::json!({"a": "s", "b": [1, -2, 1.5, null, true]}))
        );
        let o: Outer = parse(r#"{"items": [], "source": "nothing"}"#).unwrap();
        assert_eq!(o.source, Some(Source::Nothing));
        let o: Outer = parse(r#"{"items": [], "source": {"inline": "t"}}"#).unwrap();
        assert_eq!(o.source, Some(Source::Inline("t".to_string())));
    }

    #[test]
    fn errors_name_the_field_as_serde_path_to_error_did() {
        let e = parse::<Outer>(r#"{"items": [{"n": 1}, {"n": "2"}]}"#).unwrap_err();
        assert_eq!(e.0, "items[1].n");
        assert_eq!(e.1, "invalid type: string \"2\", expected u32");
        let e = parse::<Outer>(r#"{"items": [{"n": 1, "m": 2}]}"#).unwrap_err();
        assert_eq!(e.0, "items[0].m");
        assert!(e.1.starts_with("unknown field `m`"), "{}", e.1);
        let e = parse::<Outer>(r#"{"items": [{}]}"#).unwrap_err();
        assert_eq!(e, ("items[0]".to_string(), "missing field `n`".to_string()));
        let e = parse::<Outer>(r#"{"items": [{"n": 4294967296}]}"#).unwrap_err();
        assert_eq!(e.0, "items[0].n");
        let e = parse::<Outer>(r#"{"items": [], "source": {"file": {"path": 1}}}"#).unwrap_err();
        assert_eq!(e.0, "source.file.path");
        let e = parse::<Outer>(r#"{"items": [], "source": "pipe"}"#).unwrap_err();
        assert_eq!(e.0, "source");
        assert!(e.1.starts_with("unknown variant `pipe`"), "{}", e.1);
        let e = parse::<Outer>(r#"{"items": {"n": 1}}"#).unwrap_err();
        assert_eq!(e.0, "items");
        let e = parse::<Outer>(r#"[[]]"#).unwrap_err();
        assert_eq!(e.0, "");
        assert_eq!(e.1, "invalid type: sequence, expected struct Outer");
        let e = parse::<Outer>(r#"{"items": [], "items": []}"#).unwrap_err();
        assert_eq!(e, (String::new(), "duplicate field `items`".to_string()));
    }
}
