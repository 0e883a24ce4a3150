//! Byte-level JSON lexing shared by the encoder and the decoder: finding the bytes of a string that need
//! attention eight at a time, the number grammar, escapes. Pure Rust, no Python: unit-tested with `cargo test`.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `w` is zero. Exact as a yes/no (the classic bit trick from "Bit Twiddling Hacks").
#[inline(always)]
const fn has_zero_byte(w: u64) -> bool {
    w.wrapping_sub(ONES) & !w & HIGHS != 0
}

/// Whether any byte of `w` is below `n` (n <= 128). Exact as a yes/no.
#[inline(always)]
const fn has_byte_below(w: u64, n: u8) -> bool {
    w.wrapping_sub(ONES * n as u64) & !w & HIGHS != 0
}

/// Whether a byte stops a plain run inside a JSON string: a quote, a backslash or a control character.
#[inline(always)]
pub const fn is_string_special(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

#[inline(always)]
const fn word_has_special(w: u64) -> bool {
    has_zero_byte(w ^ (ONES * b'"' as u64))
        || has_zero_byte(w ^ (ONES * b'\\' as u64))
        || has_byte_below(w, 0x20)
}

/// The index of the first quote, backslash or control byte in `s` at or after `from` (or `s.len()`), and
/// whether any byte before it is non-ASCII.
#[inline]
pub fn find_string_special(s: &[u8], from: usize) -> (usize, bool) {
    let mut i = from;
    let mut high = false;
    #[cfg(target_arch = "x86_64")]
    while i + 16 <= s.len() {
        // SAFETY: 16 readable bytes at `i`; SSE2 is part of x86_64.
        let (special, non_ascii) = unsafe { sse2::masks(s.as_ptr().add(i)) };
        if special != 0 {
            let k = special.trailing_zeros();
            return (i + k as usize, high || non_ascii & ((1 << k) - 1) != 0);
        }
        high |= non_ascii != 0;
        i += 16;
    }
    let mut words = 0u64;
    while i + 8 <= s.len() {
        let w = u64::from_le_bytes(s[i..i + 8].try_into().unwrap());
        if word_has_special(w) {
            break;
        }
        words |= w;
        i += 8;
    }
    high |= words & HIGHS != 0;
    while i < s.len() {
        let b = s[i];
        if is_string_special(b) {
            return (i, high);
        }
        high |= b >= 0x80;
        i += 1;
    }
    (i, high)
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use core::arch::x86_64::*;

    /// Bit masks over 16 bytes at `p`: the string-special bytes, and the non-ASCII bytes.
    ///
    /// # Safety
    /// `p` must point to 16 readable bytes.
    #[inline(always)]
    pub unsafe fn masks(p: *const u8) -> (u32, u32) {
        // SAFETY: the caller guarantees 16 readable bytes at `p` (the load is unaligned: loadu); the rest are
        // register operations of SSE2, which every x86_64 target has.
        unsafe {
            let chunk = _mm_loadu_si128(p.cast());
            let quote = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'\\' as i8));
            // Unsigned `byte <= 0x1F`: max(byte, 0x1F) == 0x1F.
            let control = _mm_cmpeq_epi8(
                _mm_max_epu8(chunk, _mm_set1_epi8(0x1F)),
                _mm_set1_epi8(0x1F),
            );
            let special = _mm_or_si128(_mm_or_si128(quote, backslash), control);
            (
                _mm_movemask_epi8(special) as u32,
                _mm_movemask_epi8(chunk) as u32,
            )
        }
    }
}

/// The end of a JSON number starting at `start` (just past an optional '-', whose digits are checked by the
/// caller), following the stdlib's grammar `-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?`: an optional part that does
/// not match in full is not part of the number ("1." is the number 1 followed by "."). Returns the end and
/// whether a fraction or exponent was present (then Python makes a float, otherwise an int).
#[inline]
pub fn scan_number(s: &[u8], digits_start: usize) -> Option<(usize, bool)> {
    let mut i = digits_start;
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            i += 1;
            while matches!(s.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
        }
        _ => return None,
    }
    let mut is_float = false;
    if s.get(i) == Some(&b'.') && matches!(s.get(i + 1), Some(b'0'..=b'9')) {
        i += 2;
        while matches!(s.get(i), Some(b'0'..=b'9')) {
            i += 1;
        }
        is_float = true;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(s.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if matches!(s.get(j), Some(b'0'..=b'9')) {
            while matches!(s.get(j), Some(b'0'..=b'9')) {
                j += 1;
            }
            i = j;
            is_float = true;
        }
    }
    Some((i, is_float))
}

/// The value of the four hex digits at `s[i..i + 4]`, if they are hex digits.
#[inline]
pub fn hex4(s: &[u8], i: usize) -> Option<u32> {
    let digits = s.get(i..i + 4)?;
    let mut v = 0u32;
    for &d in digits {
        v = (v << 4) | (d as char).to_digit(16)?;
    }
    Some(v)
}

/// Appends the UTF-8 form of code point `c`. Surrogates (0xD800..=0xDFFF) are written in the same three-byte
/// form ("generalized UTF-8", as Python's "surrogatepass" reads it); callers track when they did that.
#[inline]
pub fn push_code_point(out: &mut Vec<u8>, c: u32) {
    if c < 0x80 {
        out.push(c as u8);
    } else if c < 0x800 {
        out.extend_from_slice(&[0xC0 | (c >> 6) as u8, 0x80 | (c & 0x3F) as u8]);
    } else if c < 0x10000 {
        out.extend_from_slice(&[
            0xE0 | (c >> 12) as u8,
            0x80 | ((c >> 6) & 0x3F) as u8,
            0x80 | (c & 0x3F) as u8,
        ]);
    } else {
        out.extend_from_slice(&[
            0xF0 | (c >> 18) as u8,
            0x80 | ((c >> 12) & 0x3F) as u8,
            0x80 | ((c >> 6) & 0x3F) as u8,
            0x80 | (c & 0x3F) as u8,
        ]);
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends the JSON escape of a character that cannot stand raw in a JSON string: a quote, a backslash, a
/// control character, or (as `\udXXX`, as the stdlib writes it) a lone surrogate.
#[cold]
pub fn push_escape(out: &mut Vec<u8>, c: u32) {
    match c {
        0x22 => out.extend_from_slice(b"\\\""),
        0x5C => out.extend_from_slice(b"\\\\"),
        0x0A => out.extend_from_slice(b"\\n"),
        0x0D => out.extend_from_slice(b"\\r"),
        0x09 => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0C => out.extend_from_slice(b"\\f"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'u',
            HEX[(c >> 12) as usize & 0xF],
            HEX[(c >> 8) as usize & 0xF],
            HEX[(c >> 4) as usize & 0xF],
            HEX[c as usize & 0xF],
        ]),
    }
}

/// Appends `s` (ASCII) as the inside of a JSON string, escaping what must be escaped.
#[inline]
pub fn push_escaped_ascii(out: &mut Vec<u8>, s: &[u8]) {
    let mut start = 0;
    loop {
        let (stop, _) = find_string_special(s, start);
        out.extend_from_slice(&s[start..stop]);
        if stop == s.len() {
            return;
        }
        push_escape(out, s[stop] as u32);
        start = stop + 1;
    }
}

/// JSON's whitespace within a line (line breaks never are within one).
#[inline]
pub fn skip_ws(line: &[u8], mut at: usize) -> usize {
    while matches!(line.get(at), Some(b' ' | b'\t')) {
        at += 1;
    }
    at
}

#[inline]
pub fn first_value(line: &[u8]) -> usize {
    skip_ws(line, 0)
}

/// A line made only of whitespace of a kind JSON does not know (form feed, NBSP...): the original's
/// `if line.strip()` skipped such lines, so they are not messages.
#[cold]
pub fn is_blank(line: &[u8]) -> bool {
    std::str::from_utf8(line).is_ok_and(|s| s.chars().all(is_python_space))
}

/// Whether a line (without its line break) holds a message: the one rule shared by the decoder and the
/// frame scanner, so that counting and loading agree.
#[inline]
pub fn is_message_line(line: &[u8]) -> bool {
    first_value(line) != line.len()
        && !(matches!(line[first_value(line)], 0x0B | 0x0C | 0x1C..=0x1F | 0xC2..=0xE3)
            && is_blank(line))
}

/// Whether `c` is one of the characters Python's `str.isspace()` accepts (the original loader skipped lines
/// made only of them).
pub fn is_python_space(c: char) -> bool {
    matches!(c, '\t'..='\r' | '\x1c'..='\x1f' | ' ' | '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}'
        | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_bytes_are_found_at_every_offset() {
        for special in [b'"', b'\\', 0x00, 0x1F, b'\n'] {
            for len in 0..40 {
                for at in 0..len {
                    let mut s = vec![b'a'; len];
                    s[at] = special;
                    assert_eq!(find_string_special(&s, 0), (at, false), "len {len} at {at}");
                }
            }
        }
    }

    #[test]
    fn no_false_positive_on_neighbouring_bytes() {
        // Bytes next to the special ones (0x20, '#', ']', 0x7F, 0x80, 0xFF) must not stop a run.
        let s: Vec<u8> = [0x20u8, b'#', b'!', b']', b'[', 0x7F, 0x80, 0xFF, 0xDC, 0x5D].repeat(5);
        assert_eq!(find_string_special(&s, 0), (s.len(), true));
    }

    #[test]
    fn non_ascii_is_reported_only_before_the_stop() {
        assert_eq!(find_string_special("abcdefgh\"é".as_bytes(), 0), (8, false));
        assert_eq!(
            find_string_special("éabcdefghij\"".as_bytes(), 0),
            (12, true)
        );
        assert_eq!(find_string_special(b"abc", 1), (3, false));
        // Non-ASCII after the stop, within the same 16-byte block, must not count.
        assert_eq!(
            find_string_special("0123456789\"é".as_bytes(), 0),
            (10, false)
        );
        assert_eq!(
            find_string_special("0123456789é\"".as_bytes(), 0),
            (12, true)
        );
        let long = format!("{}é{}\\", "a".repeat(40), "b".repeat(40));
        assert_eq!(
            find_string_special(long.as_bytes(), 0),
            (long.len() - 1, true)
        );
        let long = format!("{}\\é", "a".repeat(40));
        assert_eq!(find_string_special(long.as_bytes(), 0), (40, false));
    }

    #[test]
    fn number_grammar_matches_the_stdlib() {
        let cases: &[(&str, Option<(usize, bool)>)] = &[
            ("0", Some((1, false))),
            ("123", Some((3, false))),
            ("01", Some((1, false))),
            ("1.5", Some((3, true))),
            ("1.", Some((1, false))),
            ("1.e5", Some((1, false))),
            ("1e5", Some((3, true))),
            ("1E+05", Some((5, true))),
            ("1e-", Some((1, false))),
            ("1.5e", Some((3, true))),
            ("0.0]", Some((3, true))),
            (".5", None),
            ("", None),
            ("x", None),
        ];
        for (text, want) in cases {
            assert_eq!(scan_number(text.as_bytes(), 0), *want, "{text}");
        }
    }

    #[test]
    fn hex_digits() {
        assert_eq!(hex4(b"00e9", 0), Some(0xE9));
        assert_eq!(hex4(b"xDBFF", 1), Some(0xDBFF));
        assert_eq!(hex4(b"12g4", 0), None);
        assert_eq!(hex4(b"123", 0), None);
    }

    #[test]
    fn code_points_encode_as_utf8() {
        for c in [
            'a',
            'é',
            '€',
            '😀',
            '\u{7FF}',
            '\u{800}',
            '\u{FFFF}',
            '\u{10000}',
            '\u{10FFFF}',
        ] {
            let mut out = Vec::new();
            push_code_point(&mut out, c as u32);
            assert_eq!(out, c.to_string().as_bytes());
        }
        let mut out = Vec::new();
        push_code_point(&mut out, 0xD800);
        assert_eq!(out, [0xED, 0xA0, 0x80]);
    }

    #[test]
    fn escapes_are_what_the_stdlib_writes() {
        let mut out = Vec::new();
        push_escaped_ascii(&mut out, b"a\"b\\c\nd\re\tf\x08g\x0ch\x00i\x1f");
        assert_eq!(
            out,
            b"a\\\"b\\\\c\\nd\\re\\tf\\bg\\fh\\u0000i\\u001f".to_vec()
        );
        let mut out = Vec::new();
        push_escape(&mut out, 0xDABC);
        assert_eq!(out, b"\\udabc");
    }

    #[test]
    fn python_whitespace() {
        for c in ['\x0b', '\x0c', '\x1c', '\u{a0}', '\u{3000}', '\u{2028}'] {
            assert!(is_python_space(c));
        }
        for c in ['a', '\u{200b}', '\0'] {
            assert!(!is_python_space(c));
        }
    }
}
