//! Gzip members for frames (docs/FORMAT.md, 1.2 and 1.3): writing them, stepping through a stream of them, and
//! inflating a stream. Our members carry a "CC" extra subfield with their size and message count, protected by
//! the header CRC (FHCRC), so that a reader steps from member to member and counts messages without inflating;
//! members another tool wrote (and ours of the first version, without FHCRC) are still read, by inflating them to
//! find where they end. libdeflate does the whole-buffer work (measured fastest, with the best ratio, at level 6);
//! flate2 streams the foreign members, whose end and size are known only once inflated. Nothing the data says is
//! allocated without `try_reserve`: a decompression bomb is a MemoryError, never an abort.

use std::io::{ErrorKind, Read};
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::thread;

use libdeflate_sys as sys;
use libdeflater::{CompressionLvl, Compressor};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::Error;
use crate::frames::count_messages;
use crate::scan::is_message_line;

pub const HEADER_LEN: usize = 26;
const TRAILER_LEN: usize = 8;
const MAGIC: [u8; 2] = [0x1F, 0x8B];
/// Bytes 0–3 of our header: ID1, ID2, CM = deflate, FLG = FEXTRA | FHCRC.
const START: [u8; 4] = [0x1F, 0x8B, 8, 6];
/// Bytes 10–15: XLEN = 12, then the subfield "CC" of length 8. MTIME, XFL and OS are not compared (another writer
/// of the format may set them) but the header CRC covers them.
const EXTRA: [u8; 6] = [12, 0, b'C', b'C', 8, 0];
/// Where the FHCRC sits: the low 16 bits of the CRC-32 of the header bytes before it (RFC 1952, 2.3.1).
const HCRC_AT: usize = 24;
/// The top bit of the message count marks a member that holds one turn: the messages of one `append_turn`
/// (docs/FORMAT.md 1.3). A member without it holds messages that are each a turn of their own.
pub const TURN_FLAG: u32 = 1 << 31;
/// Deflate's densest code spends 2 bits on a 258-byte match (RFC 1951). An ISIZE above this many times the member
/// is damage, caught before we allocate for it.
const MAX_RATIO: u64 = 1032;
/// Below this many bytes of work in all, starting threads costs more than they save.
const PARALLEL_MIN: usize = 1 << 20;
/// How much of a foreign member is inflated at a time when only its lines are counted.
const INFLATE_CHUNK: usize = 1 << 16;

/// Why a member of ours cannot follow foreign members whose data ends inside a line.
const CUT_LINE: &str = "a member of ours follows members whose data ends inside a line";

/// A whole member (or run of foreign members) found by a scan: offset in the file, length, messages.
pub type Member = (u64, u64, u64);
/// Where a scan stopped before the end of the data: offset, whether the member there is cut short, and why.
pub type Stop = (u64, bool, String);

/// One gzip member of `jsonl` holding `count` messages (one turn if `turn`), with our header; `level` is
/// libdeflate's, 0 (stored) to 12.
pub fn member(jsonl: &[u8], level: i32, count: u32, turn: bool) -> Result<Vec<u8>, Error> {
    let lvl = compression_level(level)?;
    COMPRESSOR.with(|cell| {
        let mut cached = cell.borrow_mut();
        let compressor = match &mut *cached {
            Some((l, compressor)) if *l == level => compressor,
            slot => &mut slot.insert((level, Compressor::new(lvl))).1,
        };
        encode(compressor, level, jsonl, count, turn)
    })
}

thread_local! {
    /// The compressor of the level last used on this thread. Appends compress one small member at a time, and
    /// making a libdeflate compressor (it allocates its tables, a few hundred KB) costs more than compressing
    /// a message.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, Compressor)>> = const { std::cell::RefCell::new(None) };
}

/// `member` for each frame, its count and its turn flag, compressed on all cores; the same bytes as one `member`
/// call each.
pub fn members(
    frames: &[&[u8]],
    counts: &[u32],
    turns: &[bool],
    level: i32,
) -> Result<Vec<Vec<u8>>, Error> {
    if frames.len() != counts.len() || frames.len() != turns.len() {
        return Err(Error::Invalid(format!(
            "{} frames but {} counts and {} turn flags",
            frames.len(),
            counts.len(),
            turns.len()
        )));
    }
    let lvl = compression_level(level)?;
    let mut jobs: Vec<(&[u8], u32, bool)> = (0..frames.len())
        .map(|i| (frames[i], counts[i], turns[i]))
        .collect();
    let parts = in_parallel(
        &mut jobs,
        |job| job.0.len(),
        |part| {
            // A compressor per thread: libdeflate's keep their match finder state between calls.
            let mut compressor = Compressor::new(lvl);
            part.iter()
                .map(|&(jsonl, count, turn)| encode(&mut compressor, level, jsonl, count, turn))
                .collect::<Result<Vec<_>, _>>()
        },
    );
    let mut out = Vec::with_capacity(frames.len());
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

/// The whole members of a gzip stream that starts at `base` in its file, as `(offset, length, count)`, and where
/// the scan stopped if not at the end of the data. Our members are stepped over by their size field (trusted
/// because the header CRC matches) and not inflated, so their deflate data is not checked here. Foreign members
/// are inflated to find their end and count their lines; consecutive ones whose data ends inside a line (as
/// bgzip cuts) make one entry, so that every entry is whole lines and its count exact.
pub fn scan_members(data: &[u8], base: u64) -> Result<(Vec<Member>, Option<Stop>), Error> {
    check_base(data, base)?;
    let mut found = Vec::new();
    // Foreign members read so far whose data has not yet come to the end of a line: where they start, their lines.
    let mut open: Option<(usize, LineCounter)> = None;
    let mut pos = 0;
    let outcome = loop {
        if pos == data.len() {
            break Ok(());
        }
        match next_member(data, pos, base) {
            Ok(Next::Ours { size, count }) => {
                if open.is_some() {
                    // The foreign run before it ends inside a line, which this member's first line would
                    // complete: counted apart, the two would count that line twice (the run is still an entry).
                    break Err(corrupt(base + pos as u64, CUT_LINE));
                }
                found.push(entry(base, pos, pos + size, u64::from(count)));
                pos += size;
            }
            Ok(Next::Foreign) => {
                let (start, before) = open.take().unwrap_or((pos, LineCounter::default()));
                let mut lines = before.clone();
                match foreign_member(&data[pos..], base + pos as u64, |chunk| {
                    lines.feed(chunk);
                    Ok(())
                }) {
                    Ok(length) => {
                        pos += length;
                        if lines.in_line {
                            open = Some((start, lines));
                        } else {
                            found.push(entry(base, start, pos, lines.finish()));
                        }
                    }
                    Err(err) => {
                        if start < pos {
                            open = Some((start, before));
                        }
                        break Err(err);
                    }
                }
            }
            Err(err) => break Err(err),
        }
    };
    if let Some((start, lines)) = open {
        found.push(entry(base, start, pos, lines.finish()));
    }
    match outcome {
        Ok(()) => Ok((found, None)),
        Err(Error::Corrupt {
            offset,
            truncated,
            reason,
        }) => Ok((found, Some((offset, truncated, reason)))),
        Err(other) => Err(other),
    }
}

/// Offsets are `base + position`: refuse a `base` that would overflow them (a ValueError, not a panic).
fn check_base(data: &[u8], base: u64) -> Result<(), Error> {
    match base.checked_add(data.len() as u64) {
        Some(_) => Ok(()),
        None => Err(Error::Invalid(format!(
            "base {base} plus {} bytes is past the largest file offset",
            data.len()
        ))),
    }
}

fn entry(base: u64, start: usize, end: usize, count: u64) -> Member {
    // usize is at most 64 bits on every target Rust supports: these widen, never truncate.
    (base + start as u64, (end - start) as u64, count)
}

// ---- Writing -----------------------------------------------------------------------------------------------------

fn compression_level(level: i32) -> Result<CompressionLvl, Error> {
    CompressionLvl::new(level)
        .map_err(|_| Error::Invalid(format!("gzip level must be 0 to 12, not {level}")))
}

fn encode(
    compressor: &mut Compressor,
    level: i32,
    jsonl: &[u8],
    count: u32,
    turn: bool,
) -> Result<Vec<u8>, Error> {
    if count & TURN_FLAG != 0 {
        return Err(Error::Invalid(format!(
            "a member of {count} messages (its header holds at most {})",
            TURN_FLAG - 1
        )));
    }
    let count = if turn { count | TURN_FLAG } else { count };
    let isize = u32::try_from(jsonl.len())
        .map_err(|_| Error::Invalid("a frame of 4 GiB or more".to_owned()))?;
    let bound = compressor.deflate_compress_bound(jsonl.len());
    let mut out = Vec::new();
    out.try_reserve_exact(HEADER_LEN + bound + TRAILER_LEN)
        .map_err(|_| Error::NoMemory)?;
    out.resize(HEADER_LEN + bound + TRAILER_LEN, 0);
    let deflated = compressor
        .deflate_compress(jsonl, &mut out[HEADER_LEN..HEADER_LEN + bound])
        .map_err(|_| Error::Invalid("libdeflate's bound was not enough".to_owned()))?;
    let size = HEADER_LEN + deflated + TRAILER_LEN;
    let size_field =
        u32::try_from(size).map_err(|_| Error::Invalid("a member of 4 GiB or more".to_owned()))?;
    out.truncate(size);
    out[..4].copy_from_slice(&START);
    // MTIME stays 0 (none): a frame's bytes depend only on its JSONL, level and count.
    out[8] = xfl(level);
    out[9] = 255;
    out[10..16].copy_from_slice(&EXTRA);
    out[16..20].copy_from_slice(&size_field.to_le_bytes());
    out[20..24].copy_from_slice(&count.to_le_bytes());
    let hcrc = header_crc(&out);
    out[HCRC_AT..HEADER_LEN].copy_from_slice(&hcrc);
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

/// FHCRC: the two least significant bytes of the CRC-32 of the header before it, in gzip's byte order.
fn header_crc(header: &[u8]) -> [u8; 2] {
    let crc = crc32fast::hash(&header[..HCRC_AT]).to_le_bytes();
    [crc[0], crc[1]]
}

// ---- Reading -----------------------------------------------------------------------------------------------------

/// What starts at a position of a stream.
enum Next {
    /// One of our members, its header intact: its size and message count can be trusted.
    Ours { size: usize, count: u32 },
    /// Something else that starts as gzip does (another tool's member, or ours of the first version): it must be
    /// inflated to find its end.
    Foreign,
}

/// Tells what the member at `at` is. Errors are at `base + at`: bytes that are not a member, a damaged header of
/// ours, or (truncated) a header or member that the data ends inside.
fn next_member(data: &[u8], at: usize, base: u64) -> Result<Next, Error> {
    let rest = &data[at..];
    let head = &rest[..rest.len().min(HEADER_LEN)];
    let offset = base + at as u64;
    if !agrees(head, 0, &MAGIC) {
        return Err(corrupt(offset, "not a gzip member"));
    }
    if head.len() < MAGIC.len() {
        return Err(truncated(offset, "the data ends inside a member's header"));
    }
    if !(agrees(head, 0, &START) && agrees(head, 10, &EXTRA)) {
        return Ok(Next::Foreign);
    }
    if head.len() < HEADER_LEN {
        // No member of ours or anyone's with these first bytes is this short: it is cut.
        return Err(truncated(offset, "the data ends inside a member's header"));
    }
    if head[HCRC_AT..] != header_crc(head) {
        return Err(corrupt(
            offset,
            "its header CRC does not match: the header is damaged",
        ));
    }
    let size = usize::try_from(u32_at(head, 16))
        .map_err(|_| corrupt(offset, "its size field does not fit in memory"))?;
    if size < HEADER_LEN + TRAILER_LEN {
        return Err(corrupt(offset, format!("its size field says {size} bytes")));
    }
    if size > rest.len() {
        return Err(truncated(
            offset,
            format!(
                "its size field says {size} bytes but {} are left",
                rest.len()
            ),
        ));
    }
    Ok(Next::Ours {
        size,
        count: u32_at(head, 20) & !TURN_FLAG,
    })
}

/// Whether the bytes of `head` from `at` on agree with `expect` as far as both go (a short head agrees with a
/// prefix: it may be a header cut short).
fn agrees(head: &[u8], at: usize, expect: &[u8]) -> bool {
    let have = head.get(at..).unwrap_or_default();
    let n = have.len().min(expect.len());
    have[..n] == expect[..n]
}

/// Inflates the gzip member at the start of `data` (at `offset` in the file) with flate2, which checks its header
/// CRC if any, its CRC and ISIZE, handing its data to `sink` in pieces; returns the member's length. A member that
/// needs more bytes than `data` holds is `truncated`.
fn foreign_member(
    data: &[u8],
    offset: u64,
    mut sink: impl FnMut(&[u8]) -> Result<(), Error>,
) -> Result<usize, Error> {
    // bufread::GzDecoder takes from the slice exactly the member's bytes, so what is left tells where it ended.
    let mut decoder = flate2::bufread::GzDecoder::new(data);
    let mut buf = [0u8; INFLATE_CHUNK];
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => sink(&buf[..n])?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                return Err(truncated(offset, "the data ends inside the member"))
            }
            Err(e) => return Err(corrupt(offset, e)),
        }
    }
    Ok(data.len() - decoder.get_ref().len())
}

/// Counts the messages of JSONL that arrives in pieces, as `count_messages` would on all of it, in bounded
/// memory: whole lines are counted as they come, and of the line in progress only whether it is a message so
/// far (and the bytes of a character cut between pieces) are kept, however long the line (a bomb of one line).
#[derive(Clone, Default)]
struct LineCounter {
    count: u64,
    /// Bytes have come since the last line break.
    in_line: bool,
    /// The line in progress already holds a character that is not whitespace: it is a message.
    message: bool,
    /// The line in progress's bytes not yet judged: at most a cut UTF-8 character (the blank ones before it are
    /// dropped).
    partial: Vec<u8>,
}

impl LineCounter {
    fn feed(&mut self, chunk: &[u8]) {
        let Some(first) = memchr::memchr2(b'\n', b'\r', chunk) else {
            self.extend_line(chunk);
            return;
        };
        let last = memchr::memrchr2(b'\n', b'\r', chunk).unwrap_or(first);
        self.extend_line(&chunk[..first]);
        self.count += u64::from(self.end_line());
        // Counting stops after a line break, so counts of pieces cut there add up (a "\r" | "\n" cut only makes an
        // empty line, which is not a message).
        self.count += u64::from(count_messages(&chunk[first + 1..last + 1]));
        self.extend_line(&chunk[last + 1..]);
    }

    fn extend_line(&mut self, piece: &[u8]) {
        if piece.is_empty() {
            return;
        }
        self.in_line = true;
        if self.message {
            return;
        }
        self.partial.extend_from_slice(piece);
        // A line is blank only if every character is (is_message_line is "not blank"), so a prefix that ends
        // at a character boundary settles it: not blank, the line is a message; blank, only the rest matters.
        let settled = whole_chars(&self.partial);
        if is_message_line(&self.partial[..settled]) {
            self.message = true;
            self.partial.clear();
        } else {
            self.partial.drain(..settled);
        }
    }

    /// Whether the line just ended was a message; starts the next.
    fn end_line(&mut self) -> bool {
        let message = self.message || is_message_line(&self.partial);
        self.in_line = false;
        self.message = false;
        self.partial.clear();
        message
    }

    fn finish(mut self) -> u64 {
        self.count + u64::from(self.end_line())
    }
}

/// The length of `b` without a UTF-8 sequence cut at its end (which the next piece may complete).
fn whole_chars(b: &[u8]) -> usize {
    let n = b.len();
    for back in 1..=n.min(4) {
        let byte = b[n - back];
        if byte & 0xC0 != 0x80 {
            let needs = match byte {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            return if back < needs { n - back } else { n };
        }
    }
    n
}

/// A stream's members in order: ours to be inflated into their own part of the output, foreign ones already
/// inflated (their size is not known otherwise).
enum Piece<'a> {
    Ours {
        offset: u64,
        member: &'a [u8],
        count: u32,
    },
    Inflated(Vec<u8>),
}

struct Plan<'a> {
    pieces: Vec<(Piece<'a>, usize)>,
    total: usize,
}

/// Walks the stream (which starts at `base` in its file): finds every member and the size of its data, inflating
/// only the foreign ones.
fn plan(data: &[u8], base: u64) -> Result<Plan<'_>, Error> {
    check_base(data, base)?;
    let mut pieces = Vec::new();
    let mut total = 0usize;
    let mut pos = 0;
    // The data so far ends inside a line (foreign members only: ours are checked to end at a line break).
    let mut in_line = false;
    while pos < data.len() {
        let offset = base + pos as u64;
        let (piece, len) = match next_member(data, pos, base)? {
            Next::Ours { .. } if in_line => return Err(corrupt(offset, CUT_LINE)),
            Next::Ours { size, count } => {
                let member = &data[pos..pos + size];
                let isize = u32_at(member, size - 4);
                if u64::from(isize) > (size - HEADER_LEN - TRAILER_LEN) as u64 * MAX_RATIO {
                    return Err(corrupt(
                        offset,
                        format!(
                            "its ISIZE says {isize} bytes, more than deflate can encode in {size}"
                        ),
                    ));
                }
                let len = usize::try_from(isize).map_err(|_| Error::NoMemory)?;
                pos += size;
                (
                    Piece::Ours {
                        offset,
                        member,
                        count,
                    },
                    len,
                )
            }
            Next::Foreign => {
                let mut inflated = Vec::new();
                pos += foreign_member(&data[pos..], offset, |chunk| {
                    // The data decides how much this grows: a bomb must fail here, not abort the process.
                    inflated
                        .try_reserve(chunk.len())
                        .map_err(|_| Error::NoMemory)?;
                    inflated.extend_from_slice(chunk);
                    Ok(())
                })?;
                if let Some(&last) = inflated.last() {
                    in_line = !matches!(last, b'\n' | b'\r');
                }
                let len = inflated.len();
                (Piece::Inflated(inflated), len)
            }
        };
        total = total.checked_add(len).ok_or(Error::NoMemory)?;
        pieces.try_reserve(1).map_err(|_| Error::NoMemory)?;
        pieces.push((piece, len));
    }
    Ok(Plan { pieces, total })
}

/// Writes the plan's data into `out` (exactly `plan.total` bytes): each member into its own slice, so that large
/// streams are inflated on all cores and nothing is copied afterwards. Each of our members is checked whole: its
/// CRC and ISIZE (by libdeflate), its size field, and its message count.
fn fill(plan: Plan<'_>, mut out: &mut [u8]) -> Result<(), Error> {
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
            let mut inflater = Inflater::new()?;
            for (piece, out) in part.iter_mut() {
                match piece {
                    Piece::Ours {
                        offset,
                        member,
                        count,
                    } => {
                        inflater
                            .member(member, out)
                            .map_err(|why| corrupt(*offset, why))?;
                        if !matches!(out.last(), None | Some(b'\n' | b'\r')) {
                            return Err(corrupt(*offset, "its data ends inside a line"));
                        }
                        let lines = count_messages(out);
                        if lines != *count {
                            return Err(corrupt(
                                *offset,
                                format!("its header says {count} messages but it holds {lines}"),
                            ));
                        }
                    }
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
    fn new() -> Result<Self, Error> {
        // SAFETY: no preconditions; NULL (out of memory) is checked.
        let p = unsafe { sys::libdeflate_alloc_decompressor() };
        NonNull::new(p).map(Inflater).ok_or(Error::NoMemory)
    }

    /// Inflates `member`, which must be exactly one gzip member, into `out`, which must be exactly its data.
    /// libdeflate checks the CRC and ISIZE (and skips the FHCRC, which the caller has checked).
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
fn corrupt(offset: u64, reason: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        offset,
        truncated: false,
        reason: reason.to_string(),
    }
}

#[cold]
fn truncated(offset: u64, reason: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        offset,
        truncated: true,
        reason: reason.to_string(),
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The uncompressed data of a multi-member gzip stream that starts at `base` in its file: what `gunzip` returns,
/// into a Rust buffer (`gunzip` inflates straight into a bytes object instead).
pub fn inflate(data: &[u8], base: u64) -> Result<Vec<u8>, Error> {
    let plan = plan(data, base)?;
    let mut out = Vec::new();
    out.try_reserve_exact(plan.total)
        .map_err(|_| Error::NoMemory)?;
    out.resize(plan.total, 0);
    fill(plan, &mut out)?;
    Ok(out)
}

// ---- Python functions ------------------------------------------------------------------------------------------

/// One gzip member of `data` (a frame's JSONL) holding `count` messages, with the "CC" header; `turn` marks it
/// as one turn.
#[pyfunction]
#[pyo3(signature = (data, /, *, level = 6, count, turn = false))]
pub fn gzip_member<'py>(
    py: Python<'py>,
    data: &[u8],
    level: i32,
    count: u32,
    turn: bool,
) -> PyResult<Bound<'py, PyBytes>> {
    let out = py
        .detach(|| member(data, level, count, turn))
        .map_err(|err| err.into_pyerr("<bytes>"))?;
    Ok(PyBytes::new(py, &out))
}

/// One gzip member per frame, compressed on all cores; `turns` (default: none) marks those that are one turn.
#[pyfunction]
#[pyo3(signature = (frames, counts, /, *, level = 6, turns = None))]
pub fn gzip_members<'py>(
    py: Python<'py>,
    frames: Vec<Bound<'py, PyBytes>>,
    counts: Vec<u32>,
    level: i32,
    turns: Option<Vec<bool>>,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    // Bytes are immutable, so their buffers can be read with the GIL released.
    let frames: Vec<&[u8]> = frames.iter().map(|frame| frame.as_bytes()).collect();
    let turns = turns.unwrap_or_else(|| vec![false; frames.len()]);
    let out = py
        .detach(|| members(&frames, &counts, &turns, level))
        .map_err(|err| err.into_pyerr("<bytes>"))?;
    Ok(out.iter().map(|m| PyBytes::new(py, m)).collect())
}

/// The whole members `(offset, length, count)` of a gzip stream that starts at `base` in its file, and where the
/// scan stopped: None at the end of the data, else `(offset, truncated, reason)`.
#[pyfunction]
#[pyo3(signature = (data, /, *, base = 0))]
pub fn scan_gzip(py: Python<'_>, data: &[u8], base: u64) -> PyResult<(Vec<Member>, Option<Stop>)> {
    py.detach(|| scan_members(data, base))
        .map_err(|err| err.into_pyerr("<bytes>"))
}

/// The uncompressed data of a multi-member gzip stream that starts at `base` in its file; raises
/// CorruptFileError(source, offset, reason) for a damaged or truncated member.
#[pyfunction]
#[pyo3(
    signature = (data, /, *, base = 0, source = None),
    text_signature = "(data, /, *, base=0, source='<bytes>')"
)]
pub fn gunzip<'py>(
    py: Python<'py>,
    data: &[u8],
    base: u64,
    source: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let raise = |err: Error| match &source {
        Some(source) => err.into_pyerr_for(source.clone_ref(py)),
        None => err.into_pyerr("<bytes>"),
    };
    let plan = py.detach(|| plan(data, base)).map_err(raise)?;
    // Inflated straight into the bytes object: no copy of what may be the whole conversation. CPython raises
    // MemoryError if it cannot have the memory.
    PyBytes::new_with(py, plan.total, |out| {
        py.detach(|| fill(plan, out)).map_err(raise)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

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

    fn ours(data: &[u8]) -> Vec<u8> {
        member(data, 6, count_messages(data), false).unwrap()
    }

    fn foreign(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// One of our members as the first version wrote it: FLG = FEXTRA, no FHCRC, a 24-byte header.
    fn old_style(member: &[u8]) -> Vec<u8> {
        let mut old = [&member[..HCRC_AT], &member[HEADER_LEN..]].concat();
        old[3] = 4;
        let size = old.len() as u32;
        old[16..20].copy_from_slice(&size.to_le_bytes());
        old
    }

    /// The stream inflated as a whole file (base 0).
    fn inflate(data: &[u8]) -> Result<Vec<u8>, Error> {
        super::inflate(data, 0)
    }

    fn scan(data: &[u8], base: u64) -> (Vec<Member>, Option<Stop>) {
        scan_members(data, base).unwrap()
    }

    /// The offset, truncated flag and reason of a Corrupt error.
    fn corrupt_at(err: Error) -> (u64, bool, String) {
        match err {
            Error::Corrupt {
                offset,
                truncated,
                reason,
            } => (offset, truncated, reason),
            other => panic!("not a Corrupt error: {other:?}"),
        }
    }

    fn multi_gz_decode(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// `program args` with `input` on stdin, its stdout; None if the program is not installed.
    fn pipe(program: &str, args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = thread::spawn(move || stdin.write_all(&input).unwrap());
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(out.status.success(), "{program} failed");
        Some(out.stdout)
    }

    #[test]
    fn a_turn_is_marked_in_the_count_and_read_without_it() {
        let data = b"{}\n[]\n";
        let turn = member(data, 6, 2, true).unwrap();
        assert_eq!(u32_at(&turn, 20), 2 | TURN_FLAG);
        assert_eq!(
            scan_members(&turn, 0).unwrap(),
            (vec![(0, turn.len() as u64, 2)], None)
        );
        assert_eq!(inflate(&turn).unwrap(), data);
        assert!(matches!(
            member(data, 6, TURN_FLAG, false),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn standard_readers_accept_our_members() {
        let frames = [jsonl(1, 3000), jsonl(2, 10), Vec::new(), jsonl(3, 70000)];
        for level in [0, 1, 6, 9, 12] {
            let stream: Vec<u8> = frames
                .iter()
                .flat_map(|f| member(f, level, count_messages(f), false).unwrap())
                .collect();
            assert_eq!(multi_gz_decode(&stream), frames.concat(), "level {level}");
            assert_eq!(inflate(&stream).unwrap(), frames.concat(), "level {level}");
            // gzip(1) and Python's gzip module check the FHCRC too (flate2 does as well).
            if let Some(out) = pipe("gzip", &["-dc"], &stream) {
                assert_eq!(out, frames.concat(), "gzip -dc, level {level}");
            }
            let python = "import gzip, sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))";
            if let Some(out) = pipe("python3", &["-c", python], &stream) {
                assert_eq!(out, frames.concat(), "python3 gzip, level {level}");
            }
        }
        let m = member(b"{}\n", 6, 1, false).unwrap();
        assert_eq!(
            m[..16],
            [0x1F, 0x8B, 8, 6, 0, 0, 0, 0, 0, 255, 12, 0, b'C', b'C', 8, 0]
        );
        assert_eq!(u32_at(&m, 16) as usize, m.len());
        assert_eq!(u32_at(&m, 20), 1);
        let hcrc = crc32fast::hash(&m[..24]) & 0xFFFF;
        assert_eq!(m[24..26], (hcrc as u16).to_le_bytes());
        assert_eq!(
            [
                member(b"", 1, 0, false).unwrap()[8],
                member(b"", 12, 0, false).unwrap()[8]
            ],
            [4, 2]
        );
    }

    #[test]
    fn scan_steps_by_the_header() {
        let frames = [jsonl(4, 500), jsonl(5, 20000), b"{}\n\n[]\n".to_vec()];
        let ms: Vec<Vec<u8>> = frames.iter().map(|f| ours(f)).collect();
        let stream = ms.concat();
        let (scanned, stop) = scan(&stream, 1000);
        assert_eq!(stop, None);
        let mut at = 1000;
        for (i, (m, f)) in ms.iter().zip(&frames).enumerate() {
            assert_eq!(
                scanned[i],
                (at, m.len() as u64, u64::from(count_messages(f)))
            );
            at += m.len() as u64;
        }
        assert_eq!(scanned.len(), 3);
        assert_eq!(scanned[2].2, 2);
        assert_eq!(scan(b"", 5), (vec![], None));
        // Offsets past u64 are refused, not an overflow panic (overflow checks are on in release builds).
        assert!(matches!(
            scan_members(&stream, u64::MAX - 10),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            plan(&stream, u64::MAX - 10),
            Err(Error::Invalid(_))
        ));
        assert_eq!(inflate(b"").unwrap(), b"");
    }

    #[test]
    fn a_flipped_bit_in_a_header_is_never_trusted() {
        // The defect: one flipped bit in the count field made len() say 33,554,436 for 4 messages.
        let data = b"[1]\n[2]\n[3]\n[4]\n";
        let m = ours(data);
        let stream = [ours(b"[0]\n"), m.clone()].concat();
        let at = stream.len() - m.len();
        let mut flipped = stream.clone();
        flipped[at + 23] ^= 0x02;
        assert_eq!(u32_at(&flipped, at + 20), 33_554_436);
        let (found, stop) = scan(&flipped, 0);
        assert_eq!(found, [(0, at as u64, 1)]);
        let (offset, truncated, reason) = stop.unwrap();
        assert_eq!((offset, truncated), (at as u64, false));
        assert!(reason.contains("header CRC"), "{reason}");
        assert_eq!(corrupt_at(inflate(&flipped).unwrap_err()).0, at as u64);
        // Every bit of the header: the scan stops at the member as damage, or (a flip in the bytes that make it
        // ours, so that it is read as foreign) counts what it truly holds. Never a wrong count.
        for bit in 0..HEADER_LEN * 8 {
            let mut damaged = stream.clone();
            damaged[at + bit / 8] ^= 1 << (bit % 8);
            match scan(&damaged, 0) {
                // (A flip in XLEN makes the header reach past the end: cut short, as far as a reader can tell.)
                (found, Some((offset, _, _))) => {
                    assert_eq!((found.len(), offset), (1, at as u64), "bit {bit}")
                }
                (found, None) => assert_eq!(found[1].2, 4, "bit {bit}"),
            }
            match inflate(&damaged) {
                Ok(out) => assert_eq!(out, [&b"[0]\n"[..], data].concat(), "bit {bit}"),
                Err(err) => assert_eq!(corrupt_at(err).0, at as u64, "bit {bit}"),
            }
        }
    }

    #[test]
    fn old_style_members_are_read_as_foreign() {
        let data = jsonl(11, 3000);
        let mut old = old_style(&ours(&data));
        // Their count is not protected, so it is not believed: they are inflated and their lines counted.
        old[20..24].copy_from_slice(&77u32.to_le_bytes());
        assert_eq!(multi_gz_decode(&old), data);
        let stream = [old.clone(), ours(b"{}\n")].concat();
        let (found, stop) = scan(&stream, 0);
        assert_eq!(stop, None);
        assert_eq!(
            found[0],
            (0, old.len() as u64, u64::from(count_messages(&data)))
        );
        assert_eq!(found[1].2, 1);
        assert_eq!(inflate(&stream).unwrap(), [&data[..], b"{}\n"].concat());
    }

    #[test]
    fn inflating_checks_the_message_count() {
        let data = b"[1]\n\n[2]\r\n";
        let stream = [ours(b"{}\n"), member(data, 6, 3, false).unwrap()].concat();
        let (offset, truncated, reason) = corrupt_at(inflate(&stream).unwrap_err());
        assert_eq!((offset, truncated), (ours(b"{}\n").len() as u64, false));
        assert_eq!(reason, "its header says 3 messages but it holds 2");
        assert_eq!(inflate(&member(data, 6, 2, false).unwrap()).unwrap(), data);
    }

    #[test]
    fn parallel_is_serial_byte_for_byte() {
        let frames: Vec<Vec<u8>> = (0..24)
            .map(|i| jsonl(i, 1000 + i as usize * 9000))
            .collect();
        let total: usize = frames.iter().map(Vec::len).sum();
        assert!(total > 2 * PARALLEL_MIN);
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let counts: Vec<u32> = refs.iter().map(|f| count_messages(f)).collect();
        let turns: Vec<bool> = (0..refs.len()).map(|i| i % 3 == 1).collect();
        let parallel = members(&refs, &counts, &turns, 6).unwrap();
        let serial: Vec<Vec<u8>> = (0..refs.len())
            .map(|i| member(refs[i], 6, counts[i], turns[i]).unwrap())
            .collect();
        assert_eq!(parallel, serial);
        assert_eq!(inflate(&parallel.concat()).unwrap(), frames.concat());
        assert!(matches!(
            members(&refs, &counts[1..], &turns, 6),
            Err(Error::Invalid(why)) if why == "24 frames but 23 counts and 24 turn flags"
        ));
        assert!(members(&refs, &counts, &turns[1..], 6).is_err());
    }

    #[test]
    fn foreign_members_are_inflated_to_find_their_end() {
        let (a, b, c) = (jsonl(6, 5000), jsonl(7, 300), jsonl(8, 40000));
        let mine = ours(&b);
        let (fa, fc) = (foreign(&a), foreign(&c));
        let stream = [fa.clone(), mine.clone(), fc.clone()].concat();
        let count = |d: &[u8]| u64::from(count_messages(d));
        assert_eq!(
            scan(&stream, 7),
            (
                vec![
                    (7, fa.len() as u64, count(&a)),
                    (7 + fa.len() as u64, mine.len() as u64, count(&b)),
                    (
                        7 + (fa.len() + mine.len()) as u64,
                        fc.len() as u64,
                        count(&c)
                    ),
                ],
                None
            )
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
        let whole = stream.len() - head.len() - tail.len();
        assert_eq!(
            scan(&stream, 0),
            (
                vec![
                    (0, whole as u64, u64::from(count_messages(&data))),
                    (whole as u64, head.len() as u64, 1),
                    ((whole + head.len()) as u64, tail.len() as u64, 1),
                ],
                None
            )
        );
        assert_eq!(
            inflate(&stream).unwrap(),
            [&data[..], b"[1]\r\n[2]"].concat()
        );
        // Damage in a later member of such a run: the members before it are returned, as far as they go.
        let mut damaged: Vec<u8> = data.chunks(1000).flat_map(foreign).collect();
        let second = foreign(&data[..1000]).len();
        damaged.truncate(second + 30);
        let (found, stop) = scan(&damaged, 0);
        assert_eq!(
            found,
            [(0, second as u64, u64::from(count_messages(&data[..1000])))]
        );
        assert_eq!(stop.map(|s| (s.0, s.1)), Some((second as u64, true)));
    }

    /// Found by the gzip fuzz target's check that the scan's counts (what `len()` returns without an index) add up
    /// to the lines `inflate` returns (what `load()` reads): members of ours were counted as whole lines without
    /// being required to be, so a line cut across two members counted twice (`len()` 2, `load()` one message), and
    /// an append after a gzip tool's file without its final line break joined the new line to the old.
    #[test]
    fn members_of_ours_hold_whole_lines() {
        // Two members of ours that cut a line: the first is damage.
        let split = [
            member(b"{\"a\":", 6, 1, false).unwrap(),
            member(b"1}\n", 6, 1, false).unwrap(),
        ]
        .concat();
        let (offset, truncated, reason) = corrupt_at(inflate(&split).unwrap_err());
        assert_eq!(
            (offset, truncated, reason.as_str()),
            (0, false, "its data ends inside a line")
        );
        // A line break of either kind ends it; so does having no data.
        for data in [&b"[1]\n"[..], b"[1]\r", b""] {
            assert_eq!(
                inflate(&member(data, 6, count_messages(data), false).unwrap()).unwrap(),
                data
            );
        }
        // A foreign member without its last line break, then one of ours (what `gzip` of a file without a final
        // newline, then an append, makes): the scan stops at ours, and inflating fails there too.
        let (head, ours) = (
            foreign(b"{\"a\":1}"),
            member(b"{\"b\":2}\n", 6, 1, false).unwrap(),
        );
        let stream = [head.clone(), ours.clone()].concat();
        let at = head.len() as u64;
        assert_eq!(
            scan(&stream, 0),
            (vec![(0, at, 1)], Some((at, false, CUT_LINE.to_owned())))
        );
        assert_eq!(
            corrupt_at(inflate(&stream).unwrap_err()),
            (at, false, CUT_LINE.to_owned())
        );
        // Alone, that foreign member is a whole last line; a foreign line break after it lets ours follow.
        assert_eq!(scan(&head, 0), (vec![(0, at, 1)], None));
        let mended = [head, foreign(b"\n"), ours].concat();
        assert_eq!(scan(&mended, 0).1, None);
        assert_eq!(inflate(&mended).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
        let counted: u64 = scan(&mended, 0).0.iter().map(|m| m.2).sum();
        assert_eq!(counted, 2);
    }

    #[test]
    fn every_truncation_is_reported_as_one() {
        let (a, b) = (b"{\"a\":1}\n[2]\n".as_slice(), b"\"three\"\n".as_slice());
        let first = member(a, 6, 2, false).unwrap();
        for second in [
            member(b, 6, 1, false).unwrap(),
            foreign(b),
            old_style(&ours(b)),
        ] {
            let stream = [first.clone(), second].concat();
            for cut in 1..stream.len() {
                let part = &stream[..cut];
                if cut == first.len() {
                    assert_eq!(inflate(part).unwrap(), a);
                    assert_eq!(scan(part, 9), (vec![(9, cut as u64, 2)], None));
                    continue;
                }
                let at = if cut < first.len() { 0 } else { first.len() };
                let (found, stop) = scan(part, 9);
                assert_eq!(found.len(), usize::from(at > 0), "cut {cut}");
                let (offset, truncated, _) = stop.unwrap();
                assert_eq!((offset, truncated), (9 + at as u64, true), "cut {cut}");
                let (offset, truncated, _) = corrupt_at(inflate(part).unwrap_err());
                assert_eq!((offset, truncated), (at as u64, true), "cut {cut}");
            }
        }
        // One byte of a file: a header cut short, not damage.
        assert_eq!(scan(b"\x1f", 0).1.map(|s| (s.0, s.1)), Some((0, true)));
        assert_eq!(scan(b"\x1f\x8b", 0).1.map(|s| (s.0, s.1)), Some((0, true)));
        let (found, stop) = scan(&[first.clone(), vec![0]].concat(), 0);
        assert_eq!(found.len(), 1);
        let (offset, truncated, reason) = stop.unwrap();
        assert_eq!((offset, truncated), (first.len() as u64, false));
        assert_eq!(reason, "not a gzip member");
        assert!(inflate(&[first, vec![0]].concat()).is_err());
    }

    #[test]
    fn damage_is_caught_when_inflating() {
        let data = jsonl(10, 20000);
        let mine = ours(&data);
        for at in [
            HEADER_LEN,
            HEADER_LEN + 1,
            mine.len() / 2,
            mine.len() - 9,
            mine.len() - 5,
        ] {
            let mut damaged = mine.clone();
            damaged[at] ^= 0xFF;
            assert_eq!(corrupt_at(inflate(&damaged).unwrap_err()).0, 0, "byte {at}");
        }
        let mut damaged = foreign(&data);
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0xFF;
        assert!(inflate(&damaged).is_err());
        let (found, stop) = scan(&damaged, 0);
        assert_eq!((found.len(), stop.map(|s| s.0)), (0, Some(0)));
        // A size field that swallows the next member, with a header CRC to match (a writer's bug, not a flipped
        // bit): scanning trusts it, inflating must not.
        let two = [mine.clone(), mine.clone()].concat();
        let mut swallowed = two.clone();
        swallowed[16..20].copy_from_slice(&(two.len() as u32).to_le_bytes());
        let hcrc = header_crc(&swallowed);
        swallowed[HCRC_AT..HEADER_LEN].copy_from_slice(&hcrc);
        assert_eq!(scan(&swallowed, 0).0.len(), 1);
        assert!(corrupt_at(inflate(&swallowed).unwrap_err())
            .2
            .contains("size field does not match"));
        // An ISIZE no deflate data could reach is refused before anything is allocated for it.
        let mut huge = mine.clone();
        let end = huge.len();
        huge[end - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(corrupt_at(inflate(&huge).unwrap_err()).2.contains("ISIZE"));
        let mut tiny = mine;
        tiny[16..20].copy_from_slice(&31u32.to_le_bytes());
        let hcrc = header_crc(&tiny);
        tiny[HCRC_AT..HEADER_LEN].copy_from_slice(&hcrc);
        let (_, stop) = scan(&tiny, 0);
        assert_eq!(
            stop.unwrap(),
            (0, false, "its size field says 31 bytes".to_owned())
        );
    }

    #[test]
    fn lines_counted_in_pieces_as_whole() {
        let text = "{\"a\":1}\r\n\u{a0}\u{3000}\n  \n\u{2028}x\n\u{85}\r\r\n[2]\n\x0b\x0c\n\u{1680}\u{3000}";
        let mut samples: Vec<Vec<u8>> =
            vec![text.as_bytes().to_vec(), b"\xe3\x80\n\xff\n".to_vec()];
        samples.push(b"\xe3\x80\x80\xe3\x80".to_vec()); // ends in a cut character: a message (not UTF-8)
        samples.push(b"\xc2\xa0\xc2".to_vec());
        for sample in &samples {
            let expect = u64::from(count_messages(sample));
            for step in 1..=sample.len() {
                let mut lines = LineCounter::default();
                for piece in sample.chunks(step) {
                    lines.feed(piece);
                }
                assert_eq!(lines.finish(), expect, "{sample:?} in pieces of {step}");
            }
        }
        // A line of any length is held in a few bytes.
        let mut lines = LineCounter::default();
        for _ in 0..1000 {
            lines.feed(&"\u{3000}".repeat(1000).as_bytes()[1..]);
            assert!(lines.partial.len() < 4);
        }
        assert!(lines.in_line);
        assert_eq!(lines.finish(), 1); // the cut characters make it not UTF-8
    }

    #[test]
    fn levels_outside_libdeflates_are_refused() {
        for level in [-1, 13, 100] {
            assert!(matches!(
                member(b"[]\n", level, 1, false),
                Err(Error::Invalid(why)) if why == format!("gzip level must be 0 to 12, not {level}")
            ));
            assert!(members(&[b"[]\n"], &[1], &[false], level).is_err());
        }
        let stored = member(b"[]\n", 0, 1, false).unwrap();
        assert_eq!(inflate(&stored).unwrap(), b"[]\n");
    }

    /// A foreign member that inflates to 1 GiB of zeros, in 1 MB. Made of one fully flushed (so byte-aligned and
    /// self-contained) deflate block of 1 MiB of zeros repeated: compressing the whole GiB takes minutes in a debug
    /// build. Its CRC is wrong, which only the end of the member would tell.
    fn bomb() -> Vec<u8> {
        let mut block = Vec::with_capacity(1 << 16);
        flate2::Compress::new(flate2::Compression::best(), false)
            .compress_vec(&vec![0; 1 << 20], &mut block, flate2::FlushCompress::Full)
            .unwrap();
        let mut end = Vec::with_capacity(64);
        flate2::Compress::new(flate2::Compression::fast(), false)
            .compress_vec(b"", &mut end, flate2::FlushCompress::Finish)
            .unwrap();
        let mut out = vec![0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 255];
        for _ in 0..1024 {
            out.extend_from_slice(&block);
        }
        out.extend_from_slice(&end);
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x40]);
        out
    }

    #[test]
    fn a_decompression_bomb_is_an_error_not_an_abort() {
        const CHILD: &str = "CONVERSATION_CODEC_BOMB_CHILD";
        if std::env::var_os(CHILD).is_some() {
            // In the child, under a 512 MiB address space limit (the test binary starts at about 80 MiB): the
            // growth of the inflated data's Vec used to abort the process here.
            let bomb = bomb();
            assert!(bomb.len() < 2 << 20, "{}", bomb.len());
            assert!(matches!(plan(&bomb, 0), Err(Error::NoMemory)));
            // The process is still sound after it.
            assert_eq!(inflate(&ours(b"[1]\n")).unwrap(), b"[1]\n");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let status = Command::new("sh")
            .args([
                "-c",
                "ulimit -v 524288 && exec \"$0\" --exact gzip::tests::a_decompression_bomb_is_an_error_not_an_abort --test-threads=1 -q",
            ])
            .arg(exe)
            .env(CHILD, "1")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "the child failed: {status:?}");
    }
}
