//! The plain-frame scanner (`scan_plain_frames`, behind `scan_plain`: index rebuilds, `len()` without an index,
//! torn-tail detection) against its contract (src/frames.rs, docs/FORMAT.md 1.2), restated here by way of
//! the validator alone:
//! - the frames follow on from `base` to `end`, none empty, each with the CRC of its bytes and the message count
//!   of its lines (a BOM at the start of the file skipped);
//! - each frame ends at a turn end (a `\n` not after a TAB), the first at or past `target` bytes, or at the end
//!   of the whole data;
//! - with no error, every line before `end` is JSON or blank, and what follows `end` is a torn tail: it holds no
//!   turn end, and the last line is not a whole last line (JSON or blank, not ending with a TAB);
//! - with an error, it is the first line that is not JSON, at the validator's offset and reason, and `end` is
//!   the start of the frame that holds it.
//!
//! The first input byte chooses `target` (its low 7 bits, times 8) and `base` (its high bit: 0, where a BOM is
//! skipped, or elsewhere in a file).

use codec::raw::{count_messages, scan_plain_frames, validate_line};

use crate::lines;

const BOM: &[u8] = b"\xEF\xBB\xBF";

pub fn check(input: &[u8]) {
    let Some((&choice, data)) = input.split_first() else {
        return;
    };
    let target = usize::from(choice & 0x7F) * 8;
    let base: u64 = if choice & 0x80 != 0 { 1 << 33 } else { 0 };
    let scan = scan_plain_frames(data, base, target);
    let ctx = || {
        format!(
            "{:?} base {base} target {target}",
            String::from_utf8_lossy(data)
        )
    };
    let skip = if base == 0 && data.starts_with(BOM) {
        BOM.len()
    } else {
        0
    };

    let mut at = 0usize;
    for (i, &(offset, length, count, crc)) in scan.frames.iter().enumerate() {
        assert_eq!(
            offset,
            base + at as u64,
            "frames do not follow on: {}",
            ctx()
        );
        assert!(length > 0, "an empty frame: {}", ctx());
        let end = at + length as usize;
        let bytes = &data[at..end];
        assert_eq!(crc, crc32fast::hash(bytes), "frame CRC: {}", ctx());
        let counted = &data[at.max(skip)..end];
        assert_eq!(
            count,
            u64::from(count_messages(counted)),
            "frame {i} count: {}",
            ctx()
        );
        let last = i + 1 == scan.frames.len();
        if !(last && end == data.len()) {
            assert!(
                turn_end(data, end),
                "frame {i} does not end at a turn end: {}",
                ctx()
            );
        }
        // No earlier turn end at or past the target.
        if let Some(early) = (at + target.max(1)..end).find(|&e| turn_end(data, e)) {
            panic!("frame {i} runs past the turn end at {early}: {}", ctx());
        }
        at = end;
    }
    assert_eq!(
        scan.end,
        base + at as u64,
        "end is not the last frame's end: {}",
        ctx()
    );

    // The first line that is not JSON: its start, and the validator's offset and reason.
    let first_bad = lines(&data[skip..]).into_iter().find_map(|(start, line)| {
        validate_line(line)
            .err()
            .map(|(o, why)| (skip + start, skip + start + o, why))
    });
    match scan.error {
        None => {
            if let Some((_, bad, _)) = first_bad {
                assert!(
                    bad >= at,
                    "a bad line before end {at} and no error: {}",
                    ctx()
                );
            }
            if at < data.len() {
                if let Some(e) = (at + 1..=data.len()).find(|&e| turn_end(data, e)) {
                    panic!("the tail holds a turn end at {e}: {}", ctx());
                }
                let from = data[skip..]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(skip, |nl| skip + nl + 1);
                let last_line = &data[from..];
                let whole = !last_line.is_empty()
                    && last_line.last() != Some(&b'\t')
                    && last_line
                        .split(|&b| b == b'\r')
                        .all(|l| validate_line(l).is_ok());
                assert!(!whole, "a whole last line left as a tail: {}", ctx());
            }
        }
        Some((offset, reason)) => {
            let (line_start, bad, why) =
                first_bad.unwrap_or_else(|| panic!("an error but every line is JSON: {}", ctx()));
            assert_eq!(
                (offset, reason),
                (base + bad as u64, why),
                "not the first bad line: {}",
                ctx()
            );
            assert!(line_start >= at, "the error is inside a frame: {}", ctx());
            // The frame that holds it starts at `end`: it would have been cut at a turn end past the target.
            if let Some(e) = (at + target.max(1)..=line_start).find(|&e| turn_end(data, e)) {
                panic!("the bad line's frame should have started at {e}: {}", ctx());
            }
        }
    }
}

/// Whether a turn ends just before `data[e]`: after a `\n` that does not follow a TAB.
fn turn_end(data: &[u8], e: usize) -> bool {
    e > 0 && data[e - 1] == b'\n' && (e < 2 || data[e - 2] != b'\t')
}
