//! The validator (`validate_line`, which decides what the scanners and `len()` take for a message) against
//! serde_json, on one line: the same verdict on every input, once the deliberate differences are taken out.
//!
//! The differences, all deliberate (the core reads what Python's `json.loads` reads; docs/FORMAT.md 1.1):
//! - `NaN`, `Infinity` and `-Infinity` are values (the stdlib writes them): the check replaces them, outside
//!   strings, by `0`, padded with spaces so that no token merges with its neighbours.
//! - Escaped lone surrogates (`"\ud800"`) are accepted, as the stdlib accepts them: the check replaces every
//!   surrogate escape by `\u0041` (serde_json refuses lone ones; pairs need no special case then).
//! - Nesting deeper than 1024 levels is refused (serde_json's limit is lifted with `unbounded_depth`; the
//!   stdlib's is the recursion limit): no verdict is compared for such a line.
//! - A line of whitespace only, JSON's or Python's (`str.isspace`: form feed, NBSP...), is a blank line, not an
//!   error: serde_json must refuse it, as it holds no document.
//! - Numbers out of f64's range (`1e400`) are accepted (Python makes inf): serde_json's `arbitrary_precision`
//!   keeps their text instead of refusing them.
//! - Duplicate keys are accepted by both (the last wins).
//!
//! Line breaks are JSON whitespace for serde_json but end a line for the core, so inputs holding one are cut at
//! the first.

use codec::raw::validate_line;
use serde::Deserialize;

/// Deeper than this, serde_json's recursion is not run (the core refuses past 1024 anyway).
const SERDE_DEPTH: usize = 1100;

pub fn check(data: &[u8]) {
    let line = match data.iter().position(|&b| b == b'\n' || b == b'\r') {
        Some(end) => &data[..end],
        None => data,
    };
    let ours = validate_line(line);
    let rewritten = rewrite(line);
    let again = validate_line(&rewritten);
    // The rewrite only swaps equivalent tokens: if it changed our verdict, the comparison below would be void.
    assert_eq!(
        ours.is_ok(),
        again.is_ok(),
        "the rewrite changed the core's verdict: {:?} -> {:?}; {ours:?} then {again:?}",
        String::from_utf8_lossy(line),
        String::from_utf8_lossy(&rewritten),
    );
    if matches!(ours, Err((_, reason)) if reason.starts_with("nested deeper"))
        || max_depth(&rewritten) > SERDE_DEPTH
    {
        return;
    }
    let theirs = serde(&rewritten);
    let agree = match ours {
        Ok(true) => theirs.is_ok(),
        // Blank: no document.
        Ok(false) => theirs.is_err(),
        Err(_) => theirs.is_err(),
    };
    assert!(
        agree,
        "validate_line and serde_json disagree on {:?} (rewritten {:?}): core {ours:?}, serde_json {theirs:?}",
        String::from_utf8_lossy(line),
        String::from_utf8_lossy(&rewritten),
    );
}

fn serde(line: &[u8]) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(line);
    de.disable_recursion_limit();
    serde_json::Value::deserialize(&mut de)?;
    de.end()
}

/// `line` with the stdlib's extra tokens (outside strings) and surrogate escapes (inside) replaced by what
/// serde_json reads with the same verdict.
fn rewrite(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 8);
    let mut in_string = false;
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        if in_string {
            match rest[0] {
                b'"' => in_string = false,
                b'\\' if rest.len() >= 6 && rest[1] == b'u' => {
                    if let Some(c) = hex4(&rest[2..6]) {
                        if (0xD800..0xE000).contains(&c) {
                            out.extend_from_slice(b"\\u0041");
                        } else {
                            out.extend_from_slice(&rest[..6]);
                        }
                        i += 6;
                        continue;
                    }
                }
                b'\\' if rest.len() >= 2 => {
                    out.extend_from_slice(&rest[..2]);
                    i += 2;
                    continue;
                }
                _ => {}
            }
        } else if rest[0] == b'"' {
            in_string = true;
        } else if let Some(token) = [&b"-Infinity"[..], b"Infinity", b"NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.extend_from_slice(if token[0] == b'-' { b" -0 " } else { b" 0 " });
            i += token.len();
            continue;
        }
        out.push(rest[0]);
        i += 1;
    }
    out
}

fn hex4(b: &[u8]) -> Option<u32> {
    std::str::from_utf8(b)
        .ok()
        .filter(|s| s.bytes().all(|c| c.is_ascii_hexdigit()))
        .and_then(|s| u32::from_str_radix(s, 16).ok())
}

/// The deepest nesting of brackets outside strings (an upper bound on what a parser recurses into).
fn max_depth(line: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0, false, false);
    for &b in line {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}
