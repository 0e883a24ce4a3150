//! Gzip members for frames (docs/FORMAT.md, 1.2 and 1.3): writing them, stepping through a stream of them, and
//! inflating a stream. Our members carry a "CC" extra subfield with their size and message count, so that a reader
//! steps from member to member and counts messages without inflating; members another tool wrote are still read,
//! by inflating them to find where they end. libdeflate does the whole-buffer work (measured fastest, with the best
//! ratio, at level 6); flate2 streams the foreign members, whose end and size are known only once inflated.

use std::io::{ErrorKind, Read};
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::thread;

use libdeflate_sys as sys;
use libdeflater::{CompressionLvl, Compressor};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::frames::count_messages;

pub const HEADER_LEN: usize = 24;
const TRAILER_LEN: usize = 8;
/// Bytes 0–3 of our header: ID1, ID2, CM = deflate, FLG = FEXTRA.
const START: [u8; 4] = [0x1F, 0x8B, 8, 4];
/// Bytes 10–15: XLEN = 12, then the subfield "CC" of length 8. MTIME, XFL and OS are not checked: another
/// writer of the format may set them.
const EXTRA: [u8; 6] = [12, 0, b'C', b'C', 8, 0];
/// Deflate's densest code spends 2 bits on a 258-byte match (RFC 1951). An ISIZE above this many times the member
/// is damage, caught before we allocate for it.
const MAX_RATIO: u64 = 1032;
/// Below this many bytes of work in all, starting threads costs more than they save.
const PARALLEL_MIN: usize = 1 << 20;

/// One gzip member of `jsonl` holding `count` messages, with our header; `level` is libdeflate's, 0 (stored) to 12.
pub fn member(jsonl: &[u8], level: i32, count: u32) -> Result<Vec<u8>, String> {
    let lvl = compression_level(level)?;
    COMPRESSOR.with(|cell| {
        let mut cached = cell.borrow_mut();
        if !matches!(&*cached, Some((l, _)) if *l == level) {
            *cached = Some((level, Compressor::new(lvl)));
        }
        let (_, compressor) = cached.as_mut().expect("set above");
        encode(compressor, level, jsonl, count)
    })
}

thread_local! {
    /// The compressor of the level last used on this thread. Appends compress one small member at a time, and
    /// making a libdeflate compressor (it allocates its tables, a few hundred KB) costs more than compressing
    /// a message.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, Compressor)>> = const { std::cell::RefCell::new(None) };
}

/// `member` for each frame and its count, compressed on all cores; the same bytes as one `member` call each.
pub fn members(frames: &[&[u8]], counts: &[u32], level: i32) -> Result<Vec<Vec<u8>>, String> {
    if frames.len() != counts.len() {
        return Err(format!(
            "{} frames but {} counts",
            frames.len(),
            counts.len()
        ));
    }
    let lvl = compression_level(level)?;
    let mut jobs: Vec<(&[u8], u32)> = frames.iter().copied().zip(counts.iter().copied()).collect();
    let parts = in_parallel(
        &mut jobs,
        |job| job.0.len(),
        |part| {
            // A compressor per thread: libdeflate's keep their match finder state between calls.
            let mut compressor = Compressor::new(lvl);
            part.iter()
                .map(|&(jsonl, count)| encode(&mut compressor, level, jsonl, count))
                .collect::<Result<Vec<_>, _>>()
        },
    );
    let mut out = Vec::with_capacity(frames.len());
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

/// The members of a gzip stream that starts at `base` in its file, as `(offset, length, count)`. Our members are
/// stepped over by their size field and not inflated (so their deflate data is not checked here). Foreign members
/// are inflated to find their end and count their lines; consecutive ones whose data ends inside a line (as bgzip
/// cuts) make one entry, so that every entry is whole lines and its count exact.
pub fn scan_members(data: &[u8], base: u64) -> Result<Vec<(u64, u32, i64)>, String> {
    let mut entries = Vec::new();
    let entry = |start: usize, end: usize, count: u64| -> Result<(u64, u32, i64), String> {
        let length = u32::try_from(end - start)
            .map_err(|_| damaged(base + start as u64, "members of 4 GiB or more"))?;
        Ok((base + start as u64, length, count as i64))
    };
    // Foreign members read so far whose data has not yet come to the end of a line: where they start, their lines.
    let mut open: Option<(usize, LineCounter)> = None;
    let mut pos = 0;
    while pos < data.len() {
        match our_member(data, pos).map_err(|why| damaged(base + pos as u64, why))? {
            Some((size, count)) => {
                if let Some((start, lines)) = open.take() {
                    entries.push(entry(start, pos, lines.finish())?);
                }
                entries.push(entry(pos, pos + size, count as u64)?);
                pos += size;
            }
            None => {
                let (start, mut lines) = open.take().unwrap_or((pos, LineCounter::default()));
                pos += foreign_member(&data[pos..], |chunk| lines.feed(chunk))
                    .map_err(|why| damaged(base + pos as u64, why))?;
                if lines.partial.is_empty() {
                    entries.push(entry(start, pos, lines.finish())?);
                } else {
                    open = Some((start, lines));
                }
            }
        }
    }
    if let Some((start, lines)) = open {
        entries.push(entry(start, pos, lines.finish())?);
    }
    Ok(entries)
}

/// The uncompressed data of a whole multi-member gzip stream, every member's CRC and size checked.
// The Rust API; Python's gunzip runs its two steps itself so as to inflate straight into the bytes object.
#[cfg_attr(not(test), allow(dead_code))]
pub fn inflate(data: &[u8]) -> Result<Vec<u8>, String> {
    let plan = plan(data)?;
    let mut out = vec![0; plan.total];
    fill(plan, &mut out)?;
    Ok(out)
}

// ---- Writing -----------------------------------------------------------------------------------------------------

fn compression_level(level: i32) -> Result<CompressionLvl, String> {
    CompressionLvl::new(level).map_err(|_| format!("gzip level must be 0 to 12, not {level}"))
}

fn encode(
    compressor: &mut Compressor,
    level: i32,
    jsonl: &[u8],
    count: u32,
) -> Result<Vec<u8>, String> {
    let isize = u32::try_from(jsonl.len()).map_err(|_| "a frame of 4 GiB or more".to_owned())?;
    let bound = compressor.deflate_compress_bound(jsonl.len());
    let mut out = vec![0; HEADER_LEN + bound + TRAILER_LEN];
    let deflated = compressor
        .deflate_compress(jsonl, &mut out[HEADER_LEN..HEADER_LEN + bound])
        .expect("libdeflate's bound is enough for any input");
    let size = HEADER_LEN + deflated + TRAILER_LEN;
    let size_field = u32::try_from(size).map_err(|_| "a member of 4 GiB or more".to_owned())?;
    out.truncate(size);
    out[..4].copy_from_slice(&START);
    // MTIME stays 0 (none): a frame's bytes depend only on its JSONL, level and count.
    out[8] = xfl(level);
    out[9] = 255;
    out[10..16].copy_from_slice(&EXTRA);
    out[16..20].copy_from_slice(&size_field.to_le_bytes());
    out[20..24].copy_from_slice(&count.to_le_bytes());
    out[size - 8..size - 4].copy_from_slice(&libdeflater::crc32(jsonl).to_le_bytes());
    out[size - 4..].copy_from_slice(&isize.to_le_bytes());
    // The buffer was sized for incompressible data; many members may be held at once before they are written.
    out.shrink_to_fit();
    Ok(out)
}

/// XFL as libdeflate's own gzip writer sets it for a level: 4 = fastest, 2 = slowest (RFC 1952, 2.3.1).
fn xfl(level: i32) -> u8 {
    match level {
        ..=1 => 4,
        8.. => 2,
        _ => 0,
    }
}

// ---- Reading -----------------------------------------------------------------------------------------------------

/// The size and message count in our header if the member at `at` has one. A size that cannot be right (smaller
/// than a header and trailer, or past the end of the data) is damage, or a truncated stream.
fn our_member(data: &[u8], at: usize) -> Result<Option<(usize, u32)>, String> {
    let Some(header) = data.get(at..at + HEADER_LEN) else {
        return Ok(None);
    };
    if header[..4] != START || header[10..16] != EXTRA {
        return Ok(None);
    }
    let size = u32_at(header, 16) as usize;
    if size < HEADER_LEN + TRAILER_LEN {
        return Err(format!("its size field says {size} bytes"));
    }
    if size > data.len() - at {
        return Err(format!(
            "its size field says {size} bytes but {} are left (truncated?)",
            data.len() - at
        ));
    }
    Ok(Some((size, u32_at(header, 20))))
}

/// Inflates the gzip member at the start of `data` with flate2 (which checks its CRC and ISIZE), handing its data
/// to `sink` in pieces; returns the member's length.
fn foreign_member(data: &[u8], mut sink: impl FnMut(&[u8])) -> Result<usize, String> {
    if !data.starts_with(&[0x1F, 0x8B]) {
        return Err("not a gzip member".to_owned());
    }
    // bufread::GzDecoder takes from the slice exactly the member's bytes, so what is left tells where it ended.
    let mut decoder = flate2::bufread::GzDecoder::new(data);
    let mut buf = vec![0; 1 << 16];
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => sink(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Err("truncated".to_owned()),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(data.len() - decoder.get_ref().len())
}

/// Counts the messages of JSONL that arrives in pieces, as `count_messages` would on all of it: whole lines are
/// counted as they come and only the line in progress is kept.
#[derive(Default)]
struct LineCounter {
    count: u64,
    partial: Vec<u8>,
}

impl LineCounter {
    fn feed(&mut self, chunk: &[u8]) {
        let Some(last) = memchr::memrchr2(b'\n', b'\r', chunk) else {
            self.partial.extend_from_slice(chunk);
            return;
        };
        let (lines, rest) = chunk.split_at(last + 1);
        // Counting stops after a line break, so counts of pieces cut there add up (a "\r" | "\n" cut only makes
        // an empty line, which is not a message).
        if self.partial.is_empty() {
            self.count += count_messages(lines) as u64;
        } else {
            self.partial.extend_from_slice(lines);
            self.count += count_messages(&self.partial) as u64;
            self.partial.clear();
        }
        self.partial.extend_from_slice(rest);
    }

    fn finish(self) -> u64 {
        self.count + count_messages(&self.partial) as u64
    }
}

/// A stream's members in order: ours to be inflated into their own part of the output, foreign ones already
/// inflated (their size is not known otherwise).
enum Piece<'a> {
    Ours { at: usize, member: &'a [u8] },
    Inflated(Vec<u8>),
}

struct Plan<'a> {
    pieces: Vec<(Piece<'a>, usize)>,
    total: usize,
}

/// Walks the stream: finds every member and the size of its data, inflating only the foreign ones.
fn plan(data: &[u8]) -> Result<Plan<'_>, String> {
    let mut pieces = Vec::new();
    let mut total = 0usize;
    let mut pos = 0;
    while pos < data.len() {
        let at = pos;
        let (piece, len) = match our_member(data, at).map_err(|why| damaged(at as u64, why))? {
            Some((size, _)) => {
                let member = &data[at..at + size];
                let isize = u32_at(member, size - 4);
                if isize as u64 > (size - HEADER_LEN - TRAILER_LEN) as u64 * MAX_RATIO {
                    return Err(damaged(
                        at as u64,
                        format!(
                            "its ISIZE says {isize} bytes, more than deflate can encode in {size}"
                        ),
                    ));
                }
                pos += size;
                (Piece::Ours { at, member }, isize as usize)
            }
            None => {
                let mut inflated = Vec::new();
                pos += foreign_member(&data[at..], |chunk| inflated.extend_from_slice(chunk))
                    .map_err(|why| damaged(at as u64, why))?;
                let len = inflated.len();
                (Piece::Inflated(inflated), len)
            }
        };
        total = total
            .checked_add(len)
            .ok_or_else(|| damaged(at as u64, "more data than memory can hold"))?;
        pieces.push((piece, len));
    }
    Ok(Plan { pieces, total })
}

/// Writes the plan's data into `out` (exactly `plan.total` bytes): each member into its own slice, so that large
/// streams are inflated on all cores and nothing is copied afterwards.
fn fill(plan: Plan<'_>, mut out: &mut [u8]) -> Result<(), String> {
    let mut jobs = Vec::with_capacity(plan.pieces.len());
    for (piece, len) in plan.pieces {
        let (mine, rest) = std::mem::take(&mut out).split_at_mut(len);
        jobs.push((piece, mine));
        out = rest;
    }
    let parts = in_parallel(
        &mut jobs,
        |job| job.1.len(),
        |part| {
            let mut inflater = Inflater::new();
            for (piece, out) in part.iter_mut() {
                match piece {
                    Piece::Ours { at, member } => inflater
                        .member(member, out)
                        .map_err(|why| damaged(*at as u64, why))?,
                    Piece::Inflated(data) => out.copy_from_slice(data),
                }
            }
            Ok(())
        },
    );
    parts.into_iter().collect()
}

/// A libdeflate decompressor used through `libdeflate_gzip_decompress_ex`, which libdeflater does not wrap: it
/// reports the input consumed, so a size field that overstates its member (and would hide the member after it)
/// is caught instead of its extra bytes being skipped.
struct Inflater(NonNull<sys::libdeflate_decompressor>);

impl Inflater {
    fn new() -> Self {
        // SAFETY: no preconditions; NULL (out of memory) is checked.
        let p = unsafe { sys::libdeflate_alloc_decompressor() };
        Inflater(NonNull::new(p).expect("out of memory for a libdeflate decompressor"))
    }

    /// Inflates `member`, which must be exactly one gzip member, into `out`, which must be exactly its data.
    /// libdeflate checks the CRC and ISIZE.
    fn member(&mut self, member: &[u8], out: &mut [u8]) -> Result<(), &'static str> {
        let (mut used, mut written) = (0usize, 0usize);
        // SAFETY: the pointers and lengths come from live slices, `out` is writable and not aliased, and the
        // decompressor is ours alone (one per thread).
        let result = unsafe {
            sys::libdeflate_gzip_decompress_ex(
                self.0.as_ptr(),
                member.as_ptr().cast(),
                member.len(),
                out.as_mut_ptr().cast(),
                out.len(),
                &mut used,
                &mut written,
            )
        };
        match result {
            sys::libdeflate_result_LIBDEFLATE_SUCCESS if used != member.len() => {
                Err("its size field does not match its deflate data")
            }
            // With an output buffer of exactly ISIZE, a short output fails libdeflate's ISIZE check; this is
            // belt and braces.
            sys::libdeflate_result_LIBDEFLATE_SUCCESS if written != out.len() => {
                Err("its data is shorter than its ISIZE")
            }
            sys::libdeflate_result_LIBDEFLATE_SUCCESS => Ok(()),
            sys::libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE => {
                Err("its data is longer than its ISIZE")
            }
            _ => Err("corrupt deflate data, or a CRC or ISIZE that does not match it"),
        }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: allocated by libdeflate_alloc_decompressor and freed only here.
        unsafe { sys::libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

// ---- Shared ------------------------------------------------------------------------------------------------------

/// Runs `work` over contiguous parts of `jobs` of about equal weight, one part per core (the first on this
/// thread), and returns the parts' results in order. Small batches run here as one part.
fn in_parallel<J: Send, T: Send>(
    jobs: &mut [J],
    weight: impl Fn(&J) -> usize,
    work: impl Fn(&mut [J]) -> T + Sync,
) -> Vec<T> {
    let total: usize = jobs.iter().map(&weight).sum();
    let cores = thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let threads = cores.min(jobs.len());
    if threads < 2 || total < PARALLEL_MIN {
        return vec![work(jobs)];
    }
    let mut parts = Vec::with_capacity(threads);
    let mut rest = jobs;
    let mut done = 0;
    for k in 1..threads {
        let goal = total / threads * k;
        let mut n = 0;
        while n < rest.len() && done < goal {
            done += weight(&rest[n]);
            n += 1;
        }
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(n);
        parts.push(part);
        rest = tail;
    }
    parts.push(rest);
    let work = &work;
    thread::scope(|s| {
        let mut parts = parts.into_iter().filter(|part| !part.is_empty());
        let first = parts.next().expect("there is work");
        let others: Vec<_> = parts.map(|part| s.spawn(move || work(part))).collect();
        let mut results = vec![work(first)];
        for handle in others {
            results.push(
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
        results
    })
}

#[cold]
fn damaged(offset: u64, why: impl std::fmt::Display) -> String {
    format!("damaged gzip member at offset {offset}: {why}")
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

// ---- Python functions ------------------------------------------------------------------------------------------

/// One gzip member of `data` (a frame's JSONL) holding `count` messages, with the "CC" header.
#[pyfunction]
#[pyo3(signature = (data, /, *, level = 6, count))]
pub fn gzip_member<'py>(
    py: Python<'py>,
    data: &[u8],
    level: i32,
    count: u32,
) -> PyResult<Bound<'py, PyBytes>> {
    let out = py
        .detach(|| member(data, level, count))
        .map_err(PyValueError::new_err)?;
    Ok(PyBytes::new(py, &out))
}

/// One gzip member per frame, compressed on all cores.
#[pyfunction]
#[pyo3(signature = (frames, counts, /, *, level = 6))]
pub fn gzip_members<'py>(
    py: Python<'py>,
    frames: Vec<Bound<'py, PyBytes>>,
    counts: Vec<u32>,
    level: i32,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    // Bytes are immutable, so their buffers can be read with the GIL released.
    let frames: Vec<&[u8]> = frames.iter().map(|frame| frame.as_bytes()).collect();
    let out = py
        .detach(|| members(&frames, &counts, level))
        .map_err(PyValueError::new_err)?;
    Ok(out.iter().map(|m| PyBytes::new(py, m)).collect())
}

/// The `(offset, length, count)` of each member of a gzip stream that starts at `base` in its file; raises
/// ValueError, naming the offset, for a damaged or truncated member.
#[pyfunction]
#[pyo3(signature = (data, /, *, base = 0))]
pub fn scan_gzip(py: Python<'_>, data: &[u8], base: u64) -> PyResult<Vec<(u64, u32, i64)>> {
    py.detach(|| scan_members(data, base))
        .map_err(PyValueError::new_err)
}

/// The uncompressed data of a multi-member gzip stream; raises ValueError, naming the offset, for a damaged or
/// truncated member.
#[pyfunction]
#[pyo3(signature = (data, /))]
pub fn gunzip<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let plan = py.detach(|| plan(data)).map_err(PyValueError::new_err)?;
    // Inflated straight into the bytes object: no copy of what may be the whole conversation.
    PyBytes::new_with(py, plan.total, |out| {
        py.detach(|| fill(plan, out)).map_err(PyValueError::new_err)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Deterministic JSONL of about `bytes` bytes: varied enough that deflate works as on real messages.
    fn jsonl(seed: u64, bytes: usize) -> Vec<u8> {
        const WORDS: [&str; 12] = [
            "the", "model", "said", "hello", "tool", "call", "result", "of", "a", "user", "asked",
            "why",
        ];
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut out = Vec::new();
        let mut n = 0;
        while out.len() < bytes {
            write!(out, "{{\"role\":\"user\",\"n\":{n},\"content\":\"").unwrap();
            for _ in 0..8 + (state >> 60) {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                write!(
                    out,
                    "{} {} ",
                    WORDS[(state >> 59) as usize % 12],
                    state >> 40
                )
                .unwrap();
            }
            out.extend_from_slice(b"\"}\n");
            n += 1;
        }
        out
    }

    fn foreign(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn multi_gz_decode(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn standard_readers_accept_our_members() {
        let frames = [jsonl(1, 3000), jsonl(2, 10), Vec::new(), jsonl(3, 70000)];
        for level in [0, 1, 6, 9, 12] {
            let stream: Vec<u8> = frames
                .iter()
                .flat_map(|f| member(f, level, count_messages(f)).unwrap())
                .collect();
            assert_eq!(multi_gz_decode(&stream), frames.concat(), "level {level}");
            assert_eq!(inflate(&stream).unwrap(), frames.concat(), "level {level}");
        }
        let m = member(b"{}\n", 6, 1).unwrap();
        assert_eq!(
            m[..16],
            [0x1F, 0x8B, 8, 4, 0, 0, 0, 0, 0, 255, 12, 0, b'C', b'C', 8, 0]
        );
        assert_eq!(u32_at(&m, 16) as usize, m.len());
        assert_eq!(u32_at(&m, 20), 1);
        assert_eq!(
            [
                member(b"", 1, 0).unwrap()[8],
                member(b"", 12, 0).unwrap()[8]
            ],
            [4, 2]
        );
    }

    #[test]
    fn scan_steps_by_the_header() {
        let frames = [jsonl(4, 500), jsonl(5, 20000), b"{}\n\n[]\n".to_vec()];
        let ms: Vec<Vec<u8>> = frames
            .iter()
            .map(|f| member(f, 6, count_messages(f)).unwrap())
            .collect();
        let stream = ms.concat();
        let scanned = scan_members(&stream, 1000).unwrap();
        let mut at = 1000;
        for (i, (m, f)) in ms.iter().zip(&frames).enumerate() {
            assert_eq!(scanned[i], (at, m.len() as u32, count_messages(f) as i64));
            at += m.len() as u64;
        }
        assert_eq!(scanned.len(), 3);
        assert_eq!(scanned[2].2, 2);
        // The count comes from the header alone: scanning does not inflate our members.
        let mut claims = ms[0].clone();
        claims[20..24].copy_from_slice(&77u32.to_le_bytes());
        assert_eq!(
            scan_members(&claims, 0).unwrap(),
            [(0, claims.len() as u32, 77)]
        );
        assert_eq!(scan_members(b"", 5).unwrap(), []);
        assert_eq!(inflate(b"").unwrap(), b"");
    }

    #[test]
    fn parallel_is_serial_byte_for_byte() {
        let frames: Vec<Vec<u8>> = (0..24)
            .map(|i| jsonl(i, 1000 + i as usize * 9000))
            .collect();
        let total: usize = frames.iter().map(Vec::len).sum();
        assert!(total > 2 * PARALLEL_MIN);
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let counts: Vec<u32> = (0..24).collect();
        let parallel = members(&refs, &counts, 6).unwrap();
        let serial: Vec<Vec<u8>> = refs
            .iter()
            .zip(&counts)
            .map(|(f, &n)| member(f, 6, n).unwrap())
            .collect();
        assert_eq!(parallel, serial);
        assert_eq!(inflate(&parallel.concat()).unwrap(), frames.concat());
        assert_eq!(
            members(&refs, &counts[1..], 6).unwrap_err(),
            "24 frames but 23 counts"
        );
    }

    #[test]
    fn foreign_members_are_inflated_to_find_their_end() {
        let (a, b, c) = (jsonl(6, 5000), jsonl(7, 300), jsonl(8, 40000));
        let ours = member(&b, 6, count_messages(&b)).unwrap();
        let (fa, fc) = (foreign(&a), foreign(&c));
        let stream = [fa.clone(), ours.clone(), fc.clone()].concat();
        assert_eq!(
            scan_members(&stream, 7).unwrap(),
            [
                (7, fa.len() as u32, count_messages(&a) as i64),
                (
                    7 + fa.len() as u64,
                    ours.len() as u32,
                    count_messages(&b) as i64
                ),
                (
                    7 + (fa.len() + ours.len()) as u64,
                    fc.len() as u32,
                    count_messages(&c) as i64
                ),
            ]
        );
        assert_eq!(inflate(&stream).unwrap(), [a, b, c].concat());
    }

    #[test]
    fn foreign_members_cut_inside_a_line_make_one_entry() {
        // As bgzip cuts: every 1000 bytes, wherever the lines are; and a "\r\n" cut between its two bytes.
        let data = jsonl(9, 5500);
        let mut stream: Vec<u8> = data.chunks(1000).flat_map(foreign).collect();
        let (head, tail) = (foreign(b"[1]\r"), foreign(b"\n[2]"));
        stream.extend([head.clone(), tail.clone()].concat());
        let scanned = scan_members(&stream, 0).unwrap();
        let whole = stream.len() - head.len() - tail.len();
        assert_eq!(
            scanned,
            [
                (0, whole as u32, count_messages(&data) as i64),
                (whole as u64, head.len() as u32, 1),
                ((whole + head.len()) as u64, tail.len() as u32, 1),
            ]
        );
        assert_eq!(
            inflate(&stream).unwrap(),
            [&data[..], b"[1]\r\n[2]"].concat()
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (a, b) = (b"{\"a\":1}\n[2]\n".as_slice(), b"\"three\"\n".as_slice());
        let ours = member(a, 6, 2).unwrap();
        for second in [member(b, 6, 1).unwrap(), foreign(b)] {
            let stream = [ours.clone(), second].concat();
            for cut in 1..stream.len() {
                let part = &stream[..cut];
                if cut == ours.len() {
                    assert_eq!(inflate(part).unwrap(), a);
                    continue;
                }
                let at = if cut < ours.len() { 0 } else { ours.len() };
                let expect = format!("damaged gzip member at offset {at}: ");
                assert!(
                    scan_members(part, 0).unwrap_err().starts_with(&expect),
                    "cut {cut}"
                );
                assert!(inflate(part).unwrap_err().starts_with(&expect), "cut {cut}");
            }
        }
        assert!(inflate(&[ours.clone(), vec![0]].concat())
            .unwrap_err()
            .contains("not a gzip member"));
    }

    #[test]
    fn damage_is_caught_when_inflating() {
        let data = jsonl(10, 20000);
        let ours = member(&data, 6, count_messages(&data)).unwrap();
        for at in [
            HEADER_LEN,
            HEADER_LEN + 1,
            ours.len() / 2,
            ours.len() - 9,
            ours.len() - 5,
        ] {
            let mut damaged = ours.clone();
            damaged[at] ^= 0xFF;
            assert!(inflate(&damaged).is_err(), "flipped byte {at}");
        }
        let mut damaged = foreign(&data);
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0xFF;
        assert!(inflate(&damaged).is_err());
        // A size field that swallows the next member: scanning trusts it, inflating must not.
        let two = [ours.clone(), ours.clone()].concat();
        let mut swallowed = two.clone();
        swallowed[16..20].copy_from_slice(&(two.len() as u32).to_le_bytes());
        assert_eq!(scan_members(&swallowed, 0).unwrap().len(), 1);
        assert!(inflate(&swallowed)
            .unwrap_err()
            .contains("size field does not match"));
        // An ISIZE no deflate data could reach is refused before anything is allocated for it.
        let mut huge = ours.clone();
        let end = huge.len();
        huge[end - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(inflate(&huge).unwrap_err().contains("ISIZE"));
        let mut tiny = ours;
        tiny[16..20].copy_from_slice(&31u32.to_le_bytes());
        assert!(scan_members(&tiny, 0)
            .unwrap_err()
            .contains("size field says 31"));
    }

    #[test]
    fn levels_outside_libdeflates_are_refused() {
        for level in [-1, 13, 100] {
            assert_eq!(
                member(b"[]\n", level, 1).unwrap_err(),
                format!("gzip level must be 0 to 12, not {level}")
            );
            assert!(members(&[b"[]\n"], &[1], level).is_err());
        }
        let stored = member(b"[]\n", 0, 1).unwrap();
        assert_eq!(inflate(&stored).unwrap(), b"[]\n");
    }
}
