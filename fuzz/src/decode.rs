//! The decoder (`decode`, behind `decode_lines`: bytes to Python objects) in an embedded interpreter, against
//! three references on any input:
//! - the validator: the decoder fails exactly where the first line that `validate_line` refuses is, with its
//!   line, column and reason, and otherwise returns one message per line the validator calls a message;
//! - the stdlib, as the original design read a file (`json.loads` of each line whose `str.strip()` is not
//!   empty, after a strict UTF-8 decode): the same blank lines, the same values (types, key order, NaN, -0.0),
//!   and an error wherever the decoder reports one;
//! - the encoder: the messages encode to what `json.dumps(separators=(",", ":"), ensure_ascii=False)` writes,
//!   but for the escapes docs/FORMAT.md 1.1 adds (U+0085, U+2028, U+2029, lone surrogates) and the text of
//!   floats (ryu's shortest form, `1e78` where repr writes `1e+78`: the same double), and decode back the same.
//!
//! Deliberate differences (README, "Compatibility"): nesting past 1024 levels is refused (the stdlib's limit is
//! the recursion limit, raised here so that it reads every depth the decoder reads); an int of more digits than
//! `sys.get_int_max_str_digits()` is a message to the validator (a line of JSON) but a decode error, as in the
//! stdlib; a UTF-8 BOM is skipped at the start of the data only.

use std::ffi::CString;
use std::sync::OnceLock;

use codec::raw::{decode, encode_lines, validate_line, Error};
use pyo3::call::PyCallArgs;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::lines;

const BOM: &[u8] = b"\xEF\xBB\xBF";

const HELPERS: &str = r#"
import json, math, re, sys

sys.setrecursionlimit(20000)


def stdlib(line):
    """("blank" | "value" | "error", value) for one line as the original design read it."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return "error", None
    if not text.strip():
        return "blank", None
    try:
        return "value", json.loads(text)
    except (ValueError, RecursionError) as e:
        return "error", repr(e)


def same(a, b):
    """Equal values of the same types: key order, NaN and the sign of zero included. No recursion: the values
    nest 1024 deep."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if type(x) is not type(y):
            return False
        if type(x) is float:
            if x != x or y != y:
                if not (x != x and y != y):
                    return False
            elif x != y or math.copysign(1.0, x) != math.copysign(1.0, y):
                return False
        elif type(x) is list:
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y))
        elif type(x) is dict:
            if list(x) != list(y):
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif x != y:
            return False
    return True


_EXTRA = re.compile("[\x85\u2028\u2029\ud800-\udfff]")
_TOKEN = re.compile(r'("(?:[^"\\]|\\.)*")|(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)')


def dumps(value):
    """The line the encoder must write for `value`."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return _EXTRA.sub(lambda m: "\\u%04x" % ord(m.group()), text).encode("utf-8", "surrogatepass") + b"\n"


def floats_as_repr(line):
    """`line` with every float written as Python's repr writes it: the encoder writes ryu's shortest text
    ("1e78" for repr's "1e+78"), the same double in other words."""
    def one(m):
        if m.group(1) is not None or not any(c in m.group(2) for c in ".eE"):
            return m.group(0)
        return repr(float(m.group(2)))
    return _TOKEN.sub(one, line.decode("utf-8", "surrogatepass")).encode("utf-8", "surrogatepass")
"#;

fn helpers(py: Python<'_>) -> &Bound<'_, PyModule> {
    static MODULE: OnceLock<Py<PyModule>> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            let code = CString::new(HELPERS).unwrap();
            PyModule::from_code(py, &code, c"fuzz_helpers.py", c"fuzz_helpers")
                .expect("the helpers compile")
                .unbind()
        })
        .bind(py)
}

pub fn check(data: &[u8]) {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        // Every Python object in malloc's blocks, where LeakSanitizer sees a reference the decoder lost
        // (pymalloc's arenas are mmap'ed, which it does not scan: its false reports would drown real ones).
        std::env::set_var("PYTHONMALLOC", "malloc");
        Python::initialize();
    });
    Python::attach(|py| check_with(py, data));
}

fn check_with(py: Python<'_>, data: &[u8]) {
    let ctx = || format!("{:?}", String::from_utf8_lossy(data));
    let decoded = decode(py, data, 1);

    // The references, line by line up to the first the validator refuses.
    let body = data.strip_prefix(BOM).unwrap_or(data);
    let mut messages: Vec<&[u8]> = Vec::new();
    let mut refused = None;
    for (i, (_, line)) in lines(body).into_iter().enumerate() {
        let (kind, value) = call(py, "stdlib", (PyBytes::new(py, line),))
            .extract::<(String, Bound<'_, PyAny>)>()
            .unwrap();
        match validate_line(line) {
            Ok(true) => {
                assert!(
                    kind == "value" || (kind == "error" && digits_over_limit(py, line)),
                    "line {} is a message but the stdlib says {kind} {value}: {}",
                    i + 1,
                    ctx()
                );
                messages.push(line);
            }
            Ok(false) => assert_eq!(kind, "blank", "line {} blank for us only: {}", i + 1, ctx()),
            Err((at, reason)) => {
                assert!(
                    kind == "error" || reason.starts_with("nested deeper"),
                    "line {} refused ({reason}) but the stdlib reads {value}: {}",
                    i + 1,
                    ctx()
                );
                refused = Some((i + 1, line, at, reason));
                break;
            }
        }
    }

    match (decoded, refused) {
        (Ok(list), None) => {
            assert_eq!(list.len(), messages.len(), "message count: {}", ctx());
            for (item, line) in list.iter().zip(&messages) {
                let (_, value) = call(py, "stdlib", (PyBytes::new(py, line),))
                    .extract::<(String, Bound<'_, PyAny>)>()
                    .unwrap();
                let same = call(py, "same", (&item, &value));
                assert!(
                    same.is_truthy().unwrap(),
                    "{item:?} is not the stdlib's {value:?}: {}",
                    ctx()
                );
            }
            round_trip(py, &list, &ctx);
        }
        (
            Err(Error::Decode {
                lineno,
                colno,
                reason,
            }),
            Some((l, line, at, why)),
        ) => {
            let want_col = line[..at].iter().filter(|&&b| b & 0xC0 != 0x80).count() + 1;
            assert_eq!(
                (lineno, colno, reason.as_str()),
                (l, want_col, why),
                "the decoder's error is not the validator's: {}",
                ctx()
            );
        }
        // An int past Python's digit limit: JSON to the validator, a ValueError to CPython (and the stdlib).
        (Err(Error::Decode { lineno, reason, .. }), None)
            if reason.contains("integer string conversion") =>
        {
            let line = lines(body)[lineno - 1].1;
            assert!(
                digits_over_limit(py, line),
                "{reason} on line {lineno}: {}",
                ctx()
            );
        }
        (decoded, refused) => panic!(
            "decoder {:?} but validator {refused:?}: {}",
            decoded.map(|l| l.len()),
            ctx()
        ),
    }
}

fn call<'py>(py: Python<'py>, name: &str, args: impl PyCallArgs<'py>) -> Bound<'py, PyAny> {
    helpers(py)
        .getattr(name)
        .and_then(|f| f.call1(args))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Whether `line` holds a run of more digits than `sys.get_int_max_str_digits()`.
fn digits_over_limit(py: Python<'_>, line: &[u8]) -> bool {
    let limit: usize = py
        .import("sys")
        .and_then(|sys| sys.getattr("get_int_max_str_digits")?.call0()?.extract())
        .unwrap();
    line.split(|b| !b.is_ascii_digit())
        .any(|run| limit > 0 && run.len() > limit)
}

/// The messages encode to the stdlib's text (with our escapes) and decode back to themselves.
fn round_trip(py: Python<'_>, list: &Bound<'_, PyList>, ctx: &dyn Fn() -> String) {
    let encoded = encode_lines(list.as_any(), 0).unwrap_or_else(|e| panic!("encode: {e}: {}", ctx()));
    let bytes: &[u8] = &encoded.data;
    let normalized = call(py, "floats_as_repr", (PyBytes::new(py, bytes),));
    let normalized = normalized.cast::<PyBytes>().unwrap().as_bytes();
    let mut want = Vec::new();
    for item in list.iter() {
        let line = call(py, "dumps", (item,));
        want.extend_from_slice(line.cast::<PyBytes>().unwrap().as_bytes());
    }
    assert!(
        normalized == want.as_slice(),
        "encoded {:?}, the stdlib writes {:?}: {}",
        String::from_utf8_lossy(bytes),
        String::from_utf8_lossy(&want),
        ctx()
    );
    let again =
        decode(py, bytes, 1).unwrap_or_else(|e| panic!("decode of the encoding: {e:?}: {}", ctx()));
    let same = call(py, "same", (list, &again));
    assert!(
        same.is_truthy().unwrap(),
        "round trip changed the messages: {}",
        ctx()
    );
}
