//! Frames, the units a data file is cut into (docs/FORMAT.md, 1.2): finding them and counting their messages
//! without building any Python object, with the GIL released. This is what rebuilding an index and counting a
//! file without one cost.

use pyo3::prelude::*;

use crate::scan::is_message_line;

/// A frame as the index records it: offset, stored length, messages, CRC-32 of the stored bytes.
pub type FrameInfo = (u64, u32, u32, u32);

/// Cuts plain JSONL into frames of whole lines of about `target` bytes each (a frame ends after a `\n`, so a
/// `\r\n` is never split; a last line without a line break ends the last frame).
pub fn plain_frames(data: &[u8], base: u64, target: usize) -> Vec<FrameInfo> {
    let mut frames = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let want = (start + target.max(1)).min(data.len());
        let end = memchr::memchr(b'\n', &data[want - 1..]).map_or(data.len(), |i| want + i);
        let frame = &data[start..end];
        frames.push((
            base + start as u64,
            frame.len() as u32,
            count_messages(frame),
            crc32fast::hash(frame),
        ));
        start = end;
    }
    frames
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

/// Frames of plain JSONL `data` that starts at `base` in its file: `(offset, length, count, crc)` tuples.
#[pyfunction]
#[pyo3(signature = (data, /, *, base = 0, target = 131072))]
pub fn scan_plain(py: Python<'_>, data: &[u8], base: u64, target: usize) -> Vec<FrameInfo> {
    py.detach(|| plain_frames(data, base, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_end_after_a_newline_and_cover_everything() {
        let data = b"{\"a\":1}\r\n\r\n[2]\n\x0c\n\"three\"\r\"four\"\n5";
        for target in [1, 2, 5, 9, 10, 11, 20, 1000] {
            let frames = plain_frames(data, 100, target);
            let mut at = 100;
            for &(offset, length, _, crc) in &frames {
                assert_eq!(offset, at);
                let frame =
                    &data[(offset - 100) as usize..(offset - 100) as usize + length as usize];
                assert!(
                    frame.ends_with(b"\n") || offset - 100 + length as u64 == data.len() as u64
                );
                assert_eq!(crc, crc32fast::hash(frame));
                at += length as u64;
            }
            assert_eq!(at, 100 + data.len() as u64, "target {target}");
            assert_eq!(
                frames.iter().map(|f| f.2).sum::<u32>(),
                5,
                "target {target}"
            );
        }
    }

    #[test]
    fn blank_lines_are_not_messages() {
        assert_eq!(count_messages(b""), 0);
        assert_eq!(count_messages(b"\n\n \t\n"), 0);
        assert_eq!(count_messages("\u{a0}\n\u{3000}\n\x0b\n".as_bytes()), 0);
        assert_eq!(count_messages(b"1\r2\r\n3\n  4  "), 4);
        assert_eq!(count_messages(b"not json\n"), 1); // a message all the same: loading it reports the error
    }
}
