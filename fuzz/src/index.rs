//! The index reader (`parse_header`, `parse_records`: docs/FORMAT.md, section 2): what it accepts is exactly what
//! the writer would have written, and every refusal has a reason a reader can see in the bytes (a length that
//! is not whole records, a record whose own CRC does not match, records that do not follow on).
//!
//! The input is a choice byte, then an index file: a header, then records. When the choice byte is odd, every
//! CRC is made right first, so that the fuzzer explores the fields beyond the CRCs (a forger can make CRCs
//! match). The first record's (offset, before) is also passed as `first`, and a shifted one must be refused.

use codec::raw::{header, parse_header, parse_records, Record, HEADER_LEN, RECORD_LEN};

pub fn check(input: &[u8]) {
    let Some((&choice, data)) = input.split_first() else {
        return;
    };
    let mut data = data.to_vec();
    if choice & 1 != 0 {
        fix_crcs(&mut data);
    }
    let data = &data[..];
    let ctx = || format!("{data:02x?}");
    if let Some((dev, ino)) = parse_header(data) {
        // The reserved bytes 28..32 are not read.
        assert_eq!(
            header(dev, ino)[..28],
            data[..28],
            "header round trip: {}",
            ctx()
        );
    } else if data.len() >= HEADER_LEN {
        assert!(
            data[..8] != header(0, 0)[..8]
                || crc32fast::hash(&data[..24]).to_le_bytes() != data[24..28],
            "a sound header refused: {}",
            ctx()
        );
    }

    let body = data.get(HEADER_LEN..).unwrap_or_default();
    match parse_records(body, None) {
        Some(records) => {
            assert_eq!(records.len() * RECORD_LEN, body.len(), "{}", ctx());
            for (i, (r, chunk)) in records
                .iter()
                .zip(body.chunks_exact(RECORD_LEN))
                .enumerate()
            {
                assert_eq!(
                    r.to_bytes()[..],
                    chunk[..],
                    "record {i} round trip: {}",
                    ctx()
                );
                if let Some(next) = records.get(i + 1) {
                    assert_eq!(
                        Some(next.offset),
                        r.end(),
                        "records {i}, {} gap: {}",
                        i + 1,
                        ctx()
                    );
                    assert_eq!(
                        Some(next.before),
                        r.before.checked_add(u64::from(r.count)),
                        "{}",
                        ctx()
                    );
                }
            }
            if let Some(first) = records.first() {
                let from = (first.offset, first.before);
                assert_eq!(
                    parse_records(body, Some(from)).as_ref(),
                    Some(&records),
                    "{}",
                    ctx()
                );
                let shifted = (first.offset.wrapping_add(1), first.before);
                assert_eq!(parse_records(body, Some(shifted)), None, "{}", ctx());
            }
        }
        None => {
            let whole = body.len() % RECORD_LEN == 0;
            let parsed: Vec<Option<Record>> = body
                .chunks_exact(RECORD_LEN)
                .map(Record::from_bytes)
                .collect();
            let follow_on = parsed.windows(2).all(|pair| match pair {
                [Some(a), Some(b)] => {
                    a.end() == Some(b.offset)
                        && a.before.checked_add(u64::from(a.count)) == Some(b.before)
                }
                _ => true,
            });
            // The last record's end must be representable too.
            let last_fits = parsed.last().and_then(|r| r.as_ref()).is_none_or(|r| {
                r.end().is_some() && r.before.checked_add(u64::from(r.count)).is_some()
            });
            assert!(
                !whole || parsed.iter().any(Option::is_none) || !follow_on || !last_fits,
                "sound records refused: {}",
                ctx()
            );
        }
    }
}

/// Sets the header's and every whole record's CRC to match their bytes.
fn fix_crcs(data: &mut [u8]) {
    if data.len() >= HEADER_LEN {
        let crc = crc32fast::hash(&data[..24]);
        data[24..28].copy_from_slice(&crc.to_le_bytes());
    }
    if let Some(body) = data.get_mut(HEADER_LEN..) {
        for chunk in body.chunks_exact_mut(RECORD_LEN) {
            let crc = crc32fast::hash(&chunk[..28]);
            chunk[28..32].copy_from_slice(&crc.to_le_bytes());
        }
    }
}
