//! The protobuf wire format (<https://protobuf.dev/programming-guides/encoding/>), as much of it as
//! OTLP's trace messages need: spans are encoded as they end ([`super::Span`]), and the broker's OTLP
//! exporter wraps them in a request. Field numbers are those of opentelemetry-proto's trace.proto,
//! common.proto, resource.proto and trace_service.proto.

/// Wire type of varint fields.
pub const VARINT: u32 = 0;
/// Wire type of 8-byte fields.
pub const FIXED64: u32 = 1;
/// Wire type of length-delimited fields (bytes, strings, messages).
pub const LEN: u32 = 2;
/// Wire type of 4-byte fields.
pub const FIXED32: u32 = 5;

/// Appends `v` as a varint.
#[inline]
pub fn varint(buf: &mut Vec<u8>, mut v: u64) {
    if v < 0x80 {
        buf.push(v as u8);
        return;
    }
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// The length of `v` as a varint.
#[inline]
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends a field's tag.
#[inline]
pub fn tag(buf: &mut Vec<u8>, field: u32, wire: u32) {
    varint(buf, u64::from(field << 3 | wire));
}

/// A bytes field (written even when empty).
#[inline]
pub fn bytes_field(buf: &mut Vec<u8>, field: u32, b: &[u8]) {
    tag(buf, field, LEN);
    varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// A string field; proto3 leaves an empty one out.
#[inline]
pub fn string_field(buf: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        bytes_field(buf, field, s.as_bytes());
    }
}

/// A varint field; proto3 leaves a zero out.
#[inline]
pub fn uint_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, VARINT);
        varint(buf, v);
    }
}

/// A `fixed64` field; proto3 leaves a zero out.
#[inline]
pub fn fixed64_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, FIXED64);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// A `fixed32` field; proto3 leaves a zero out.
#[inline]
pub fn fixed32_field(buf: &mut Vec<u8>, field: u32, v: u32) {
    if v != 0 {
        tag(buf, field, FIXED32);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// A message field whose content `write` appends; its length goes in front once known. `guess` bytes
/// are kept for the length (1 for up to 127 bytes, 2 for up to 16 KiB, 3 for up to 2 MiB), so the
/// content moves only when the guess was wrong.
pub fn message(buf: &mut Vec<u8>, field: u32, guess: usize, write: impl FnOnce(&mut Vec<u8>)) {
    tag(buf, field, LEN);
    let at = buf.len();
    buf.resize(at + guess, 0);
    write(buf);
    let len = buf.len() - at - guess;
    let mut prefix = [0u8; 10];
    let n = {
        let mut v = len as u64;
        let mut n = 0;
        while v >= 0x80 {
            prefix[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        prefix[n] = v as u8;
        n + 1
    };
    match n.cmp(&guess) {
        std::cmp::Ordering::Equal => {}
        std::cmp::Ordering::Less => {
            buf.copy_within(at + guess.., at + n);
            buf.truncate(at + n + len);
        }
        std::cmp::Ordering::Greater => {
            buf.splice(at..at, std::iter::repeat_n(0, n - guess));
        }
    }
    buf[at..at + n].copy_from_slice(&prefix[..n]);
}

/// One value of an `AnyValue` (common.proto).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    /// `string_value`
    Str(&'a str),
    /// `bool_value`
    Bool(bool),
    /// `int_value`
    Int(i64),
    /// `double_value`
    Double(f64),
}

impl Scalar<'_> {
    /// The encoded `AnyValue` message's length (the `oneof` member is always written).
    #[inline]
    pub fn encoded_len(&self) -> usize {
        match self {
            Scalar::Str(s) => 1 + varint_len(s.len() as u64) + s.len(),
            Scalar::Bool(_) => 2,
            Scalar::Int(i) => 1 + varint_len(*i as u64),
            Scalar::Double(_) => 9,
        }
    }

    /// Appends the `AnyValue` message's content.
    #[inline]
    pub fn put(&self, buf: &mut Vec<u8>) {
        match self {
            Scalar::Str(s) => bytes_field(buf, 1, s.as_bytes()),
            Scalar::Bool(b) => {
                tag(buf, 2, VARINT);
                buf.push(u8::from(*b));
            }
            Scalar::Int(i) => {
                tag(buf, 3, VARINT);
                varint(buf, *i as u64);
            }
            Scalar::Double(d) => {
                tag(buf, 4, FIXED64);
                buf.extend_from_slice(&d.to_le_bytes());
            }
        }
    }
}

impl<'a> From<&'a str> for Scalar<'a> {
    fn from(s: &'a str) -> Self {
        Scalar::Str(s)
    }
}

impl<'a> From<&'a String> for Scalar<'a> {
    fn from(s: &'a String) -> Self {
        Scalar::Str(s)
    }
}

impl From<bool> for Scalar<'_> {
    fn from(b: bool) -> Self {
        Scalar::Bool(b)
    }
}

impl From<i64> for Scalar<'_> {
    fn from(i: i64) -> Self {
        Scalar::Int(i)
    }
}

impl From<f64> for Scalar<'_> {
    fn from(d: f64) -> Self {
        Scalar::Double(d)
    }
}

/// A `KeyValue` message with a scalar value, as field `field` of its parent.
#[inline]
pub fn key_value(buf: &mut Vec<u8>, field: u32, key: &str, value: Scalar<'_>) {
    // The common case, a short key and a short string value: every tag and length is one byte.
    if let Scalar::Str(s) = value {
        let value_len = 2 + s.len();
        let kv_len = 2 + key.len() + 2 + value_len;
        if field < 16 && !key.is_empty() && kv_len < 128 {
            buf.reserve(2 + kv_len);
            buf.extend_from_slice(&[(field << 3 | LEN) as u8, kv_len as u8, 0x0a, key.len() as u8]);
            buf.extend_from_slice(key.as_bytes());
            buf.extend_from_slice(&[0x12, value_len as u8, 0x0a, s.len() as u8]);
            buf.extend_from_slice(s.as_bytes());
            return;
        }
    }
    let key_len = if key.is_empty() { 0 } else { 1 + varint_len(key.len() as u64) + key.len() };
    let value_len = value.encoded_len();
    tag(buf, field, LEN);
    varint(buf, (key_len + 1 + varint_len(value_len as u64) + value_len) as u64);
    string_field(buf, 1, key);
    tag(buf, 2, LEN);
    varint(buf, value_len as u64);
    value.put(buf);
}

#[cfg(test)]
mod tests {
    use super::{key_value, Scalar};

    /// The short-string fast path writes what the general encoding would.
    #[test]
    fn short_and_long_key_values_encode_alike() {
        fn general(field: u32, key: &str, s: &str) -> Vec<u8> {
            let mut b = Vec::new();
            super::tag(&mut b, field, super::LEN);
            let value_len = Scalar::Str(s).encoded_len();
            let key_len = 1 + super::varint_len(key.len() as u64) + key.len();
            super::varint(&mut b, (key_len + 1 + super::varint_len(value_len as u64) + value_len) as u64);
            super::string_field(&mut b, 1, key);
            super::tag(&mut b, 2, super::LEN);
            super::varint(&mut b, value_len as u64);
            Scalar::Str(s).put(&mut b);
            b
        }
        for (key, s) in [("k", ""), ("messaging.system", "nats"), ("k", &"x".repeat(119)), ("k", &"x".repeat(500))] {
            let mut fast = Vec::new();
            key_value(&mut fast, 9, key, Scalar::Str(s));
            assert_eq!(fast, general(9, key, s), "{key}={} bytes", s.len());
        }
    }
}
