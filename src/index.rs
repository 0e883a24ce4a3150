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

    /// Where the frame ends; None past u64 (a crafted record: its CRC is no defence against a forger).
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(u64::from(self.length))
    }
}

/// The header for a data file of identity (st_dev, st_ino): an inode number alone is reused across file systems.
pub fn header(dev: u64, ino: u64) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..16].copy_from_slice(&ino.to_le_bytes());
    b[16..24].copy_from_slice(&dev.to_le_bytes());
    let own = crc32fast::hash(&b[..24]);
    b[24..28].copy_from_slice(&own.to_le_bytes());
    b
}

/// The data file identity (st_dev, st_ino) a header was written for, or None for a damaged or foreign header.
pub fn parse_header(b: &[u8]) -> Option<(u64, u64)> {
    let b: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
    if b[0..8] != MAGIC || crc32fast::hash(&b[..24]) != u32_at(b, 24) {
        return None;
    }
    Some((u64_at(b, 16), u64_at(b, 8)))
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
        expect = Some((r.end()?, r.before.checked_add(u64::from(r.count))?));
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
/// A record as Python hands it over: length and count as any int, so that one too large for the file's u32
/// fields is a ValueError here rather than an OverflowError in the conversion, or a silent truncation.
type RecordArgs = (u64, u64, u64, u64, u32);

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

/// The 32-byte index header for the data file of identity (`st_dev`, `st_ino`).
#[pyfunction]
#[pyo3(signature = (dev, ino, /))]
pub fn index_header(py: Python<'_>, dev: u64, ino: u64) -> Bound<'_, PyBytes> {
    PyBytes::new(py, &header(dev, ino))
}

/// The identity (`st_dev`, `st_ino`) in an index header, or None when the header is damaged or not an index's.
#[pyfunction]
#[pyo3(signature = (data, /))]
pub fn parse_index_header(data: &[u8]) -> Option<(u64, u64)> {
    parse_header(data)
}

/// The records' bytes; an error for a length or count that does not fit the record's 32 bits.
pub fn pack(records: &[RecordArgs]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(records.len() * RECORD_LEN);
    for &(offset, length, count, before, crc) in records {
        let too_large = |what: &str, value: u64| {
            format!(
                "a frame {what} of {value} does not fit an index record (at most {})",
                u32::MAX
            )
        };
        let record = Record {
            offset,
            length: u32::try_from(length).map_err(|_| too_large("length", length))?,
            count: u32::try_from(count).map_err(|_| too_large("count", count))?,
            before,
            crc,
        };
        out.extend_from_slice(&record.to_bytes());
    }
    Ok(out)
}

/// One index record per `(offset, length, count, before, crc)` tuple, as bytes; ValueError for a length or count
/// that does not fit the record's 32 bits (the caller then keeps no index for the file).
#[pyfunction]
#[pyo3(signature = (records, /))]
pub fn pack_records<'py>(
    py: Python<'py>,
    records: Vec<RecordArgs>,
) -> PyResult<Bound<'py, PyBytes>> {
    let out = pack(&records).map_err(PyValueError::new_err)?;
    Ok(PyBytes::new(py, &out))
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
        let h = header(7, 42);
        for bit in 0..HEADER_LEN * 8 {
            let mut damaged = h;
            damaged[bit / 8] ^= 1 << (bit % 8);
            // The reserved tail bytes are not covered: a flip there changes nothing that is read.
            if bit / 8 < 28 {
                assert_eq!(parse_header(&damaged), None, "bit {bit}");
            }
        }
        assert_eq!(parse_header(&h), Some((7, 42)));
    }

    #[test]
    fn identity_is_device_and_inode() {
        // The same inode number on another device (another file system) is another file.
        let h = header(0x0123_4567_89AB_CDEF, 42);
        assert_eq!(parse_header(&h), Some((0x0123_4567_89AB_CDEF, 42)));
        assert_eq!(h[16..24], 0x0123_4567_89AB_CDEFu64.to_le_bytes());
        assert_ne!(parse_header(&header(1, 42)), parse_header(&header(2, 42)));
    }

    #[test]
    fn lengths_over_u32_are_refused_not_truncated() {
        let fits = pack(&[(0, u64::from(u32::MAX), 1, 0, 9)]).unwrap();
        assert_eq!(Record::from_bytes(&fits).unwrap().length, u32::MAX);
        // Truncated, 4 GiB + 100 bytes used to be recorded as 100.
        let err = pack(&[(0, (1 << 32) + 100, 1, 0, 9)]).unwrap_err();
        assert!(err.contains("length of 4294967396"), "{err}");
        assert!(pack(&[(0, 100, 1 << 32, 0, 9)]).is_err());
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
        // A forged record whose end is past u64: refused, not an overflow panic.
        let far = Record {
            offset: u64::MAX - 1,
            ..sample(0, 0)
        };
        assert_eq!(
            parse_records(&[far.to_bytes(), a.to_bytes()].concat(), None),
            None
        );
    }
}
