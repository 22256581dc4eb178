//! A little-endian byte cursor with bounds checks.
//!
//! All reads of file data go through [`Cursor`]: every read checks the remaining length first and
//! returns [`GgufError::Truncated`] naming what was being read and where, and every count read from
//! the file can be checked against the remaining bytes before anything is allocated for it.
use super::error::GgufError;

pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    /// Current absolute offset in the file.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Takes the next `n` bytes.
    pub(crate) fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let available = self.remaining();
        if n > available as u64 {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos as u64,
                needed: n,
                available: available as u64,
            });
        }
        // `n <= available`, so it fits in usize and the slice is in bounds.
        let n = n as usize;
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Checks that `count` items of at least `min_size` bytes each can still fit in the file, and
    /// returns a safe capacity to pre-allocate for them (never more than the remaining bytes allow).
    pub(crate) fn check_count(&self, count: u64, min_size: u64, what: &str, offset: usize) -> Result<usize, GgufError> {
        let min_bytes = count as u128 * min_size as u128;
        let available = self.remaining() as u64;
        if min_bytes > available as u128 {
            return Err(GgufError::CountTooLarge {
                what: what.to_string(),
                count,
                offset: offset as u64,
                min_bytes,
                available,
            });
        }
        // count * min_size <= available <= usize::MAX, so count fits in usize when min_size >= 1.
        Ok(count.min(available / min_size.max(1)) as usize)
    }

    /// A GGUF string: u64 length, then that many bytes of UTF-8.
    pub(crate) fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let start = self.pos;
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(source) => Err(GgufError::InvalidUtf8 { what: what.to_string(), offset: start as u64, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_bounds() {
        let data = [1u8, 2, 0, 3, 0, 0, 0, 4];
        let mut c = Cursor::new(&data);
        assert_eq!(c.u8("a").ok(), Some(1));
        assert_eq!(c.u16("b").ok(), Some(2));
        assert_eq!(c.u32("c").ok(), Some(3));
        assert_eq!(c.remaining(), 1);
        assert!(matches!(c.u16("d"), Err(GgufError::Truncated { offset: 7, needed: 2, available: 1, .. })));
        assert!(matches!(c.take(u64::MAX, "e"), Err(GgufError::Truncated { .. })));
        assert!(c.check_count(u64::MAX, 8, "f", 0).is_err());
        assert_eq!(c.check_count(1, 1, "g", 0).ok(), Some(1));
        assert_eq!(c.check_count(0, 0, "h", 0).ok(), Some(0));
    }
}
