//! PostgreSQL's binary `COPY … TO STDOUT` format, read without a driver row per event: the
//! whole-log verification reads a million rows, and decoding each through a driver row (an
//! allocation, a type check per column) cost more than hashing it.
//!
//! Format (PostgreSQL docs, "COPY", binary format): an 11-byte signature, a 32-bit flags field,
//! a 32-bit header-extension length and that many bytes; then tuples, each a 16-bit field count
//! followed by, per field, a 32-bit length (−1 for NULL) and that many bytes; then a 16-bit −1
//! trailer. All integers are big-endian. Invariant: [`Splitter`] hands out only whole tuples, so
//! each batch can be decoded on its own, on any thread.

use super::StoreError;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

fn bad(what: &str) -> StoreError {
    StoreError::Database(format!("unexpected binary COPY data: {what}"))
}

fn be_i16(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Where the tuple starting at `at` ends; `Ok(None)` when `b` does not hold all of it yet,
/// `Ok(Some(None))` at the trailer.
fn tuple_end(b: &[u8], at: usize) -> Result<Option<Option<usize>>, StoreError> {
    let Some(fields) = be_i16(b, at) else {
        return Ok(None);
    };
    if fields == -1 {
        return Ok(Some(None));
    }
    if fields < 0 {
        return Err(bad("negative field count"));
    }
    let mut p = at + 2;
    for _ in 0..fields {
        let Some(len) = be_i32(b, p) else {
            return Ok(None);
        };
        p += 4;
        if len > 0 {
            p += len as usize;
        } else if len < -1 {
            return Err(bad("negative field length"));
        }
    }
    Ok((p <= b.len()).then_some(Some(p)))
}

/// Cuts the COPY stream's chunks into batches of whole tuples.
#[derive(Debug, Default)]
pub struct Splitter {
    buf: Vec<u8>,
    /// Header read.
    started: bool,
    /// Bytes of `buf` known to be whole tuples.
    whole: usize,
    ended: bool,
}

impl Splitter {
    /// Takes the next chunk; returns a batch of whole tuples once at least `batch_bytes` are
    /// ready.
    pub fn push(
        &mut self,
        chunk: &[u8],
        batch_bytes: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if self.ended {
            return Err(bad("data after the trailer"));
        }
        self.buf.extend_from_slice(chunk);
        if !self.started {
            if self.buf.len() < 19 {
                return Ok(None);
            }
            if &self.buf[..11] != SIGNATURE {
                return Err(bad("no signature"));
            }
            let ext = be_i32(&self.buf, 15).ok_or_else(|| bad("short header"))?;
            let header = 19 + ext.max(0) as usize;
            if self.buf.len() < header {
                return Ok(None);
            }
            self.buf.drain(..header);
            self.started = true;
        }
        loop {
            match tuple_end(&self.buf, self.whole)? {
                None => break,
                Some(None) => {
                    self.ended = true;
                    self.buf.truncate(self.whole);
                    break;
                }
                Some(Some(end)) => self.whole = end,
            }
        }
        if self.whole >= batch_bytes {
            return Ok(Some(self.take()));
        }
        Ok(None)
    }

    fn take(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.whole);
        self.whole = 0;
        std::mem::replace(&mut self.buf, rest)
    }

    /// The last whole tuples, at the end of the stream (an error when it stopped mid-tuple or
    /// before its trailer).
    pub fn finish(mut self) -> Result<Vec<u8>, StoreError> {
        if !self.ended || self.buf.len() != self.whole {
            return Err(bad("the stream ended before its trailer"));
        }
        Ok(self.take())
    }
}

/// Each tuple of a batch from [`Splitter`], as its `N` fields (`None` for NULL).
pub fn for_each_tuple<const N: usize>(
    batch: &[u8],
    mut visit: impl FnMut(&[Option<&[u8]>; N]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut at = 0;
    while at < batch.len() {
        let fields = be_i16(batch, at).ok_or_else(|| bad("short tuple"))?;
        if fields as usize != N {
            return Err(bad("wrong field count"));
        }
        at += 2;
        let mut out: [Option<&[u8]>; N] = [None; N];
        for slot in out.iter_mut() {
            let len = be_i32(batch, at).ok_or_else(|| bad("short tuple"))?;
            at += 4;
            if len >= 0 {
                let end = at + len as usize;
                *slot = Some(batch.get(at..end).ok_or_else(|| bad("short field"))?);
                at = end;
            }
        }
        visit(&out)?;
    }
    Ok(())
}

/// A binary `int8`.
pub fn int8(field: Option<&[u8]>) -> Result<i64, StoreError> {
    let b: [u8; 8] = field
        .and_then(|f| f.try_into().ok())
        .ok_or_else(|| bad("not an int8"))?;
    Ok(i64::from_be_bytes(b))
}

/// A binary `text`/`json` value as UTF-8.
pub fn text(field: Option<&[u8]>) -> Result<&str, StoreError> {
    std::str::from_utf8(field.ok_or_else(|| bad("NULL text"))?).map_err(|_| bad("text not UTF-8"))
}

/// A binary `timestamptz`: microseconds since 2000-01-01 00:00 UTC.
pub fn timestamptz(field: Option<&[u8]>) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    const EPOCH_2000_US: i64 = 946_684_800_000_000;
    let us = int8(field)?;
    chrono::DateTime::from_timestamp_micros(us.saturating_add(EPOCH_2000_US))
        .ok_or_else(|| bad("timestamp out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = (fields.len() as i16).to_be_bytes().to_vec();
        for f in fields {
            match f {
                Some(b) => {
                    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    out.extend_from_slice(b);
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        out
    }

    #[test]
    fn chunks_cut_anywhere_give_back_every_tuple_whole() {
        let mut stream = SIGNATURE.to_vec();
        stream.extend_from_slice(&0i32.to_be_bytes());
        stream.extend_from_slice(&3i32.to_be_bytes());
        stream.extend_from_slice(b"ext");
        let mut expected = Vec::new();
        for i in 0..50i64 {
            let name = format!("案件-{i}");
            let n = i.to_be_bytes();
            stream.extend(tuple(&[Some(name.as_bytes()), Some(&n), None]));
            expected.push((name, i));
        }
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        for cut in [1, 2, 7, 19, 20, 64, 1000] {
            let mut splitter = Splitter::default();
            let mut batches = Vec::new();
            for chunk in stream.chunks(cut) {
                if let Some(b) = splitter.push(chunk, 100).unwrap() {
                    batches.push(b);
                }
            }
            batches.push(splitter.finish().unwrap());
            let mut got = Vec::new();
            for b in &batches {
                for_each_tuple::<3>(b, |f| {
                    assert!(f[2].is_none());
                    got.push((text(f[0])?.to_string(), int8(f[1])?));
                    Ok(())
                })
                .unwrap();
            }
            assert_eq!(got, expected, "chunks of {cut}");
        }
        let mut cut_short = Splitter::default();
        cut_short
            .push(&stream[..stream.len() - 5], 1 << 20)
            .unwrap();
        assert!(cut_short.finish().is_err());
        assert!(Splitter::default()
            .push(b"NOTCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0", 1)
            .is_err());
    }

    #[test]
    fn timestamps_count_from_2000() {
        let t = timestamptz(Some(&0i64.to_be_bytes())).unwrap();
        assert_eq!(t.to_rfc3339(), "2000-01-01T00:00:00+00:00");
        let t = timestamptz(Some(&1_000_001i64.to_be_bytes())).unwrap();
        assert_eq!(t.timestamp_micros(), 946_684_801_000_001);
    }
}
