//! The gzip scanner (`scan_members`, behind `scan_gzip`) and inflater (`inflate`, what `gunzip` returns) against
//! their contract (src/gzip.rs, docs/FORMAT.md 1.3) and against flate2:
//! - a scan never fails (damage is a stop, not an error); its entries follow on from `base`, and it stops where
//!   they end, or goes to the end of the data;
//! - `inflate` refuses what the scan stops at; what it accepts, flate2's multi-member decoder reads as the same
//!   bytes, and the scan's message counts add up to the lines of those bytes;
//! - an error names an offset inside the data;
//! - any input, taken as a frame's JSONL (ended with a line break), makes a member that both read back (the
//!   writer's round trip).
//!
//! The first input byte chooses `base` (low bit: 0 or far into a file) and the compression level (the rest).

use std::io::Read;

use codec::raw::{count_messages, inflate, member, scan_members, Error};

pub fn check(input: &[u8]) {
    let Some((&choice, data)) = input.split_first() else {
        return;
    };
    let base: u64 = if choice & 1 != 0 { 1 << 40 } else { 0 };
    let ctx = || format!("{data:02x?} base {base}");

    let (members, stop) =
        scan_members(data, base).unwrap_or_else(|e| panic!("scan failed: {e:?}: {}", ctx()));
    let mut at = base;
    for &(offset, length, _) in &members {
        assert_eq!(offset, at, "entries do not follow on: {}", ctx());
        assert!(length > 0, "an empty entry: {}", ctx());
        at += length;
    }
    match &stop {
        None => assert_eq!(
            at,
            base + data.len() as u64,
            "no stop but not at the end: {}",
            ctx()
        ),
        Some((offset, _, _)) => {
            assert_eq!(*offset, at, "a stop away from the entries' end: {}", ctx())
        }
    }

    match inflate(data, base) {
        Ok(out) => {
            assert!(
                stop.is_none(),
                "inflate took what the scan stopped at ({stop:?}): {}",
                ctx()
            );
            let mut theirs = Vec::new();
            // An empty stream is the empty conversation to us, a missing header to flate2.
            if !data.is_empty() {
                flate2::read::MultiGzDecoder::new(data)
                    .read_to_end(&mut theirs)
                    .unwrap_or_else(|e| panic!("ours inflated, flate2 failed ({e}): {}", ctx()));
            }
            assert!(
                out == theirs,
                "ours and flate2 inflate differently: {}",
                ctx()
            );
            let counted: u64 = members.iter().map(|m| m.2).sum();
            assert_eq!(
                counted,
                u64::from(count_messages(&out)),
                "the scan's counts are not the lines inflated: {}",
                ctx()
            );
        }
        Err(Error::Corrupt { offset, .. }) => {
            assert!(
                (base..=base + data.len() as u64).contains(&offset),
                "an error offset {offset} outside the data: {}",
                ctx()
            );
        }
        Err(Error::NoMemory) => {}
        Err(other) => panic!("inflate failed with {other:?}: {}", ctx()),
    }

    // A frame is whole lines: the input, ended with a line break if it has none.
    let mut frame = data.to_vec();
    if !matches!(frame.last(), None | Some(b'\n' | b'\r')) {
        frame.push(b'\n');
    }
    let data = &frame[..];
    let level = i32::from(choice >> 1) % 13;
    let count = count_messages(data);
    // The turn flag rides on the count's top bit: the scan must still report the plain count.
    let turn = (choice >> 5) & 1 == 1;
    let written = member(data, level, count, turn).expect("a member of a small frame");
    assert_eq!(
        inflate(&written, base).expect("our own member"),
        data,
        "round trip at level {level}"
    );
    let (entries, stop) = scan_members(&written, base).expect("scan of our own member");
    assert_eq!(
        entries,
        [(base, written.len() as u64, u64::from(count))],
        "our member's entry"
    );
    assert!(stop.is_none());
}
