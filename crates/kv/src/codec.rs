//! Little-endian, length-prefixed primitives shared by the binary formats.
//! Every length read is checked against what remains, so hostile input cannot make
//! the decoder allocate or panic.

use crate::KvError;

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], KvError> {
        if self.buf.len() < n {
            return Err(KvError::malformed(
                self.what,
                format!("needs {n} more bytes, {} left", self.buf.len()),
            ));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, KvError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, KvError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, KvError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    pub(crate) fn array32(&mut self) -> Result<[u8; 32], KvError> {
        let mut b = [0u8; 32];
        b.copy_from_slice(self.take(32)?);
        Ok(b)
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], KvError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A count of items each at least `min_item` bytes long, bounded by what remains.
    pub(crate) fn count(&mut self, min_item: usize) -> Result<usize, KvError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.buf.len() {
            return Err(KvError::malformed(
                self.what,
                format!("count {n} exceeds the input"),
            ));
        }
        Ok(n)
    }

    pub(crate) fn finish(self) -> Result<(), KvError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(KvError::malformed(
                self.what,
                format!("{} trailing bytes", self.buf.len()),
            ))
        }
    }
}
