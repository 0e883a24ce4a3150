//! Frames, the units a data file is cut into (docs/FORMAT.md, 1.2): finding them and counting their messages
//! without building any Python object, with the GIL released. This is what rebuilding an index and counting a
//! file without one cost.

use pyo3::prelude::*;

use crate::scan::is_message_line;
use crate::validate::{validate_line, validate_next_line};

/// A frame as the index records it: offset, stored length, messages, CRC-32 of the stored bytes.
pub type FrameInfo = (u64, u64, u64, u32);

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What `scan_plain` finds in plain JSONL: its whole frames, where they end, and the first line within them
/// that is not JSON (then the frames stop before the frame that holds it).
#[derive(Debug, PartialEq, Eq)]
pub struct PlainScan {
    pub frames: Vec<FrameInfo>,
    /// The end of the last frame (relative to the file, as the offsets are).
    pub end: u64,
    /// The file offset of the first error in a line of a would-be-whole frame, and the decoder's reason.
    pub error: Option<(u64, &'static str)>,
}

/// Whether a `\n` at `data[nl]` ends a turn: the lines of a turn but its last end with a TAB before the `\n`.
/// (A `\n` at the start of `data` follows the end of a frame, or nothing.)
#[inline]
fn ends_turn(data: &[u8], nl: usize) -> bool {
    nl == 0 || data[nl - 1] != b'\t'
}

/// The end of the last whole turn in `data`, whose first `skip` bytes are a BOM: after a `\n` that ends a
/// turn, or the end of the data when its last line has no `\n`, does not end with a TAB and is JSON or blank.
/// What follows is a torn write.
fn whole_end(data: &[u8], skip: usize) -> usize {
    let mut newline = memchr::memrchr(b'\n', &data[skip..]).map(|i| skip + i);
    let last = &data[newline.map_or(skip, |nl| nl + 1)..];
    if newline.is_none() && last.is_empty() {
        return data.len(); // nothing, or a BOM alone: a blank last line
    }
    // Lines split as the decoder splits them: a lone `\r` is a line break too, though never a turn's end.
    if !last.is_empty()
        && last.last() != Some(&b'\t')
        && last
            .split(|&b| b == b'\r')
            .all(|line| validate_line(line).is_ok())
    {
        return data.len();
    }
    while let Some(nl) = newline {
        if ends_turn(data, nl) {
            return nl + 1;
        }
        newline = memchr::memrchr(b'\n', &data[skip..nl]).map(|i| skip + i);
    }
    0
}

/// Cuts plain JSONL into frames of whole turns (docs/FORMAT.md, 1.2), each ending at the first turn end at or
/// after `target` bytes from its start, validating every line of them; bytes after the last whole turn are a
/// torn tail, left unvalidated. `data` starts at `base` in its file; at 0, a BOM is skipped as the decoder
/// skips it (its bytes belong to the first frame, which counts no message for it).
pub fn scan_plain_frames(data: &[u8], base: u64, target: usize) -> PlainScan {
    let skip = if base == 0 && data.starts_with(BOM) {
        BOM.len()
    } else {
        0
    };
    let whole = whole_end(data, skip);
    let mut frames = Vec::new();
    let (mut frame_start, mut count) = (0, 0u64);
    let push = |frames: &mut Vec<FrameInfo>, start: usize, end: usize, count: u64| {
        let frame = &data[start..end];
        frames.push((
            base + start as u64,
            frame.len() as u64,
            count,
            crc32fast::hash(frame),
        ));
    };
    let data = &data[..whole];
    let mut start = skip;
    while start < whole {
        let end = match validate_next_line(data, start) {
            Ok((end, message)) => {
                count += message as u64;
                end
            }
            Err((at, reason)) => {
                return PlainScan {
                    end: base + frame_start as u64,
                    frames,
                    error: Some((base + at as u64, reason)),
                };
            }
        };
        let newline = match data.get(end) {
            Some(b'\n') => Some(end),
            Some(b'\r') if data.get(end + 1) == Some(&b'\n') => Some(end + 1),
            _ => None,
        };
        start = newline.map_or(end + 1, |nl| nl + 1);
        if newline.is_some_and(|nl| ends_turn(data, nl)) && start - frame_start >= target {
            push(&mut frames, frame_start, start, count);
            (frame_start, count) = (start, 0);
        }
    }
    if whole > frame_start {
        push(&mut frames, frame_start, whole, count);
        frame_start = whole;
    }
    PlainScan {
        frames,
        end: base + frame_start as u64,
        error: None,
    }
}

/// The messages in JSONL text: its lines (split as the decoder splits them) that are not blank.
pub fn count_messages(data: &[u8]) -> u32 {
    let mut count = 0;
    let mut start = 0;
    while start < data.len() {
        let end = memchr::memchr2(b'\n', b'\r', &data[start..]).map_or(data.len(), |i| start + i);
        count += is_message_line(&data[start..end]) as u32;
        start = end + 1;
    }
    count
}

/// Plain JSONL `data` that starts at `base` in its file, cut into frames of whole turns: `(frames, end, error)`.
#[pyfunction]
#[pyo3(signature = (data, /, *, base = 0, target = 131072))]
#[allow(clippy::type_complexity)]
pub fn scan_plain(
    py: Python<'_>,
    data: &[u8],
    base: u64,
    target: usize,
) -> (Vec<FrameInfo>, u64, Option<(u64, &'static str)>) {
    let scan = py.detach(|| scan_plain_frames(data, base, target));
    (scan.frames, scan.end, scan.error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks what every scan must hold: frames follow on from `base` to `end`, each one's bytes and CRC, and
    /// (without an error) the tail after `end` is what the rules say. Returns the frames' (start, end, count).
    fn scan(data: &[u8], base: u64, target: usize) -> (Vec<(usize, usize, u64)>, usize) {
        let result = scan_plain_frames(data, base, target);
        let mut at = base;
        let mut out = Vec::new();
        for &(offset, length, count, crc) in &result.frames {
            assert_eq!(offset, at, "{data:?} target {target}");
            let (start, end) = ((offset - base) as usize, (offset - base + length) as usize);
            assert!(length > 0);
            assert_eq!(crc, crc32fast::hash(&data[start..end]));
            out.push((start, end, count));
            at += length;
        }
        assert_eq!(result.end, at);
        if let Some((offset, _)) = result.error {
            assert!(offset >= result.end);
        }
        (out, (result.end - base) as usize)
    }

    fn counts(data: &[u8], target: usize) -> (Vec<u64>, usize) {
        let (frames, end) = scan(data, 0, target);
        (frames.iter().map(|f| f.2).collect(), end)
    }

    #[test]
    fn frames_end_at_turn_ends_of_about_target_bytes() {
        let data = b"{\"a\":1}\r\n\r\n[2]\n\x0c\n\"three\"\r\"four\"\n5";
        for target in [0, 1, 2, 5, 9, 10, 11, 20, 1000] {
            let (frames, end) = scan(data, 100, target);
            assert_eq!(end, data.len(), "target {target}");
            assert_eq!(frames.iter().map(|f| f.2).sum::<u64>(), 5);
            for &(start, stop, _) in &frames {
                // A frame ends at the first turn end at or after `target` bytes, or at the end.
                assert!(stop - start >= target || stop == data.len());
                let inner = &data[start..stop - 1];
                let first_end = inner
                    .iter()
                    .position(|&b| b == b'\n')
                    .map(|i| start + i + 1);
                assert!(first_end.is_none_or(|e| e - start < target), "{target}");
            }
        }
        // A lone '\r' splits lines but never ends a turn.
        assert_eq!(
            scan(data, 0, 1).0.iter().map(|f| f.2).collect::<Vec<_>>(),
            [1, 0, 1, 0, 2, 1]
        );
        assert_eq!(counts(data, 1000), (vec![5], data.len()));
    }

    #[test]
    fn a_turn_is_its_lines_up_to_one_without_a_tab() {
        let data = b"1\t\n2\t\n3\n4\n5\t\n6\n";
        assert_eq!(counts(data, 1), (vec![3, 1, 2], data.len()));
        assert_eq!(counts(data, 0), (vec![3, 1, 2], data.len()));
        // A turn bigger than the target is one frame.
        assert_eq!(counts(data, 7), (vec![3, 3], data.len()));
        assert_eq!(counts(data, 8), (vec![3, 3], data.len()));
        assert_eq!(counts(data, 9), (vec![4, 2], data.len()));
        // A tab that is not just before the '\n' does not join lines; "\t\r\n" ends a turn ('\r' precedes '\n').
        assert_eq!(counts(b"1\t \n2\n", 1), (vec![1, 1], 6));
        assert_eq!(counts(b"1\t\r\n2\n", 1), (vec![1, 1], 6));
    }

    #[test]
    fn a_torn_turn_is_a_tail_from_its_start() {
        let data = b"[0]\n{\"a\":1}\t\n\t\n{\"b\":2}\t\n[3]\n";
        for cut in 0..=data.len() {
            let want = match cut {
                0..=2 => (vec![], 0),
                3 => (vec![1], 3), // "[0]": JSON without its '\n'
                // Cut between a line's JSON and its tab: the data cannot tell this from a hand-written last line
                // without a '\n', and the rule takes it as whole (docs: a known limit of the tab marking).
                11 => (vec![1, 1], 11),
                22 => (vec![1, 2], 22),
                27 | 28 => (vec![1, 3], cut),
                // Anywhere else in the turn, it is a tail from the turn's start.
                _ => (vec![1], 4),
            };
            assert_eq!(counts(&data[..cut], 1), want, "cut {cut}");
            assert_eq!(scan_plain_frames(&data[..cut], 0, 1).error, None);
        }
    }

    #[test]
    fn a_last_line_without_newline() {
        // Whole when it is JSON or blank and does not end with a tab.
        assert_eq!(counts(b"1\n2", 1), (vec![1, 1], 3));
        assert_eq!(counts(b"1\n  ", 1), (vec![1, 0], 4));
        assert_eq!(counts(b"1\n\x0c", 1), (vec![1, 0], 3));
        assert_eq!(counts(b"1\n2\r", 1), (vec![1, 1], 4));
        assert_eq!(counts(b"1\n2\r3", 1), (vec![1, 2], 5));
        // A tail otherwise, never an error.
        for tail in [&b"{\"a\""[..], b"2\t", b"\t", b"2 \t", b"2\r{"] {
            let data = [b"1\n", tail].concat();
            let result = scan_plain_frames(&data, 0, 1);
            assert_eq!(result.error, None, "{tail:?}");
            assert_eq!(counts(&data, 1), (vec![1], 2), "{tail:?}");
        }
        assert_eq!(counts(b"{\"a\"", 1), (vec![], 0));
        assert_eq!(counts(b"", 1), (vec![], 0));
    }

    #[test]
    fn errors_stop_before_the_frame_that_holds_them() {
        let data = b"1\n2\nx\n3\n";
        let result = scan_plain_frames(data, 10, 1);
        assert_eq!(result.frames.len(), 2);
        assert_eq!(
            (result.end, result.error),
            (14, Some((14, "expecting a value")))
        );
        // The frame that holds the bad line is dropped whole.
        let result = scan_plain_frames(data, 10, 1000);
        assert_eq!((result.frames, result.end), (vec![], 10));
        assert_eq!(result.error, Some((14, "expecting a value")));
        // The offset is the line's start plus the validator's column, after a CRLF too.
        let result = scan_plain_frames(b"[1]\r\n[1,]\r\n", 0, 1);
        assert_eq!(result.end, 5);
        assert_eq!(result.error, Some((8, "expecting a value")));
        // Within a multi-line turn, the whole turn goes.
        let result = scan_plain_frames(b"1\n2\t\n[\n3\n", 0, 1);
        assert_eq!(
            (result.end, result.error),
            (2, Some((6, "expecting a value")))
        );
        // A bad line in the tail is not an error.
        assert_eq!(scan_plain_frames(b"1\n2\t\n[\t\n", 0, 1).error, None);
    }

    #[test]
    fn a_bom_at_the_start_is_skipped() {
        let data = b"\xEF\xBB\xBF{\"a\":1}\n[2]\n";
        assert_eq!(counts(data, 1000), (vec![2], data.len()));
        assert_eq!(counts(data, 1), (vec![1, 1], data.len()));
        assert_eq!(scan(data, 0, 1).0[0], (0, 11, 1));
        assert_eq!(counts(b"\xEF\xBB\xBF\n1\n", 1), (vec![0, 1], 6));
        assert_eq!(counts(b"\xEF\xBB\xBF", 1), (vec![0], 3));
        assert_eq!(counts(b"\xEF\xBB\xBF1", 1), (vec![1], 4));
        assert_eq!(counts(b"\xEF\xBB\xBF[", 1), (vec![], 0));
        // Only at the start of the file.
        let result = scan_plain_frames(b"\xEF\xBB\xBF1\n", 5, 1);
        assert_eq!(
            (result.end, result.error),
            (5, Some((5, "expecting a value")))
        );
        let result = scan_plain_frames(b"1\n\xEF\xBB\xBF1\n", 0, 1);
        assert_eq!(
            (result.end, result.error),
            (2, Some((2, "expecting a value")))
        );
    }

    #[test]
    fn blank_lines_are_not_messages() {
        assert_eq!(counts(b"\n\n \n", 1000), (vec![0], 4));
        // A blank line ending with a tab continues a turn like any other line.
        assert_eq!(counts(b"\n\n \t\n", 1000), (vec![0], 2));
        assert_eq!(
            counts("\u{a0}\n\u{3000}\n\x0b\n1\n".as_bytes(), 1000),
            (vec![1], 11)
        );
        assert_eq!(count_messages(b""), 0);
        assert_eq!(count_messages(b"\n\n \t\n"), 0);
        assert_eq!(count_messages("\u{a0}\n\u{3000}\n\x0b\n".as_bytes()), 0);
        assert_eq!(count_messages(b"1\r2\r\n3\n  4  "), 4);
        assert_eq!(count_messages(b"not json\n"), 1); // a message all the same: loading it reports the error
    }

    #[test]
    fn lengths_are_not_truncated() {
        // A frame's length and count are u64 end to end; 5 GiB is too big to build here, so check the types.
        let frame: FrameInfo = (0, 5 << 30, 5 << 30, 0);
        assert_eq!(frame.1, 5_368_709_120);
    }
}
