//! Validating one JSONL line without building anything: the grammar of the decoder (`decode.rs`), checked by a
//! loop over an explicit stack of container kinds, so that counting the messages of a file without an index and
//! telling a torn tail from whole turns cost a pass over bytes, not the making of Python objects.
//!
//! It accepts exactly what the decoder accepts for one line, and reports the same offset and reason when it
//! refuses, with one exception: an int with more digits than Python's `sys.get_int_max_str_digits()` (4300 by
//! default) is accepted here, where CPython refuses to make it. Such a line is still valid JSON; loading it
//! reports the error.

use crate::encode::MAX_DEPTH;
use crate::scan::{find_string_special, first_value, hex4, is_blank, scan_number, skip_ws};

/// Why a line is not JSON: the byte offset within the line where the decoder stops, and its reason.
pub type Invalid = (usize, &'static str);

/// Whether `line` (without its line break) is a message (`Ok(true)`), a blank line (`Ok(false)`), or not JSON.
#[inline]
pub fn validate_line(line: &[u8]) -> Result<bool, Invalid> {
    let at = first_value(line);
    if at == line.len() {
        return Ok(false);
    }
    let result = value_end(line, at).and_then(|end| {
        let end = skip_ws(line, end);
        if end == line.len() {
            Ok(true)
        } else {
            Err((end, "extra data after the value"))
        }
    });
    match result {
        // Whitespace JSON does not know (form feed, NBSP...) fails at the first byte that is not a space or a
        // tab; the decoder skips such a line, as the original's `if line.strip()` did.
        Err((fail_at, _)) if fail_at == at && is_blank(line) => Ok(false),
        other => other,
    }
}

/// The line of JSONL `data` that starts at `start`, validated in the same pass that finds its end: returns the
/// end (the offset of its `\n` or `\r`, or the end of `data`) and whether it is a message; an error's offset is
/// within `data`.
///
/// A value that parses never holds a line break (strings stop at control bytes, whitespace within a line is
/// only spaces and tabs), so a value parsed from `data` that ends before a line break is that line's value.
/// Anything else, blank lines of form feeds included, takes the slow path of `validate_line` on the line alone.
#[inline]
pub fn validate_next_line(data: &[u8], start: usize) -> Result<(usize, bool), Invalid> {
    let at = skip_ws(data, start);
    match data.get(at) {
        None | Some(b'\n' | b'\r') => return Ok((at, false)),
        _ => {}
    }
    if let Ok(end) = value_end(data, at) {
        let end = skip_ws(data, end);
        if matches!(data.get(end), None | Some(b'\n' | b'\r')) {
            return Ok((end, true));
        }
    }
    slow_line(data, start)
}

#[cold]
fn slow_line(data: &[u8], start: usize) -> Result<(usize, bool), Invalid> {
    let end = memchr::memchr2(b'\n', b'\r', &data[start..]).map_or(data.len(), |i| start + i);
    match validate_line(&data[start..end]) {
        Ok(message) => Ok((end, message)),
        Err((at, reason)) => Err((start + at, reason)),
    }
}

/// The container kinds open at each level, one bit per level (set: object): no allocation per line, and a
/// depth bounded by the decoder's limit.
struct Stack {
    depth: usize,
    objects: [u64; MAX_DEPTH.div_ceil(64)],
}

impl Stack {
    #[inline(always)]
    fn push(&mut self, object: bool) {
        let (word, bit) = (self.depth / 64, self.depth % 64);
        self.objects[word] = (self.objects[word] & !(1 << bit)) | ((object as u64) << bit);
        self.depth += 1;
    }

    #[inline(always)]
    fn top_is_object(&self) -> bool {
        let d = self.depth - 1;
        (self.objects[d / 64] >> (d % 64)) & 1 != 0
    }
}

/// The end of the value starting at `line[at]` (not whitespace). The decoder's recursion, unrolled: after each
/// value, the innermost open container decides what comes next.
fn value_end(line: &[u8], mut at: usize) -> Result<usize, Invalid> {
    let mut stack = Stack {
        depth: 0,
        objects: [0; MAX_DEPTH.div_ceil(64)],
    };
    'value: loop {
        // A value starts at `at`.
        match line.get(at) {
            Some(b'"') => at = string_end(line, at)?,
            Some(&open @ (b'{' | b'[')) => {
                if stack.depth >= MAX_DEPTH {
                    return Err((at, "nested deeper than 1024 levels"));
                }
                at = skip_ws(line, at + 1);
                if open == b'{' {
                    match line.get(at) {
                        Some(b'}') => at += 1,
                        _ => {
                            stack.push(true);
                            at = member_value(line, at)?;
                            continue 'value;
                        }
                    }
                } else if line.get(at) == Some(&b']') {
                    at += 1;
                } else {
                    stack.push(false);
                    continue 'value;
                }
            }
            Some(b'-' | b'0'..=b'9') => at = number_end(line, at)?,
            Some(b't') if line[at..].starts_with(b"true") => at += 4,
            Some(b'f') if line[at..].starts_with(b"false") => at += 5,
            Some(b'n') if line[at..].starts_with(b"null") => at += 4,
            Some(b'N') if line[at..].starts_with(b"NaN") => at += 3,
            Some(b'I') if line[at..].starts_with(b"Infinity") => at += 8,
            _ => return Err((at, "expecting a value")),
        }
        // A value ended just before `at`: close containers until one wants another item.
        while stack.depth > 0 {
            at = skip_ws(line, at);
            let object = stack.top_is_object();
            match line.get(at) {
                Some(b',') => {
                    at = skip_ws(line, at + 1);
                    if object {
                        at = member_value(line, at)?;
                    }
                    continue 'value;
                }
                Some(b']') if !object => {}
                Some(b'}') if object => {}
                _ if object => return Err((at, "expecting ',' or '}'")),
                _ => return Err((at, "expecting ',' or ']'")),
            }
            at += 1;
            stack.depth -= 1;
        }
        return Ok(at);
    }
}

/// Checks `"key" :` at `line[at]` and returns where the member's value starts.
#[inline]
fn member_value(line: &[u8], at: usize) -> Result<usize, Invalid> {
    if line.get(at) != Some(&b'"') {
        return Err((at, "expecting a property name in double quotes"));
    }
    let at = skip_ws(line, string_end(line, at)?);
    if line.get(at) != Some(&b':') {
        return Err((at, "expecting ':'"));
    }
    Ok(skip_ws(line, at + 1))
}

#[inline]
fn number_end(line: &[u8], at: usize) -> Result<usize, Invalid> {
    let digits = at + (line[at] == b'-') as usize;
    if digits > at && line[digits..].starts_with(b"Infinity") {
        return Ok(digits + 8);
    }
    match scan_number(line, digits) {
        Some((end, _)) => Ok(end),
        None => Err((at, "expecting a value")),
    }
}

/// Raw string bytes with a non-ASCII byte must be UTF-8 as Python's strict codec reads it (no encoded
/// surrogates, no overlong forms): the rule of Rust's `str`.
#[inline]
fn utf8(raw: &[u8], non_ascii: bool, at: usize) -> Result<(), Invalid> {
    if non_ascii && std::str::from_utf8(raw).is_err() {
        return Err((at, "invalid UTF-8"));
    }
    Ok(())
}

/// The end (just past the closing quote) of the string opening at `line[open]`. The checks run in the
/// decoder's order, so that a string with two faults reports the same one.
#[inline]
fn string_end(line: &[u8], open: usize) -> Result<usize, Invalid> {
    let start = open + 1;
    let (stop, non_ascii) = find_string_special(line, start);
    match line.get(stop) {
        Some(b'"') => {
            utf8(&line[start..stop], non_ascii, start)?;
            Ok(stop + 1)
        }
        Some(b'\\') => {
            utf8(&line[start..stop], non_ascii, start)?;
            escaped_string_end(line, open, stop)
        }
        Some(_) => Err((stop, "invalid control character in string")),
        None => Err((open, "unterminated string")),
    }
}

/// The rest of a string with escapes, from its first backslash at `line[at]` (not cold: chat text is full of
/// `\n` and `\"`).
fn escaped_string_end(line: &[u8], open: usize, mut at: usize) -> Result<usize, Invalid> {
    loop {
        match line.get(at) {
            Some(b'"') => return Ok(at + 1),
            Some(b'\\') => match line.get(at + 1) {
                Some(b'"' | b'\\' | b'/' | b'n' | b't' | b'r' | b'b' | b'f') => at += 2,
                // Any code point, lone surrogates included ("\ud800"), as the stdlib reads them.
                Some(b'u') if hex4(line, at + 2).is_some() => at += 6,
                Some(b'u') => return Err((at, "invalid \\uXXXX escape")),
                _ => return Err((at, "invalid escape")),
            },
            Some(_) => {
                let (stop, non_ascii) = find_string_special(line, at);
                if stop == at {
                    return Err((stop, "invalid control character in string"));
                }
                utf8(&line[at..stop], non_ascii, at)?;
                at = stop;
            }
            None => return Err((open, "unterminated string")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str) -> Result<bool, Invalid> {
        validate_line(line.as_bytes())
    }

    #[test]
    fn accepts_json_and_the_stdlib_extras() {
        for line in [
            "0",
            "-0",
            "1.5e+10",
            "-12.0E-3",
            "true",
            "false",
            "null",
            "NaN",
            "Infinity",
            "-Infinity",
            "[NaN,-Infinity,Infinity]",
            "\"\"",
            "\"a\\\"b\\\\c\\/d\\n\\t\\r\\b\\f\"",
            "\"\\u00e9\\uD83D\\uDE00\"",
            "\"\\ud800\"",
            "\"\\udc00\\ud800x\"",
            "\"é😀\u{10FFFF}\"",
            "\"\u{7f}\"",
            "[]",
            "{}",
            "[ ]",
            "{ }",
            "[1, [2, {\"a\": [3]}], {}]",
            "{\"a\":{\"b\":{\"c\":[]}},\"d\":\"e\"}",
            " \t {\"role\" : \"user\" , \"content\":\"hi\"} \t ",
            "{\"a\":1,\"a\":2}",
        ] {
            assert_eq!(check(line), Ok(true), "{line}");
        }
    }

    #[test]
    fn refuses_what_the_decoder_refuses_at_the_same_offset() {
        let cases: &[(&str, usize, &str)] = &[
            ("x", 0, "expecting a value"),
            ("[1,]", 3, "expecting a value"),
            ("[,1]", 1, "expecting a value"),
            ("[1 2]", 3, "expecting ',' or ']'"),
            ("[1", 2, "expecting ',' or ']'"),
            ("[", 1, "expecting a value"),
            ("{", 1, "expecting a property name in double quotes"),
            (
                "{\"a\":1,}",
                7,
                "expecting a property name in double quotes",
            ),
            ("{'a':1}", 1, "expecting a property name in double quotes"),
            ("{\"a\" 1}", 5, "expecting ':'"),
            ("{\"a\":}", 5, "expecting a value"),
            ("{\"a\":1 \"b\":2}", 7, "expecting ',' or '}'"),
            ("{\"a\":1]", 6, "expecting ',' or '}'"),
            ("[1}", 2, "expecting ',' or ']'"),
            ("1 2", 2, "extra data after the value"),
            ("{} x", 3, "extra data after the value"),
            ("01", 1, "extra data after the value"),
            ("1.", 1, "extra data after the value"),
            ("-", 0, "expecting a value"),
            ("-a", 0, "expecting a value"),
            ("-NaN", 0, "expecting a value"),
            (".5", 0, "expecting a value"),
            ("+1", 0, "expecting a value"),
            ("nul", 0, "expecting a value"),
            ("tru", 0, "expecting a value"),
            ("infinity", 0, "expecting a value"),
            ("\"abc", 0, "unterminated string"),
            ("[\"a\\\"]", 1, "unterminated string"),
            ("\"a\\", 2, "invalid escape"),
            ("\"\\x\"", 1, "invalid escape"),
            ("\"\\'\"", 1, "invalid escape"),
            ("\"ab\\u12\"", 3, "invalid \\uXXXX escape"),
            ("\"\\u12G4\"", 1, "invalid \\uXXXX escape"),
            ("\"a\tb\"", 2, "invalid control character in string"),
            ("\"a\\n\x01\"", 4, "invalid control character in string"),
            ("\u{a0}1", 0, "expecting a value"),
            ("\x0c[]", 0, "expecting a value"),
            ("[] \x0c", 3, "extra data after the value"),
        ];
        for &(line, at, reason) in cases {
            assert_eq!(check(line), Err((at, reason)), "{line:?}");
        }
    }

    #[test]
    fn raw_utf8_follows_pythons_strict_codec() {
        let cases: &[(&[u8], Result<bool, Invalid>)] = &[
            (b"\"\xc3\xa9\"", Ok(true)),
            // Encoded surrogates, overlong forms, stray continuation bytes, Latin-1, beyond U+10FFFF.
            (b"\"\xed\xa0\x80\"", Err((1, "invalid UTF-8"))),
            (b"\"\xc0\xaf\"", Err((1, "invalid UTF-8"))),
            (b"\"a\x80\"", Err((1, "invalid UTF-8"))),
            (b"\"\xe9\"", Err((1, "invalid UTF-8"))),
            (b"\"\xf4\x90\x80\x80\"", Err((1, "invalid UTF-8"))),
            // After an escape, the run is checked from where it starts.
            (b"\"\\n\xff\"", Err((3, "invalid UTF-8"))),
            (b"\"\xff\\n\"", Err((1, "invalid UTF-8"))),
            // As in the decoder, a control byte ends the first run before its UTF-8 is checked...
            (
                b"\"\xff\x01\"",
                Err((2, "invalid control character in string")),
            ),
            // ...but after an escape, the run's UTF-8 is checked first.
            (b"\"\\n\xff\x01\"", Err((3, "invalid UTF-8"))),
            (b"\"\\n\xff", Err((3, "invalid UTF-8"))),
            // Non-ASCII outside a string is a syntax error, not a UTF-8 one.
            (b"\xff", Err((0, "expecting a value"))),
            (b"[1]\xff", Err((3, "extra data after the value"))),
        ];
        for (line, want) in cases {
            assert_eq!(validate_line(line), *want, "{line:?}");
        }
    }

    #[test]
    fn blank_lines_are_not_messages_but_not_errors() {
        for line in [
            "",
            " ",
            "\t \t",
            "\x0b",
            "\x0c",
            "\u{a0}",
            " \u{3000}\u{2028} ",
            "\x1c",
        ] {
            assert_eq!(check(line), Ok(false), "{line:?}");
        }
        // Not blank to Python either: U+200B is no space.
        assert_eq!(check("\u{200b}"), Err((0, "expecting a value")));
    }

    #[test]
    fn depth_is_limited_as_in_the_decoder() {
        for (open, close) in [("[", "]"), ("{\"k\":", "}")] {
            let ok = format!("{}1{}", open.repeat(MAX_DEPTH), close.repeat(MAX_DEPTH));
            assert_eq!(check(&ok), Ok(true));
            let deep = format!(
                "{}1{}",
                open.repeat(MAX_DEPTH + 1),
                close.repeat(MAX_DEPTH + 1)
            );
            let at = open.len() * MAX_DEPTH;
            assert_eq!(check(&deep), Err((at, "nested deeper than 1024 levels")));
        }
        // Far deeper than any thread's stack could recurse: refused at the limit, no overflow.
        let huge = "[".repeat(10_000_000);
        assert_eq!(
            check(&huge),
            Err((MAX_DEPTH, "nested deeper than 1024 levels"))
        );
        // Kinds alternate correctly across the 64-level words of the stack.
        let mixed: String = (0..MAX_DEPTH)
            .map(|i| if i % 3 == 0 { "{\"k\":" } else { "[" })
            .collect();
        let closing: String = (0..MAX_DEPTH)
            .rev()
            .map(|i| if i % 3 == 0 { "}" } else { "]" })
            .collect();
        assert_eq!(check(&format!("{mixed}0{closing}")), Ok(true));
        let wrong = format!("{mixed}0{}", closing.replacen('}', "]", 1));
        assert!(check(&wrong).is_err());
    }

    #[test]
    fn the_one_pass_line_agrees_with_the_line_alone() {
        let lines: &[&[u8]] = &[
            b"{\"a\":[1,2,{\"b\":\"c\\n\\u00e9\"}]}",
            b" [1] ",
            b"",
            b"\t",
            b"\x0c",
            b"\xc2\xa0",
            b"1 2",
            b"[1",
            b"\"abc",
            b"\"a\\",
            b"tru",
            b"\"\\u12",
            b"-",
            b"[]x",
            b"\"\xff\"",
        ];
        for line in lines {
            for next in [&b"\n[2]"[..], b"\r\n[2]", b"\r", b"\n\"x\"", b""] {
                let data = [&b"0\n"[..], line, next].concat();
                let want = validate_line(line)
                    .map(|message| (2 + line.len(), message))
                    .map_err(|(at, reason)| (2 + at, reason));
                assert_eq!(validate_next_line(&data, 2), want, "{line:?} {next:?}");
            }
        }
    }

    #[test]
    fn huge_ints_are_accepted() {
        // The one documented difference from the decoder, which refuses ints longer than 4300 digits.
        assert_eq!(check(&"9".repeat(5000)), Ok(true));
    }
}
