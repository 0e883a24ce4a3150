//! The index file's bytes (docs/FORMAT.md, section 2): a header and one fixed-size record per frame, each with its
//! own CRC so that a damaged or scribbled index is detected rather than trusted. Pure byte work; the policy (when
//! to trust, extend or rebuild) is the Python layer's (`conversation_codec.index`).

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pub const MAGIC: [u8; 8] = *b"CCIDX\x00\x01\x00";
pub const HEADER_LEN: usize = 32;
pub const RECORD_LEN: usize = 32;

/// Where one frame sits in the data file and which messages it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub length: u32,
    pub count: u32,
    /// Messages in the frames before this one.
    pub before: u64,
    /// CRC-32 of the frame's bytes as stored.
    pub crc: u32,
}

impl Record {
    pub fn to_bytes(self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..12].copy_from_slice(&self.length.to_le_bytes());
        b[12..16].copy_from_slice(&self.count.to_le_bytes());
        b[16..24].copy_from_slice(&self.before.to_le_bytes());
        b[24..28].copy_from_slice(&self.crc.to_le_bytes());
        let own = crc32fast::hash(&b[..28]);
        b[28..32].copy_from_slice(&own.to_le_bytes());
        b
    }

    /// The record in `b`, or None when its own CRC does not match (a damaged record).
    pub fn from_bytes(b: &[u8]) -> Option<Record> {
        let b: &[u8; RECORD_LEN] = b.try_into().ok()?;
        if crc32fast::hash(&b[..28]) != u32_at(b, 28) {
            return None;
        }
        Some(Record {
            offset: u64_at(b, 0),
            length: u32_at(b, 8),
            count: u32_at(b, 12),
            before: u64_at(b, 16),
            crc: u32_at(b, 24),
        })
    }

    pub fn end(&self) -> u64 {
        self.offset + self.length as u64
    }
}

pub fn header(identity: u64) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..16].copy_from_slice(&identity.to_le_bytes());
    let own = crc32fast::hash(&b[..24]);
    b[24..28].copy_from_slice(&own.to_le_bytes());
    b
}

/// The data file identity a header was written for, or None for a damaged or foreign header.
pub fn parse_header(b: &[u8]) -> Option<u64> {
    let b: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
    if b[0..8] != MAGIC || crc32fast::hash(&b[..24]) != u32_at(b, 24) {
        return None;
    }
    Some(u64_at(b, 8))
}

/// Records that follow on from each other: every frame starts where the previous ended, and the message
/// numbers add up. `first` is where the first of them must start (offset and messages before).
pub fn parse_records(b: &[u8], first: Option<(u64, u64)>) -> Option<Vec<Record>> {
    if b.len() % RECORD_LEN != 0 {
        return None;
    }
    let mut records = Vec::with_capacity(b.len() / RECORD_LEN);
    let mut expect = first;
    for chunk in b.chunks_exact(RECORD_LEN) {
        let r = Record::from_bytes(chunk)?;
        if let Some((offset, before)) = expect {
            if r.offset != offset || r.before != before {
                return None;
            }
        }
        expect = Some((r.end(), r.before + r.count as u64));
        records.push(r);
    }
    Some(records)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

// ---- Python functions ------------------------------------------------------------------------------------------

/// A record as Python sees it: (offset, length, count, before, crc).
type RecordTuple = (u64, u32, u32, u64, u32);

/// CRC-32 (as gzip's) of a bytes-like object.
#[pyfunction]
#[pyo3(signature = (data, /))]
pub fn crc32(data: &Bound<'_, PyAny>) -> PyResult<u32> {
    let buffer = PyBuffer::<u8>::get(data)?;
    if !buffer.is_c_contiguous() {
        return Err(PyValueError::new_err("crc32() needs contiguous bytes"));
    }
    // SAFETY: a contiguous buffer of `len_bytes()` bytes, alive while `buffer` is, and not written during the
    // call: its exporters here are bytes and our own read-only Encoded, and the GIL is held.
    let bytes =
        unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, buffer.len_bytes()) };
    Ok(crc32fast::hash(bytes))
}

/// The 32-byte index header for a data file of the given identity.
#[pyfunction]
#[pyo3(signature = (identity, /))]
pub fn index_header(py: Python<'_>, identity: u64) -> Bound<'_, PyBytes> {
    PyBytes::new(py, &header(identity))
}

/// The identity in an index header, or None when the header is damaged or not an index's.
#[pyfunction]
#[pyo3(signature = (data, /))]
pub fn parse_index_header(data: &[u8]) -> Option<u64> {
    parse_header(data)
}

/// One index record per `(offset, length, count, before, crc)` tuple, as bytes.
#[pyfunction]
#[pyo3(signature = (records, /))]
pub fn pack_records<'py>(py: Python<'py>, records: Vec<RecordTuple>) -> Bound<'py, PyBytes> {
    let mut out = Vec::with_capacity(records.len() * RECORD_LEN);
    for (offset, length, count, before, crc) in records {
        out.extend_from_slice(
            &Record {
                offset,
                length,
                count,
                before,
                crc,
            }
            .to_bytes(),
        );
    }
    PyBytes::new(py, &out)
}

/// The `(offset, length, count, before, crc)` tuples of consecutive records; raises ValueError if any record is
/// damaged or they do not follow on from each other (or from `first`, an `(offset, before)` pair).
#[pyfunction]
#[pyo3(signature = (data, /, first = None))]
pub fn unpack_records(data: &[u8], first: Option<(u64, u64)>) -> PyResult<Vec<RecordTuple>> {
    let records =
        parse_records(data, first).ok_or_else(|| PyValueError::new_err("damaged index records"))?;
    Ok(records
        .into_iter()
        .map(|r| (r.offset, r.length, r.count, r.before, r.crc))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(offset: u64, before: u64) -> Record {
        Record {
            offset,
            length: 100,
            count: 3,
            before,
            crc: 0xDEADBEEF,
        }
    }

    #[test]
    fn records_round_trip() {
        let r = sample(12345, 7);
        assert_eq!(Record::from_bytes(&r.to_bytes()), Some(r));
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let bytes = sample(1, 2).to_bytes();
        for bit in 0..RECORD_LEN * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(Record::from_bytes(&damaged), None, "bit {bit}");
        }
        let h = header(42);
        for bit in 0..HEADER_LEN * 8 {
            let mut damaged = h;
            damaged[bit / 8] ^= 1 << (bit % 8);
            // The reserved tail bytes are not covered: a flip there changes nothing that is read.
            if bit / 8 < 28 {
                assert_eq!(parse_header(&damaged), None, "bit {bit}");
            }
        }
        assert_eq!(parse_header(&h), Some(42));
    }

    #[test]
    fn records_must_follow_on() {
        let a = sample(0, 0);
        let b = sample(100, 3);
        let good = [a.to_bytes(), b.to_bytes()].concat();
        assert_eq!(parse_records(&good, Some((0, 0))), Some(vec![a, b]));
        let gap = [a.to_bytes(), sample(101, 3).to_bytes()].concat();
        assert_eq!(parse_records(&gap, None), None);
        let miscount = [a.to_bytes(), sample(100, 4).to_bytes()].concat();
        assert_eq!(parse_records(&miscount, None), None);
        assert_eq!(parse_records(&good[..40], None), None);
        assert_eq!(parse_records(&good, Some((1, 0))), None);
    }
}
