//! JSONL bytes -> Python objects.
//!
//! A parser of our own rather than jiter: the fidelity rule asks for what the stdlib's `json.loads` accepts and
//! returns, and jiter differs on three counts (it rejects escaped lone surrogates such as `"\ud800"`, stops at 200
//! levels of nesting, and needs a flag for NaN/Infinity); BENCHMARKS.md has the speed comparison. Lines split as
//! Python's text mode splits them (`\n`, `\r\n` and `\r`), blank lines are skipped as the original skipped them,
//! and an error names the line and column. Objects are built directly: short strings (keys, roles) are shared
//! through a small cache, as the stdlib memoizes keys, and the hot path allocates no Rust memory per value.

use std::ffi::c_char;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use crate::encode::MAX_DEPTH;
use crate::errors::{DecodeError, Error, Result};
use crate::ffi::{stack_exhausted, stack_floor, GcPause};
use crate::scan::{
    find_string_special, first_value, hex4, is_blank, push_code_point, scan_number, skip_ws,
};

/// The messages of JSONL `data`, one per non-blank line.
/// `source` is any str (a path decoded with surrogateescape need not be UTF-8), passed unchanged into errors.
#[pyfunction]
#[pyo3(signature = (data, /, *, source = None, first_line = 1))]
#[pyo3(text_signature = "(data, /, *, source='<bytes>', first_line=1)")]
pub fn decode_lines<'py>(
    py: Python<'py>,
    data: &[u8],
    source: Option<Bound<'py, PyString>>,
    first_line: usize,
) -> PyResult<Bound<'py, PyList>> {
    decode(py, data, first_line).map_err(|e| into_pyerr(py, e, source.as_ref()))
}

/// `decode_lines` with the core's error rather than a Python exception: callable from Rust without the Python
/// package (the fuzz targets compare its errors with the validator's).
pub fn decode<'py>(py: Python<'py>, data: &[u8], first_line: usize) -> Result<Bound<'py, PyList>> {
    let data = if first_line == 1 {
        data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data)
    } else {
        data
    };
    let mut decoder = Decoder::default();
    let mut messages = Owned::default();
    decoder.lines(data, first_line, &mut messages)?;
    Ok(messages.into_list(py)?)
}

/// The error as it leaves the core: a `DecodeError` names the source (`"<bytes>"` when none was given).
#[cold]
fn into_pyerr(py: Python<'_>, err: Error, source: Option<&Bound<'_, PyString>>) -> PyErr {
    match err {
        Error::Decode {
            lineno,
            colno,
            reason,
        } => {
            let source = match source {
                Some(source) => source.clone().unbind(),
                None => PyString::new(py, "<bytes>").unbind(),
            };
            DecodeError::new_err((source, lineno, colno, reason))
        }
        other => other.into_pyerr(""),
    }
}

/// JSONL fed in pieces of any size (a file read a block at a time into one reused buffer): each `feed` returns
/// the messages of the lines it completed, and keeps a partial last line for the next; `finish` ends the input.
#[pyclass(module = "conversation_codec._core")]
pub struct LineDecoder {
    /// None for the default, `"<bytes>"`.
    source: Option<Py<PyString>>,
    /// The number of the next line to start.
    lineno: usize,
    /// The start of a line whose end has not been fed yet.
    pending: Vec<u8>,
    decoder: Decoder,
}

#[pymethods]
impl LineDecoder {
    #[new]
    #[pyo3(signature = (*, source = None, first_line = 1))]
    #[pyo3(text_signature = "(*, source='<bytes>', first_line=1)")]
    fn new(source: Option<Bound<'_, PyString>>, first_line: usize) -> Self {
        LineDecoder {
            source: source.map(Bound::unbind),
            lineno: first_line,
            pending: Vec::new(),
            decoder: Decoder::default(),
        }
    }

    /// The messages of the lines that `data` (any bytes-like object) completes.
    #[pyo3(signature = (data, /))]
    fn feed<'py>(&mut self, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let py = data.py();
        // No Python code may run while we read the buffer (see below), not even a finalizer. Paused before the
        // buffer is taken: taking the pause can itself start a collection on 3.9 (its first import of `gc`).
        let _gc = GcPause::new(py)?;
        let buffer = PyBuffer::<u8>::get(data)?;
        if !buffer.is_c_contiguous() {
            return Err(PyValueError::new_err("feed() needs contiguous bytes"));
        }
        // SAFETY: a contiguous u8 buffer of `len_bytes()` bytes, alive (and not resizable: it is exported) while
        // `buffer` is. Nobody writes to it while we read it: the GIL is held for the whole call, and no Python code
        // runs during it (decoding calls only CPython's constructors, and `_gc` keeps them from starting a garbage
        // collection, whose finalizers would be Python code); another thread could only write through the buffer
        // while holding the GIL, and only Python code could let go of it.
        let data = unsafe {
            std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, buffer.len_bytes())
        };
        let mut messages = Owned::default();
        // Lines end at '\n' here: a '\r' at the very end may be the first half of "\r\n", so it waits too.
        let Some(last_newline) = memchr::memrchr(b'\n', data) else {
            self.pending.extend_from_slice(data);
            return messages.into_list(py);
        };
        let (complete, rest) = data.split_at(last_newline + 1);
        let mut body = complete;
        if !self.pending.is_empty() {
            let first_end = memchr::memchr(b'\n', complete).map_or(complete.len(), |i| i + 1);
            self.pending.extend_from_slice(&complete[..first_end]);
            let joined = std::mem::take(&mut self.pending);
            self.decode(py, &joined, &mut messages)?;
            body = &complete[first_end..];
        }
        self.decode(py, body, &mut messages)?;
        self.pending.extend_from_slice(rest);
        messages.into_list(py)
    }

    /// The message of a last line that had no line break after it.
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut messages = Owned::default();
        let pending = std::mem::take(&mut self.pending);
        self.decode(py, &pending, &mut messages)?;
        messages.into_list(py)
    }
}

impl LineDecoder {
    fn decode(&mut self, py: Python<'_>, data: &[u8], out: &mut Owned) -> PyResult<()> {
        let at_start = self.lineno == 1;
        let data = if at_start {
            data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data)
        } else {
            data
        };
        self.lineno = self
            .decoder
            .lines(data, self.lineno, out)
            .map_err(|e| into_pyerr(py, e, self.source.as_ref().map(|s| s.bind(py))))?;
        Ok(())
    }
}

/// Strong references that are released if we stop early.
#[derive(Default)]
struct Owned(Vec<*mut ffi::PyObject>);

impl Owned {
    /// The list of the objects; a MemoryError (the objects released) if it cannot be made.
    fn into_list(mut self, py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
        // SAFETY: GIL held (`py`). PyList_New returns a new list of NULL slots, or NULL with an error set (then
        // `self` still owns, and on drop releases, the objects); PyList_SET_ITEM steals each reference, which we
        // own and take out of `self`, into a slot in range.
        unsafe {
            let list = ffi::PyList_New(self.0.len() as ffi::Py_ssize_t);
            let list = Bound::from_owned_ptr_or_err(py, list)?;
            for (i, item) in std::mem::take(&mut self.0).into_iter().enumerate() {
                ffi::PyList_SET_ITEM(list.as_ptr(), i as ffi::Py_ssize_t, item);
            }
            Ok(list.cast_into_unchecked())
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        for &obj in &self.0 {
            // SAFETY: decoding runs with the GIL held and these are references we own.
            unsafe { ffi::Py_DECREF(obj) };
        }
    }
}

/// Where a line went wrong: a byte offset within it, and why.
struct Fail {
    at: usize,
    reason: Reason,
}

enum Reason {
    Syntax(&'static str),
    /// Past `MAX_DEPTH` levels.
    TooDeep,
    /// Less than `ffi::STACK_MARGIN` of the thread's stack was left at this depth.
    StackExhausted(usize),
    /// CPython refused a value (an int with more digits than `sys.get_int_max_str_digits()`).
    Value(PyErr),
}

#[cold]
fn fail<T>(at: usize, reason: &'static str) -> std::result::Result<T, Fail> {
    Err(Fail {
        at,
        reason: Reason::Syntax(reason),
    })
}

type Parsed = std::result::Result<*mut ffi::PyObject, Fail>;

#[derive(Default)]
pub struct Decoder {
    /// Unescaped string contents and number texts are built here, reused for every value.
    scratch: Vec<u8>,
    /// Container levels must start above this address (`ffi::stack_floor`), set by each call; 0 when unknown.
    stack_floor: usize,
    /// Items of the arrays being parsed, innermost last: one stack for all levels.
    items: Owned,
    strings: StringCache,
}

impl Decoder {
    /// Decodes every line of `data` into `out`; returns the number of the line after the last.
    fn lines(&mut self, data: &[u8], first_line: usize, out: &mut Owned) -> Result<usize> {
        self.stack_floor = stack_floor();
        let mut start = 0;
        let mut lineno = first_line;
        while start < data.len() {
            let end =
                memchr::memchr2(b'\n', b'\r', &data[start..]).map_or(data.len(), |i| start + i);
            let line = &data[start..end];
            match self.line(line) {
                Ok(Some(obj)) => out.0.push(obj),
                Ok(None) => {}
                Err(Fail { at, reason }) => {
                    if at == first_value(line) && is_blank(line) {
                        // Only whitespace, of a kind JSON does not know (form feed, NBSP...): the original's
                        // `if line.strip()` skipped such lines.
                    } else {
                        return Err(line_error(line, lineno, at, reason));
                    }
                }
            }
            start = end + 1;
            if data.get(end) == Some(&b'\r') && data.get(end + 1) == Some(&b'\n') {
                start += 1;
            }
            lineno += 1;
        }
        Ok(lineno)
    }

    /// The value on one line, or None for a blank line.
    fn line(&mut self, line: &[u8]) -> std::result::Result<Option<*mut ffi::PyObject>, Fail> {
        let at = first_value(line);
        if at == line.len() {
            return Ok(None);
        }
        let (obj, end) = self.value(line, at, 0)?;
        let end = skip_ws(line, end);
        if end != line.len() {
            // SAFETY: GIL held; we own `obj`.
            unsafe { ffi::Py_DECREF(obj) };
            return fail(end, "extra data after the value");
        }
        Ok(Some(obj))
    }

    /// Parses the value at `line[at]` (not whitespace), returning it and the offset just past it.
    fn value(
        &mut self,
        line: &[u8],
        at: usize,
        depth: usize,
    ) -> std::result::Result<(*mut ffi::PyObject, usize), Fail> {
        match line.get(at) {
            Some(b'"') => self.string(line, at),
            Some(b'{' | b'[') if depth >= MAX_DEPTH || stack_exhausted(self.stack_floor) => {
                Err(too_deep(at, depth))
            }
            Some(b'{') => self.object(line, at, depth),
            Some(b'[') => self.array(line, at, depth),
            Some(b'-' | b'0'..=b'9') => self.number(line, at),
            Some(b't') if line[at..].starts_with(b"true") => {
                // SAFETY: decoding runs with the GIL held (from the #[pyfunction]); a singleton is always live.
                Ok((new_ref(unsafe { ffi::Py_True() }), at + 4))
            }
            Some(b'f') if line[at..].starts_with(b"false") => {
                // SAFETY: decoding runs with the GIL held (from the #[pyfunction]); a singleton is always live.
                Ok((new_ref(unsafe { ffi::Py_False() }), at + 5))
            }
            Some(b'n') if line[at..].starts_with(b"null") => {
                // SAFETY: decoding runs with the GIL held (from the #[pyfunction]); a singleton is always live.
                Ok((new_ref(unsafe { ffi::Py_None() }), at + 4))
            }
            Some(b'N') if line[at..].starts_with(b"NaN") => Ok((float(f64::NAN)?, at + 3)),
            Some(b'I') if line[at..].starts_with(b"Infinity") => {
                Ok((float(f64::INFINITY)?, at + 8))
            }
            _ => fail(at, "expecting a value"),
        }
    }

    fn array(
        &mut self,
        line: &[u8],
        open: usize,
        depth: usize,
    ) -> std::result::Result<(*mut ffi::PyObject, usize), Fail> {
        let base = self.items.0.len();
        let mut at = skip_ws(line, open + 1);
        if line.get(at) != Some(&b']') {
            loop {
                let (item, end) = match self.value(line, at, depth + 1) {
                    Ok(parsed) => parsed,
                    Err(e) => return Err(self.drop_items(base, e)),
                };
                self.items.0.push(item);
                at = skip_ws(line, end);
                match line.get(at) {
                    Some(b',') => at = skip_ws(line, at + 1),
                    Some(b']') => break,
                    _ => {
                        return Err(self.drop_items(
                            base,
                            Fail {
                                at,
                                reason: Reason::Syntax("expecting ',' or ']'"),
                            },
                        ))
                    }
                }
            }
        }
        let count = self.items.0.len() - base;
        // SAFETY: GIL held; PyList_SET_ITEM steals the references we move out of the stack.
        unsafe {
            let list = ffi::PyList_New(count as ffi::Py_ssize_t);
            if list.is_null() {
                return Err(self.drop_items(base, python_fail(open)));
            }
            for (i, item) in self.items.0.drain(base..).enumerate() {
                ffi::PyList_SET_ITEM(list, i as ffi::Py_ssize_t, item);
            }
            Ok((list, at + 1))
        }
    }

    #[cold]
    fn drop_items(&mut self, base: usize, fail: Fail) -> Fail {
        for obj in self.items.0.drain(base..) {
            // SAFETY: GIL held; we own these references.
            unsafe { ffi::Py_DECREF(obj) };
        }
        fail
    }

    fn object(
        &mut self,
        line: &[u8],
        open: usize,
        depth: usize,
    ) -> std::result::Result<(*mut ffi::PyObject, usize), Fail> {
        // SAFETY: GIL held throughout; `dict` is ours and released on every error path.
        unsafe {
            let dict = ffi::PyDict_New();
            if dict.is_null() {
                return Err(python_fail(open));
            }
            let mut at = skip_ws(line, open + 1);
            if line.get(at) == Some(&b'}') {
                return Ok((dict, at + 1));
            }
            let result = loop {
                if line.get(at) != Some(&b'"') {
                    break fail(at, "expecting a property name in double quotes");
                }
                let (key, end) = match self.string(line, at) {
                    Ok(parsed) => parsed,
                    Err(e) => break Err(e),
                };
                at = skip_ws(line, end);
                if line.get(at) != Some(&b':') {
                    ffi::Py_DECREF(key);
                    break fail(at, "expecting ':'");
                }
                at = skip_ws(line, at + 1);
                let (value, end) = match self.value(line, at, depth + 1) {
                    Ok(parsed) => parsed,
                    Err(e) => {
                        ffi::Py_DECREF(key);
                        break Err(e);
                    }
                };
                // Like the stdlib, a repeated key keeps its last value.
                let status = ffi::PyDict_SetItem(dict, key, value);
                ffi::Py_DECREF(key);
                ffi::Py_DECREF(value);
                if status != 0 {
                    break Err(python_fail(at));
                }
                at = skip_ws(line, end);
                match line.get(at) {
                    Some(b',') => at = skip_ws(line, at + 1),
                    Some(b'}') => break Ok(at + 1),
                    _ => break fail(at, "expecting ',' or '}'"),
                }
            };
            match result {
                Ok(end) => Ok((dict, end)),
                Err(e) => {
                    ffi::Py_DECREF(dict);
                    Err(e)
                }
            }
        }
    }

    fn string(
        &mut self,
        line: &[u8],
        open: usize,
    ) -> std::result::Result<(*mut ffi::PyObject, usize), Fail> {
        let start = open + 1;
        let (stop, non_ascii) = find_string_special(line, start);
        match line.get(stop) {
            Some(b'"') => {
                let raw = &line[start..stop];
                let obj = if non_ascii {
                    utf8_str(raw, false, start)?
                } else {
                    self.strings.get(raw)?
                };
                Ok((obj, stop + 1))
            }
            Some(b'\\') => self.escaped_string(line, open, stop, non_ascii),
            Some(_) => fail(stop, "invalid control character in string"),
            None => fail(open, "unterminated string"),
        }
    }

    /// A string with escapes, unescaped into `scratch`. `stop` is the first backslash.
    fn escaped_string(
        &mut self,
        line: &[u8],
        open: usize,
        stop: usize,
        mut non_ascii: bool,
    ) -> std::result::Result<(*mut ffi::PyObject, usize), Fail> {
        let mut surrogates = false;
        self.scratch.clear();
        push_raw(
            &mut self.scratch,
            &line[open + 1..stop],
            non_ascii,
            open + 1,
        )?;
        let mut at = stop;
        loop {
            match line.get(at) {
                Some(b'"') => break,
                Some(b'\\') => {
                    let unescaped = match line.get(at + 1) {
                        Some(b'"') => b'"',
                        Some(b'\\') => b'\\',
                        Some(b'/') => b'/',
                        Some(b'n') => b'\n',
                        Some(b't') => b'\t',
                        Some(b'r') => b'\r',
                        Some(b'b') => 0x08,
                        Some(b'f') => 0x0C,
                        Some(b'u') => {
                            let (c, end) = unicode_escape(line, at)?;
                            surrogates |= (0xD800..0xE000).contains(&c);
                            non_ascii |= c >= 0x80;
                            push_code_point(&mut self.scratch, c);
                            at = end;
                            continue;
                        }
                        _ => return fail(at, "invalid escape"),
                    };
                    self.scratch.push(unescaped);
                    at += 2;
                }
                Some(_) => {
                    let (stop, run_non_ascii) = find_string_special(line, at);
                    if stop == at {
                        return if stop < line.len() {
                            fail(stop, "invalid control character in string")
                        } else {
                            fail(open, "unterminated string")
                        };
                    }
                    push_raw(&mut self.scratch, &line[at..stop], run_non_ascii, at)?;
                    non_ascii |= run_non_ascii;
                    at = stop;
                }
                None => return fail(open, "unterminated string"),
            }
        }
        let obj = if non_ascii {
            utf8_str(&self.scratch, surrogates, open)?
        } else {
            ascii_str(&self.scratch, open)?
        };
        Ok((obj, at + 1))
    }

    fn number(
        &mut self,
        line: &[u8],
        at: usize,
    ) -> std::result::Result<(*mut ffi::PyObject, usize), Fail> {
        let negative = line[at] == b'-';
        let digits = at + negative as usize;
        if negative && line[digits..].starts_with(b"Infinity") {
            return Ok((float(f64::NEG_INFINITY)?, digits + 8));
        }
        let Some((end, is_float)) = scan_number(line, digits) else {
            return fail(at, "expecting a value");
        };
        let text = &line[at..end];
        if is_float {
            // SAFETY: `text` is ASCII (digits, sign, '.', 'e') by `scan_number`.
            let Ok(v) = unsafe { std::str::from_utf8_unchecked(text) }.parse::<f64>() else {
                return fail(at, "expecting a value");
            };
            return Ok((float(v)?, end));
        }
        if end - digits <= 18 {
            let magnitude = line[digits..end]
                .iter()
                .fold(0i64, |acc, d| acc * 10 + (d - b'0') as i64);
            let v = if negative { -magnitude } else { magnitude };
            // SAFETY: GIL held.
            let obj = unsafe { ffi::PyLong_FromLongLong(v) };
            return if obj.is_null() {
                Err(python_fail(at))
            } else {
                Ok((obj, end))
            };
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(text);
        self.scratch.push(0);
        // SAFETY: GIL held; `scratch` is the NUL-terminated ASCII number text.
        let obj = unsafe {
            ffi::PyLong_FromString(
                self.scratch.as_ptr().cast::<c_char>(),
                std::ptr::null_mut(),
                10,
            )
        };
        if obj.is_null() {
            Err(python_fail(at))
        } else {
            Ok((obj, end))
        }
    }
}

/// `\uXXXX` at `line[at]` (the backslash), joined with a following low-surrogate escape as the stdlib joins them.
fn unicode_escape(line: &[u8], at: usize) -> std::result::Result<(u32, usize), Fail> {
    let Some(c) = hex4(line, at + 2) else {
        return fail(at, "invalid \\uXXXX escape");
    };
    let end = at + 6;
    if (0xD800..0xDC00).contains(&c) && line.get(end..end + 2) == Some(b"\\u") {
        if let Some(low @ 0xDC00..=0xDFFF) = hex4(line, end + 2) {
            return Ok((0x10000 + ((c - 0xD800) << 10) + (low - 0xDC00), end + 6));
        }
    }
    Ok((c, end))
}

/// Appends raw string bytes, checking UTF-8 where there are non-ASCII bytes: the escaped string is later made
/// with "surrogatepass", which would otherwise let encoded surrogates in the input through.
fn push_raw(
    out: &mut Vec<u8>,
    raw: &[u8],
    non_ascii: bool,
    at: usize,
) -> std::result::Result<(), Fail> {
    if non_ascii && std::str::from_utf8(raw).is_err() {
        return fail(at, "invalid UTF-8");
    }
    out.extend_from_slice(raw);
    Ok(())
}

#[inline]
fn new_ref(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: `obj` is an immortal or live singleton; the GIL is held.
    unsafe { ffi::Py_INCREF(obj) };
    obj
}

#[inline]
fn float(v: f64) -> std::result::Result<*mut ffi::PyObject, Fail> {
    // SAFETY: GIL held.
    let obj = unsafe { ffi::PyFloat_FromDouble(v) };
    if obj.is_null() {
        Err(python_fail(0))
    } else {
        Ok(obj)
    }
}

#[inline]
fn ascii_str(bytes: &[u8], at: usize) -> Parsed {
    // SAFETY: GIL held; a fresh compact ASCII string has room for `len` bytes (and its NUL, set by CPython).
    unsafe {
        let obj = ffi::PyUnicode_New(bytes.len() as ffi::Py_ssize_t, 127);
        if obj.is_null() {
            return Err(python_fail(at));
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), ffi::PyUnicode_1BYTE_DATA(obj), bytes.len());
        Ok(obj)
    }
}

fn utf8_str(bytes: &[u8], surrogates: bool, at: usize) -> Parsed {
    let errors = if surrogates {
        c"surrogatepass".as_ptr()
    } else {
        std::ptr::null()
    };
    // SAFETY: GIL held; CPython validates the bytes.
    let obj = unsafe {
        ffi::PyUnicode_DecodeUTF8(
            bytes.as_ptr().cast::<c_char>(),
            bytes.len() as ffi::Py_ssize_t,
            errors,
        )
    };
    if obj.is_null() {
        // SAFETY: GIL held; the error is ours to clear, and it becomes a DecodeError.
        unsafe { ffi::PyErr_Clear() };
        return fail(at, "invalid UTF-8");
    }
    Ok(obj)
}

#[cold]
fn too_deep(at: usize, depth: usize) -> Fail {
    let reason = if depth >= MAX_DEPTH {
        Reason::TooDeep
    } else {
        Reason::StackExhausted(depth)
    };
    Fail { at, reason }
}

#[cold]
fn python_fail(at: usize) -> Fail {
    // SAFETY: called right after a CPython call failed, with the GIL held.
    let py = unsafe { Python::assume_attached() };
    Fail {
        at,
        reason: Reason::Value(PyErr::fetch(py)),
    }
}

#[cold]
fn line_error(line: &[u8], lineno: usize, at: usize, reason: Reason) -> Error {
    // Columns count characters, as the stdlib's do, not bytes.
    let colno = line[..at.min(line.len())]
        .iter()
        .filter(|&&b| b & 0xC0 != 0x80)
        .count()
        + 1;
    let reason = match reason {
        Reason::Syntax(text) => text.to_owned(),
        Reason::TooDeep => format!("nested deeper than {MAX_DEPTH} levels"),
        Reason::StackExhausted(depth) => {
            format!("nested too deep for the thread's stack ({depth} levels)")
        }
        Reason::Value(err) => {
            // SAFETY: decoding runs with the GIL held.
            let py = unsafe { Python::assume_attached() };
            err.value(py).to_string()
        }
    };
    Error::Decode {
        lineno,
        colno,
        reason,
    }
}

/// Short ASCII strings seen before in this decode, shared instead of made again: keys repeat on every line,
/// and so do values such as roles. A direct-mapped table; a collision simply replaces the entry.
struct StringCache {
    slots: Box<[*mut ffi::PyObject; CACHE_SLOTS]>,
}

// SAFETY: the raw pointers (the cache, the array stack, empty between calls) are only touched by the methods of a
// `LineDecoder`, which run with the GIL held and one at a time (pyo3 borrow-checks `&mut self`).
unsafe impl Send for Decoder {}
// SAFETY: as for Send.
unsafe impl Sync for Decoder {}

const CACHE_SLOTS: usize = 1024;
const CACHE_MAX_LEN: usize = 32;

impl Default for StringCache {
    fn default() -> Self {
        StringCache {
            slots: Box::new([std::ptr::null_mut(); CACHE_SLOTS]),
        }
    }
}

impl StringCache {
    /// A new reference to a str of the ASCII `bytes`, from the cache when the same text was seen.
    #[inline]
    fn get(&mut self, bytes: &[u8]) -> Parsed {
        if bytes.len() > CACHE_MAX_LEN {
            return ascii_str(bytes, 0);
        }
        let slot = &mut self.slots[hash(bytes) % CACHE_SLOTS];
        // SAFETY: GIL held; cached objects are compact ASCII strings we hold a reference to.
        unsafe {
            let cached = *slot;
            if !cached.is_null()
                && ffi::PyUnicode_GET_LENGTH(cached) as usize == bytes.len()
                && std::slice::from_raw_parts(ffi::PyUnicode_1BYTE_DATA(cached), bytes.len())
                    == bytes
            {
                return Ok(new_ref(cached));
            }
            let obj = ascii_str(bytes, 0)?;
            if !cached.is_null() {
                ffi::Py_DECREF(cached);
            }
            *slot = new_ref(obj);
            Ok(obj)
        }
    }
}

impl Drop for StringCache {
    fn drop(&mut self) {
        for &obj in self.slots.iter().filter(|o| !o.is_null()) {
            // SAFETY: dropped inside the decode, with the GIL held.
            unsafe { ffi::Py_DECREF(obj) };
        }
    }
}

#[inline]
fn hash(bytes: &[u8]) -> usize {
    // FxHash-style: cheap and good enough to spread short keys over the slots.
    let mut h = bytes.len() as u64;
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    (h >> 32) as usize
}
