//! GGUF metadata values: the [`GgufValue`] enum, its typed accessors, and the parser for one
//! value of a given type id (scalars, strings and arrays, arrays nested up to [`MAX_ARRAY_DEPTH`]).
use super::error::GgufError;
use super::reader::Cursor;

/// Arrays of arrays deeper than this are rejected, so that a hostile file cannot recurse the
/// parser into a stack overflow.
pub const MAX_ARRAY_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// Any integer type whose value is non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type whose value fits in i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => i64::try_from(v).ok(),
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            _ => None,
        }
    }

    /// f32 or f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The GGUF name of this value's type ("u32", "string", "array", …), for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "u8",
            GgufValue::I8(_) => "i8",
            GgufValue::U16(_) => "u16",
            GgufValue::I16(_) => "i16",
            GgufValue::U32(_) => "u32",
            GgufValue::I32(_) => "i32",
            GgufValue::U64(_) => "u64",
            GgufValue::I64(_) => "i64",
            GgufValue::F32(_) => "f32",
            GgufValue::F64(_) => "f64",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
        }
    }

    /// The GGUF type id of this value.
    pub fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => TYPE_U8,
            GgufValue::I8(_) => TYPE_I8,
            GgufValue::U16(_) => TYPE_U16,
            GgufValue::I16(_) => TYPE_I16,
            GgufValue::U32(_) => TYPE_U32,
            GgufValue::I32(_) => TYPE_I32,
            GgufValue::F32(_) => TYPE_F32,
            GgufValue::Bool(_) => TYPE_BOOL,
            GgufValue::String(_) => TYPE_STRING,
            GgufValue::Array(_) => TYPE_ARRAY,
            GgufValue::U64(_) => TYPE_U64,
            GgufValue::I64(_) => TYPE_I64,
            GgufValue::F64(_) => TYPE_F64,
        }
    }
}

/// GGUF metadata value type ids (`gguf_metadata_value_type`).
pub const TYPE_U8: u32 = 0;
pub const TYPE_I8: u32 = 1;
pub const TYPE_U16: u32 = 2;
pub const TYPE_I16: u32 = 3;
pub const TYPE_U32: u32 = 4;
pub const TYPE_I32: u32 = 5;
pub const TYPE_F32: u32 = 6;
pub const TYPE_BOOL: u32 = 7;
pub const TYPE_STRING: u32 = 8;
pub const TYPE_ARRAY: u32 = 9;
pub const TYPE_U64: u32 = 10;
pub const TYPE_I64: u32 = 11;
pub const TYPE_F64: u32 = 12;

/// Smallest encoded size of a value of type `type_id`, or `None` for an unknown id.
fn min_encoded_size(type_id: u32) -> Option<u64> {
    Some(match type_id {
        TYPE_U8 | TYPE_I8 | TYPE_BOOL => 1,
        TYPE_U16 | TYPE_I16 => 2,
        TYPE_U32 | TYPE_I32 | TYPE_F32 => 4,
        TYPE_U64 | TYPE_I64 | TYPE_F64 => 8,
        TYPE_STRING => 8,    // u64 length
        TYPE_ARRAY => 4 + 8, // element type + count
        _ => return None,
    })
}

/// Parses one value of type `type_id` (already read) for metadata key `key`.
pub(crate) fn read_value(
    c: &mut Cursor<'_>,
    type_id: u32,
    type_offset: usize,
    key: &str,
    depth: usize,
) -> Result<GgufValue, GgufError> {
    Ok(match type_id {
        TYPE_U8 => GgufValue::U8(c.u8("u8 value")?),
        TYPE_I8 => GgufValue::I8(c.u8("i8 value")? as i8),
        TYPE_U16 => GgufValue::U16(c.u16("u16 value")?),
        TYPE_I16 => GgufValue::I16(c.u16("i16 value")? as i16),
        TYPE_U32 => GgufValue::U32(c.u32("u32 value")?),
        TYPE_I32 => GgufValue::I32(c.u32("i32 value")? as i32),
        TYPE_U64 => GgufValue::U64(c.u64("u64 value")?),
        TYPE_I64 => GgufValue::I64(c.u64("i64 value")? as i64),
        TYPE_F32 => GgufValue::F32(f32::from_bits(c.u32("f32 value")?)),
        TYPE_F64 => GgufValue::F64(f64::from_bits(c.u64("f64 value")?)),
        TYPE_BOOL => {
            let offset = c.pos();
            match c.u8("bool value")? {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                value => return Err(GgufError::InvalidBool { value, offset: offset as u64, key: key.to_string() }),
            }
        }
        TYPE_STRING => GgufValue::String(c.string("string value")?),
        TYPE_ARRAY => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(GgufError::ArrayTooDeep {
                    max: MAX_ARRAY_DEPTH,
                    offset: type_offset as u64,
                    key: key.to_string(),
                });
            }
            let elem_offset = c.pos();
            let elem_type = c.u32("array element type")?;
            let Some(min_size) = min_encoded_size(elem_type) else {
                return Err(GgufError::UnknownValueType {
                    type_id: elem_type,
                    offset: elem_offset as u64,
                    key: key.to_string(),
                });
            };
            let count_offset = c.pos();
            let count = c.u64("array length")?;
            let cap = c.check_count(count, min_size, "array length", count_offset)?;
            let mut items = Vec::with_capacity(cap);
            for _ in 0..count {
                items.push(read_value(c, elem_type, elem_offset, key, depth + 1)?);
            }
            GgufValue::Array(items)
        }
        _ => return Err(GgufError::UnknownValueType { type_id, offset: type_offset as u64, key: key.to_string() }),
    })
}
