//! `Spanned<T>`: a value read from a pipeline file together with where it was written.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde::{Serialize, Serializer};

use crate::diag::Pos;

pub(crate) const SPANNED_NAME: &str = "$promote::Spanned";
pub(crate) const SPANNED_LINE: &str = "$line";
pub(crate) const SPANNED_COL: &str = "$col";
pub(crate) const SPANNED_VALUE: &str = "$value";

/// A value and the position of its first character in the pipeline file. It serializes as the
/// bare value, and compares, hashes and dereferences as the value.
#[derive(Clone, Default)]
pub struct Spanned<T> {
    /// Where the value was written.
    pub pos: Pos,
    /// The value.
    pub value: T,
}

impl<T> Spanned<T> {
    /// A value with a position.
    pub fn new(pos: Pos, value: T) -> Self {
        Spanned { pos, value }
    }
}

impl<T> Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Spanned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}", self.value, self.pos)
    }
}

impl<T: fmt::Display> fmt::Display for Spanned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

/// The keys a `Spanned` is handed, read without allocating.
enum Field {
    Line,
    Col,
    Value,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a position field")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                match v {
                    SPANNED_LINE => Ok(Field::Line),
                    SPANNED_COL => Ok(Field::Col),
                    SPANNED_VALUE => Ok(Field::Value),
                    other => Err(de::Error::unknown_field(other, &[SPANNED_LINE, SPANNED_COL, SPANNED_VALUE])),
                }
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Spanned<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value with its position")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Spanned<T>, A::Error> {
                let (mut line, mut col, mut value) = (None, None, None);
                while let Some(key) = map.next_key::<Field>()? {
                    match key {
                        Field::Line => line = Some(map.next_value::<u64>()? as usize),
                        Field::Col => col = Some(map.next_value::<u64>()? as usize),
                        Field::Value => value = Some(map.next_value::<T>()?),
                    }
                }
                let value = value.ok_or_else(|| de::Error::missing_field(SPANNED_VALUE))?;
                Ok(Spanned { pos: Pos::new(line.unwrap_or(0), col.unwrap_or(0)), value })
            }
        }
        d.deserialize_struct(SPANNED_NAME, &[SPANNED_LINE, SPANNED_COL, SPANNED_VALUE], V(PhantomData))
    }
}
