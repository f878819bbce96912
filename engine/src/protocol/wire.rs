//! Bounds-checked big-endian reading and writing of Kafka's primitive types
//! (classic, and the few flexible ones: unsigned varints and compact
//! strings), for the few layouts encoded by hand.
//! Every read returns None instead of panicking on short or bad input.

pub struct WireReader<'a> {
    buf: &'a [u8],
    position: usize,
}

impl<'a> WireReader<'a> {
    pub fn new(buf: &'a [u8]) -> WireReader<'a> {
        WireReader { buf, position: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.position == self.buf.len()
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.position.checked_add(n)?;
        let out = self.buf.get(self.position..end)?;
        self.position = end;
        Some(out)
    }

    pub fn i8(&mut self) -> Option<i8> {
        Some(self.take(1)?[0] as i8)
    }

    pub fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    pub fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    pub fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    /// An i32 array length in `0..=max`.
    pub fn array_len(&mut self, max: i32) -> Option<usize> {
        let n = self.i32()?;
        (0..=max).contains(&n).then_some(n as usize)
    }

    /// i16-length string; -1 is null.
    pub fn nullable_string(&mut self) -> Option<Option<String>> {
        let length = self.i16()?;
        if length == -1 {
            return Some(None);
        }
        let bytes = self.take(usize::try_from(length).ok()?)?;
        Some(Some(String::from_utf8(bytes.to_vec()).ok()?))
    }

    pub fn string(&mut self) -> Option<String> {
        self.nullable_string()?
    }

    /// Unsigned LEB128 varint of at most 5 bytes (a u32).
    pub fn uvarint(&mut self) -> Option<u32> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let byte = self.take(1)?[0];
            if i == 4 && byte > 0x0f {
                return None; // past u32
            }
            value |= ((byte & 0x7f) as u32) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// Compact string (length + 1 as a uvarint; 0 is null).
    pub fn compact_nullable_string(&mut self) -> Option<Option<String>> {
        let length = self.uvarint()?;
        if length == 0 {
            return Some(None);
        }
        let bytes = self.take(length as usize - 1)?;
        Some(Some(String::from_utf8(bytes.to_vec()).ok()?))
    }

    pub fn compact_string(&mut self) -> Option<String> {
        self.compact_nullable_string()?
    }

    /// i32-length bytes; -1 reads as empty.
    pub fn bytes(&mut self) -> Option<Vec<u8>> {
        let length = self.i32()?;
        if length == -1 {
            return Some(Vec::new());
        }
        Some(self.take(usize::try_from(length).ok()?)?.to_vec())
    }
}

#[derive(Default)]
pub struct WireWriter {
    pub buf: Vec<u8>,
}

impl WireWriter {
    pub fn i8(&mut self, v: i8) -> &mut Self {
        self.buf.push(v as u8);
        self
    }
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Strings longer than i16::MAX bytes are cut (callers bound them first).
    pub fn string(&mut self, s: &str) -> &mut Self {
        let bytes = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
        self.i16(bytes.len() as i16);
        self.buf.extend_from_slice(bytes);
        self
    }
    pub fn nullable_string(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.string(s),
            None => self.i16(-1),
        }
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.i32(b.len() as i32);
        self.buf.extend_from_slice(b);
        self
    }
    /// Compact string: length + 1 as a uvarint, then the bytes.
    pub fn compact_string(&mut self, s: &str) -> &mut Self {
        self.uvarint(s.len() as u32 + 1);
        self.buf.extend_from_slice(s.as_bytes());
        self
    }
    /// Unsigned LEB128 varint, as flexible versions use for lengths and
    /// tagged-field counts.
    pub fn uvarint(&mut self, mut v: u32) -> &mut Self {
        while v >= 0x80 {
            self.buf.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
        self
    }
}
