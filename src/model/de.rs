//! serde over [`Node`]s: typed model values from the YAML tree, with positions on every error and
//! every unknown field reported (not only the first).

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Error as _, IntoDeserializer, Visitor};

use super::spanned::{SPANNED_COL, SPANNED_LINE, SPANNED_NAME, SPANNED_VALUE};
use super::yaml::{Node, NodeKind, Scalar};
use crate::diag::{Diagnostics, Pos, did_you_mean};

/// An error while reading a typed value out of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    /// Where, when known (the innermost node that failed).
    pub pos: Option<Pos>,
    /// What went wrong, for a person.
    pub msg: String,
}

impl DeError {
    fn at(mut self, pos: Pos) -> DeError {
        self.pos.get_or_insert(pos);
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError { pos: None, msg: msg.to_string() }
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::custom(format_args!("expected {exp}, found {unexp}"))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let hint = did_you_mean(variant, expected.iter().copied());
        if hint.is_empty() {
            DeError::custom(format_args!("unknown value `{variant}`: expected one of {}", list(expected)))
        } else {
            DeError::custom(format_args!("unknown value `{variant}`{hint}"))
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::custom(format_args!("missing field `{field}`"))
    }
}

/// `a`, `b` or `c`, for messages.
pub fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("`{s}`")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

type Ctx<'d> = RefCell<&'d mut Diagnostics>;

/// Reads a `T` (a struct) from some of a mapping's entries, as if they were the whole mapping at
/// `pos`: how a stage's shared fields are read apart from its kind.
pub fn from_entries<T: DeserializeOwned>(pos: Pos, entries: &[&(Node, Node)], diags: &mut Diagnostics) -> Option<T> {
    struct Entries<'a, 'b, 'd> {
        entries: &'b [&'a (Node, Node)],
        ctx: &'b Ctx<'d>,
    }
    impl<'de, 'a, 'b, 'd> de::Deserializer<'de> for Entries<'a, 'b, 'd> {
        type Error = DeError;
        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            visitor.visit_map(MapDe { entries: self.entries.iter().copied(), fields: None, value: None, ctx: self.ctx })
        }
        fn deserialize_struct<V: Visitor<'de>>(self, _name: &'static str, fields: &'static [&'static str], visitor: V) -> Result<V::Value, DeError> {
            visitor.visit_map(MapDe { entries: self.entries.iter().copied(), fields: Some(fields), value: None, ctx: self.ctx })
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit unit_struct
            newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    read(pos, diags, |ctx| T::deserialize(Entries { entries, ctx }))
}

/// Runs `f` with the diagnostics shared by every nested deserializer, then records its error.
fn read<T>(pos: Pos, diags: &mut Diagnostics, f: impl FnOnce(&Ctx<'_>) -> Result<T, DeError>) -> Option<T> {
    let ctx = RefCell::new(diags);
    let result = f(&ctx);
    result.map_err(|e| ctx.into_inner().error(e.pos.unwrap_or(pos), e.msg)).ok()
}

/// Reads a `T` from `node`. Errors are recorded in `diags`; `None` when the value could not be
/// built (unknown fields alone are recorded but do not stop it).
pub fn from_node<T: DeserializeOwned>(node: &Node, diags: &mut Diagnostics) -> Option<T> {
    read(node.pos, diags, |ctx| T::deserialize(NodeDe { node, ctx }))
}

struct NodeDe<'a, 'd> {
    node: &'a Node,
    ctx: &'a Ctx<'d>,
}

impl<'a, 'd> NodeDe<'a, 'd> {
    fn scalar(&self, what: &str) -> Result<&'a Scalar, DeError> {
        match &self.node.kind {
            NodeKind::Scalar(s) if !s.is_null() => Ok(s),
            _ => Err(DeError::custom(format_args!("expected {what}, found {}", self.node.describe()))),
        }
    }

    fn int(&self) -> Result<i128, DeError> {
        let s = self.scalar("a whole number")?;
        s.value.replace('_', "").parse::<i128>().map_err(|_| DeError::custom(format_args!("expected a whole number, found `{}`", s.value)))
    }

    fn float(&self) -> Result<f64, DeError> {
        let s = self.scalar("a number")?;
        match s.value.as_str() {
            ".inf" | ".Inf" | "+.inf" => Ok(f64::INFINITY),
            "-.inf" | "-.Inf" => Ok(f64::NEG_INFINITY),
            ".nan" | ".NaN" => Ok(f64::NAN),
            v => v.parse::<f64>().map_err(|_| DeError::custom(format_args!("expected a number, found `{v}`"))),
        }
    }

    fn pos(&self) -> Pos {
        self.node.pos
    }
}

macro_rules! int_method {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let pos = self.pos();
            let n = self.int().map_err(|e| e.at(pos))?;
            let n: $ty = n.try_into().map_err(|_| DeError::custom(format_args!("number {n} is out of range")).at(pos))?;
            visitor.$visit::<DeError>(n).map_err(|e| e.at(pos))
        }
    };
}

impl<'de, 'a, 'd> de::Deserializer<'de> for NodeDe<'a, 'd> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let pos = self.pos();
        let r = match &self.node.kind {
            NodeKind::Scalar(s) if s.quoted => visitor.visit_str(&s.value),
            NodeKind::Scalar(s) if s.is_null() => visitor.visit_unit(),
            NodeKind::Scalar(s) => match s.value.as_str() {
                "true" | "True" | "TRUE" => visitor.visit_bool(true),
                "false" | "False" | "FALSE" => visitor.visit_bool(false),
                v => {
                    if let Ok(i) = v.parse::<i64>() {
                        visitor.visit_i64(i)
                    } else if let Ok(f) = v.parse::<f64>() {
                        visitor.visit_f64(f)
                    } else {
                        visitor.visit_str(v)
                    }
                }
            },
            NodeKind::Seq(items) => visitor.visit_seq(SeqDe { items: items.iter(), ctx: self.ctx }),
            NodeKind::Map(entries) => visitor.visit_map(MapDe::new(entries, None, self.ctx)),
        };
        r.map_err(|e| e.at(pos))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let pos = self.pos();
        let s = self.scalar("true or false").map_err(|e| e.at(pos))?;
        let b = match (s.quoted, s.value.as_str()) {
            (false, "true" | "True" | "TRUE") => true,
            (false, "false" | "False" | "FALSE") => false,
            (_, v) => {
                return Err(DeError::custom(format_args!("expected true or false, found `{v}`")).at(pos));
            }
        };
        visitor.visit_bool::<DeError>(b).map_err(|e| e.at(pos))
    }

    int_method!(deserialize_i8, visit_i8, i8);
    int_method!(deserialize_i16, visit_i16, i16);
    int_method!(deserialize_i32, visit_i32, i32);
    int_method!(deserialize_i64, visit_i64, i64);
    int_method!(deserialize_u8, visit_u8, u8);
    int_method!(deserialize_u16, visit_u16, u16);
    int_method!(deserialize_u32, visit_u32, u32);
    int_method!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let pos = self.pos();
        let f = self.float().map_err(|e| e.at(pos))?;
        visitor.visit_f64::<DeError>(f).map_err(|e| e.at(pos))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let pos = self.pos();
        let s = self.scalar("a string").map_err(|e| e.at(pos))?;
        visitor.visit_str::<DeError>(&s.value).map_err(|e| e.at(pos))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            NodeKind::Scalar(s) if s.is_null() => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            NodeKind::Scalar(s) if s.is_null() => visitor.visit_unit(),
            _ => Err(DeError::custom(format_args!("expected nothing, found {}", self.node.describe())).at(self.pos())),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    /// A list; a lone scalar is read as a list of one (`needs: build` like `needs: [build]`).
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let pos = self.pos();
        match &self.node.kind {
            NodeKind::Seq(items) => visitor.visit_seq(SeqDe { items: items.iter(), ctx: self.ctx }),
            NodeKind::Scalar(s) if !s.is_null() => visitor.visit_seq(SeqDe { items: std::slice::from_ref(self.node).iter(), ctx: self.ctx }),
            _ => Err(DeError::custom(format_args!("expected a list, found {}", self.node.describe()))),
        }
        .map_err(|e| e.at(pos))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(self, _name: &'static str, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let pos = self.pos();
        match &self.node.kind {
            NodeKind::Map(entries) => visitor.visit_map(MapDe::new(entries, None, self.ctx)),
            _ => Err(DeError::custom(format_args!("expected a mapping, found {}", self.node.describe()))),
        }
        .map_err(|e| e.at(pos))
    }

    fn deserialize_struct<V: Visitor<'de>>(self, name: &'static str, fields: &'static [&'static str], visitor: V) -> Result<V::Value, DeError> {
        let pos = self.pos();
        if name == SPANNED_NAME {
            return visitor.visit_map(SpannedDe { node: self.node, ctx: self.ctx, step: 0 }).map_err(|e| e.at(pos));
        }
        match &self.node.kind {
            NodeKind::Map(entries) => visitor.visit_map(MapDe::new(entries, Some(fields), self.ctx)),
            NodeKind::Scalar(s) if s.is_null() => visitor.visit_map(MapDe::new(&[], Some(fields), self.ctx)),
            _ => Err(DeError::custom(format_args!("expected a mapping (with {}), found {}", list(fields), self.node.describe()))),
        }
        .map_err(|e| e.at(pos))
    }

    fn deserialize_enum<V: Visitor<'de>>(self, _name: &'static str, variants: &'static [&'static str], visitor: V) -> Result<V::Value, DeError> {
        let pos = self.pos();
        match &self.node.kind {
            NodeKind::Scalar(s) if !s.is_null() => visitor.visit_enum(s.value.as_str().into_deserializer()),
            NodeKind::Map(entries) if entries.len() == 1 => visitor.visit_enum(EnumDe { key: &entries[0].0, value: &entries[0].1, ctx: self.ctx }),
            _ => Err(DeError::custom(format_args!("expected one of {}, found {}", list(variants), self.node.describe()))),
        }
        .map_err(|e| e.at(pos))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct SeqDe<'a, 'd> {
    items: std::slice::Iter<'a, Node>,
    ctx: &'a Ctx<'d>,
}

impl<'de, 'a, 'd> de::SeqAccess<'de> for SeqDe<'a, 'd> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(node) => seed.deserialize(NodeDe { node, ctx: self.ctx }).map(Some).map_err(|e| e.at(node.pos)),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a, 'd, I = std::slice::Iter<'a, (Node, Node)>> {
    entries: I,
    fields: Option<&'static [&'static str]>,
    value: Option<&'a Node>,
    ctx: &'a Ctx<'d>,
}

impl<'a, 'd> MapDe<'a, 'd> {
    fn new(entries: &'a [(Node, Node)], fields: Option<&'static [&'static str]>, ctx: &'a Ctx<'d>) -> Self {
        MapDe { entries: entries.iter(), fields, value: None, ctx }
    }
}

impl<'de, 'a, 'd, I: Iterator<Item = &'a (Node, Node)>> de::MapAccess<'de> for MapDe<'a, 'd, I> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        for (k, v) in self.entries.by_ref() {
            if let (Some(fields), Some(name)) = (self.fields, k.as_str())
                && !fields.contains(&name)
            {
                let hint = did_you_mean(name, fields.iter().copied());
                let msg = if hint.is_empty() { format!("unknown field `{name}`: expected {}", list(fields)) } else { format!("unknown field `{name}`{hint}") };
                self.ctx.borrow_mut().error(k.pos, msg);
                continue;
            }
            self.value = Some(v);
            return seed.deserialize(NodeDe { node: k, ctx: self.ctx }).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let node = self.value.take().expect("next_value after next_key");
        seed.deserialize(NodeDe { node, ctx: self.ctx }).map_err(|e| e.at(node.pos))
    }
}

struct EnumDe<'a, 'd> {
    key: &'a Node,
    value: &'a Node,
    ctx: &'a Ctx<'d>,
}

impl<'de, 'a, 'd> de::EnumAccess<'de> for EnumDe<'a, 'd> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), DeError> {
        let v = seed.deserialize(NodeDe { node: self.key, ctx: self.ctx })?;
        Ok((v, self))
    }
}

impl<'de, 'a, 'd> de::VariantAccess<'de> for EnumDe<'a, 'd> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        de::Deserialize::deserialize(NodeDe { node: self.value, ctx: self.ctx })
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(NodeDe { node: self.value, ctx: self.ctx }).map_err(|e| e.at(self.value.pos))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_tuple(NodeDe { node: self.value, ctx: self.ctx }, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(NodeDe { node: self.value, ctx: self.ctx }, "", fields, visitor)
    }
}

/// Hands a `Spanned<T>` its line, column and value.
struct SpannedDe<'a, 'd> {
    node: &'a Node,
    ctx: &'a Ctx<'d>,
    step: u8,
}

impl<'de, 'a, 'd> de::MapAccess<'de> for SpannedDe<'a, 'd> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        let key = match self.step {
            0 => SPANNED_LINE,
            1 => SPANNED_COL,
            2 => SPANNED_VALUE,
            _ => return Ok(None),
        };
        seed.deserialize(de::value::StrDeserializer::<DeError>::new(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        self.step += 1;
        match self.step {
            1 => seed.deserialize((self.node.pos.line as u64).into_deserializer()),
            2 => seed.deserialize((self.node.pos.col as u64).into_deserializer()),
            _ => seed.deserialize(NodeDe { node: self.node, ctx: self.ctx }).map_err(|e| e.at(self.node.pos)),
        }
    }
}
