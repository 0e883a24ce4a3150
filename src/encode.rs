//! Python objects -> JSONL bytes.
//!
//! The encoder walks the objects directly (no `json` module, no bytes object or Python call per message) into
//! one growing buffer, and writes what the stdlib's `json.dumps` would, compactly and as UTF-8: values that
//! round-trip through the stdlib round-trip here with the same types. Strings are read straight from CPython's
//! compact representations (1, 2 or 4 bytes per character), so lone surrogates are escaped as `\udXXX`, as the
//! stdlib writes them. The hot path allocates nothing per value; the key path of a failing value is collected
//! only while the error travels back up.

use std::ffi::{c_int, c_void};
use std::ptr::addr_of_mut;
use std::sync::Arc;

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;

use crate::errors::Error;
use crate::scan::{is_string_special, push_code_point, push_escape, push_escaped_ascii};

/// Containers nested deeper than this are refused (a cycle always reaches it). The stdlib's own limit is the
/// interpreter's recursion limit, 1000 frames by default.
pub const MAX_DEPTH: usize = 1024;

/// All the messages at once: one JSON document per message, each followed by `\n`.
#[pyfunction]
#[pyo3(signature = (messages, /))]
pub fn encode_lines(messages: &Bound<'_, PyAny>) -> PyResult<Encoded> {
    let mut chunks = encode_chunks(messages, usize::MAX)?;
    Ok(chunks.__next__(messages.py())?.unwrap_or(Encoded {
        data: Arc::new(Vec::new()),
        count: 0,
    }))
}

/// The messages a block at a time, so that a save streams in bounded memory and can write one block while the
/// next is encoded. Each block holds whole lines and at least `chunk_size` bytes, but the last.
#[pyfunction]
#[pyo3(signature = (messages, /, *, chunk_size = 4194304))]
pub fn encode_chunks(messages: &Bound<'_, PyAny>, chunk_size: usize) -> PyResult<LineChunks> {
    Ok(LineChunks {
        messages: messages.try_iter()?.into_any().unbind(),
        index: 0,
        chunk_size,
        done: false,
    })
}

#[pyclass(module = "conversation_codec._core")]
pub struct LineChunks {
    messages: Py<PyAny>,
    /// Position of the next message, for the path in errors.
    index: usize,
    chunk_size: usize,
    done: bool,
}

#[pymethods]
impl LineChunks {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Encoded>> {
        if self.done {
            return Ok(None);
        }
        let mut encoder = Encoder::default();
        if self.chunk_size < usize::MAX / 2 {
            // Room for the block and the message that crosses its end, so a typical block never reallocates.
            encoder.buf.reserve(self.chunk_size + self.chunk_size / 4);
        }
        let iter = self.messages.as_ptr();
        let first = self.index;
        while encoder.buf.len() < self.chunk_size {
            // SAFETY: the GIL is held (`py`); `iter` is the iterator we own; items are new references.
            let item = unsafe { ffi::PyIter_Next(iter) };
            if item.is_null() {
                self.done = true;
                if let Some(err) = PyErr::take(py) {
                    return Err(err);
                }
                break;
            }
            let step = unsafe { encoder.message(item) };
            unsafe { ffi::Py_DECREF(item) };
            if let Err(failure) = step {
                self.done = true;
                return Err(failure.at_index(self.index).into_error(py).into_pyerr(""));
            }
            self.index += 1;
        }
        if encoder.buf.is_empty() {
            return Ok(None);
        }
        Ok(Some(Encoded {
            data: Arc::new(encoder.buf),
            count: self.index - first,
        }))
    }
}

/// Encoded JSONL, lent to Python through the buffer protocol: `os.write`, `memoryview` and `bytes()` read it
/// where it is, without the copy into a `bytes` object (and the page faults of a second buffer) that returning
/// `bytes` would cost on every save.
#[pyclass(module = "conversation_codec._core", frozen)]
pub struct Encoded {
    /// Shared, so that a writer thread can hold the bytes while Python lets go of the object.
    pub data: Arc<Vec<u8>>,
    /// The number of messages (lines) in it.
    #[pyo3(get)]
    count: usize,
}

#[pymethods]
impl Encoded {
    /// # Safety
    /// Called by CPython with a valid `view`; the data is immutable for the object's lifetime.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err("encoded JSONL is read-only"));
        }
        let data = &slf.get().data;
        let status = ffi::PyBuffer_FillInfo(
            view,
            slf.as_ptr(),
            data.as_ptr() as *mut c_void,
            data.len() as ffi::Py_ssize_t,
            1,
            flags,
        );
        if status == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}

    fn __len__(&self) -> usize {
        self.data.len()
    }
}

#[derive(Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
    /// The containers being written, outermost first: the depth, and the evidence for a cycle.
    containers: Vec<*mut ffi::PyObject>,
}

/// Why a value could not be written, and where: `path` is filled innermost first as the error returns.
pub struct Failure {
    kind: Kind,
    path: Vec<Segment>,
}

enum Kind {
    Unserializable {
        type_name: String,
    },
    BadKey {
        type_name: String,
    },
    TooDeep {
        circular: bool,
    },
    /// The value itself could not be converted (an int with more digits than Python will print).
    BadValue(PyErr),
    /// Python code we called raised: passed through unchanged.
    Python(PyErr),
}

enum Segment {
    Index(usize),
    Key(Py<PyAny>),
}

impl Failure {
    #[cold]
    fn new(kind: Kind) -> Self {
        Failure {
            kind,
            path: Vec::new(),
        }
    }

    #[cold]
    fn at_index(mut self, index: usize) -> Self {
        self.path.push(Segment::Index(index));
        self
    }

    /// # Safety
    /// `key` must be a live object and the GIL held.
    #[cold]
    unsafe fn at_key(mut self, key: *mut ffi::PyObject) -> Self {
        let py = Python::assume_attached();
        self.path
            .push(Segment::Key(Bound::from_borrowed_ptr(py, key).unbind()));
        self
    }

    #[cold]
    pub fn into_error(self, py: Python<'_>) -> Error {
        let reason = match self.kind {
            Kind::Python(err) => return Error::Python(err),
            Kind::Unserializable { type_name } => format!("{type_name} is not JSON serializable"),
            Kind::BadKey { type_name } => {
                format!("keys must be str, int, float, bool or None, not {type_name}")
            }
            Kind::TooDeep { circular: true } => "circular reference detected".to_owned(),
            Kind::TooDeep { circular: false } => format!("nested deeper than {MAX_DEPTH} levels"),
            Kind::BadValue(err) => err.value(py).to_string(),
        };
        // A path 1024 levels deep would make a 3 KB message: the outermost and innermost steps tell where.
        const SHOWN: usize = 8;
        let steps = self.path.len();
        let mut path = String::from("messages");
        for (depth, segment) in self.path.iter().rev().enumerate() {
            if steps > 3 * SHOWN && (SHOWN..steps - SHOWN).contains(&depth) {
                if depth == SHOWN {
                    path.push_str(&format!("...({} levels)...", steps - 2 * SHOWN));
                }
                continue;
            }
            match segment {
                Segment::Index(i) => path.push_str(&format!("[{i}]")),
                Segment::Key(key) => path.push_str(&format!("[{}]", describe_key(key.bind(py)))),
            }
        }
        Error::Encode { path, reason }
    }
}

/// A key as it reads in a path: a string in JSON quotes, anything else as Python's repr.
fn describe_key(key: &Bound<'_, PyAny>) -> String {
    let mut encoder = Encoder::default();
    // SAFETY: GIL held via `key`; a str key cannot fail to encode.
    if unsafe { ffi::PyUnicode_Check(key.as_ptr()) } != 0
        && unsafe { encoder.string(key.as_ptr()) }.is_ok()
    {
        return String::from_utf8_lossy(&encoder.buf).into_owned();
    }
    key.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<key>".to_owned())
}

#[cold]
fn type_name(obj: *mut ffi::PyObject) -> String {
    // SAFETY: `obj` is live and the GIL is held (callers are inside an encode).
    unsafe {
        let py = Python::assume_attached();
        let obj = Bound::from_borrowed_ptr(py, obj);
        obj.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "<unknown type>".to_owned())
    }
}

#[cold]
fn fetch_python_error() -> Failure {
    // SAFETY: only called right after a CPython call returned its error value, with the GIL held.
    let py = unsafe { Python::assume_attached() };
    Failure::new(Kind::Python(PyErr::fetch(py)))
}

macro_rules! type_ptr {
    ($t:ident) => {
        addr_of_mut!(ffi::$t)
    };
}

type Step = std::result::Result<(), Failure>;

impl Encoder {
    unsafe fn message(&mut self, obj: *mut ffi::PyObject) -> Step {
        self.value(obj)?;
        self.buf.push(b'\n');
        Ok(())
    }

    #[inline]
    unsafe fn value(&mut self, obj: *mut ffi::PyObject) -> Step {
        let ty = ffi::Py_TYPE(obj);
        if ty == type_ptr!(PyUnicode_Type) {
            self.string(obj)
        } else if ty == type_ptr!(PyDict_Type) {
            self.dict(obj)
        } else if ty == type_ptr!(PyList_Type) {
            self.sequence(obj, ffi::PyList_GET_SIZE(obj), |o, i| {
                ffi::PyList_GET_ITEM(o, i)
            })
        } else if ty == type_ptr!(PyLong_Type) {
            self.int(obj)
        } else if obj == ffi::Py_None() {
            self.buf.extend_from_slice(b"null");
            Ok(())
        } else if obj == ffi::Py_True() {
            self.buf.extend_from_slice(b"true");
            Ok(())
        } else if obj == ffi::Py_False() {
            self.buf.extend_from_slice(b"false");
            Ok(())
        } else if ty == type_ptr!(PyFloat_Type) {
            self.float(obj);
            Ok(())
        } else if ty == type_ptr!(PyTuple_Type) {
            self.sequence(obj, ffi::PyTuple_GET_SIZE(obj), |o, i| {
                ffi::PyTuple_GET_ITEM(o, i)
            })
        } else {
            self.subclass_value(obj)
        }
    }

    /// Subclasses of the JSON types, in the order the stdlib's encoder tries them.
    #[cold]
    unsafe fn subclass_value(&mut self, obj: *mut ffi::PyObject) -> Step {
        if ffi::PyUnicode_Check(obj) != 0 {
            self.string(obj)
        } else if ffi::PyLong_Check(obj) != 0 {
            self.int(obj)
        } else if ffi::PyFloat_Check(obj) != 0 {
            self.float(obj);
            Ok(())
        } else if ffi::PyList_Check(obj) != 0 {
            self.sequence(obj, ffi::PyList_GET_SIZE(obj), |o, i| {
                ffi::PyList_GET_ITEM(o, i)
            })
        } else if ffi::PyTuple_Check(obj) != 0 {
            self.sequence(obj, ffi::PyTuple_GET_SIZE(obj), |o, i| {
                ffi::PyTuple_GET_ITEM(o, i)
            })
        } else if ffi::PyDict_Check(obj) != 0 {
            // As the stdlib does for dict subclasses: whatever their items() gives.
            let items = ffi::PyMapping_Items(obj);
            if items.is_null() {
                return Err(fetch_python_error());
            }
            let result = self.enter(obj).and_then(|()| self.pairs(items));
            ffi::Py_DECREF(items);
            self.containers.pop();
            result
        } else {
            Err(Failure::new(Kind::Unserializable {
                type_name: type_name(obj),
            }))
        }
    }

    #[inline]
    unsafe fn enter(&mut self, container: *mut ffi::PyObject) -> Step {
        if self.containers.len() >= MAX_DEPTH {
            let circular = self.containers.contains(&container);
            return Err(Failure::new(Kind::TooDeep { circular }));
        }
        self.containers.push(container);
        Ok(())
    }

    /// An empty container is a level too, as the decoder counts it: what we write must read back.
    #[inline]
    fn leaf_container(&self) -> Step {
        if self.containers.len() >= MAX_DEPTH {
            return Err(Failure::new(Kind::TooDeep { circular: false }));
        }
        Ok(())
    }

    unsafe fn sequence(
        &mut self,
        obj: *mut ffi::PyObject,
        len: ffi::Py_ssize_t,
        get: impl Fn(*mut ffi::PyObject, ffi::Py_ssize_t) -> *mut ffi::PyObject,
    ) -> Step {
        if len == 0 {
            self.leaf_container()?;
            self.buf.extend_from_slice(b"[]");
            return Ok(());
        }
        self.enter(obj)?;
        self.buf.push(b'[');
        for i in 0..len {
            if i > 0 {
                self.buf.push(b',');
            }
            // Lists and tuples cannot change while we write them: no Python code runs in between,
            // except a dict subclass's items(), for which we hold a reference to every item.
            let item = get(obj, i);
            ffi::Py_INCREF(item);
            let step = self.value(item);
            ffi::Py_DECREF(item);
            step.map_err(|e| e.at_index(i as usize))?;
        }
        self.buf.push(b']');
        self.containers.pop();
        Ok(())
    }

    unsafe fn dict(&mut self, obj: *mut ffi::PyObject) -> Step {
        if ffi::PyDict_Size(obj) == 0 {
            self.leaf_container()?;
            self.buf.extend_from_slice(b"{}");
            return Ok(());
        }
        self.enter(obj)?;
        self.buf.push(b'{');
        let mut pos: ffi::Py_ssize_t = 0;
        let mut key: *mut ffi::PyObject = std::ptr::null_mut();
        let mut value: *mut ffi::PyObject = std::ptr::null_mut();
        let mut first = true;
        while ffi::PyDict_Next(obj, &mut pos, &mut key, &mut value) != 0 {
            // Owned for the duration: a nested dict subclass's items() could run code that mutates this dict.
            ffi::Py_INCREF(key);
            ffi::Py_INCREF(value);
            let step = self.pair(key, value, first);
            ffi::Py_DECREF(value);
            let step = step.map_err(|e| e.at_key(key));
            ffi::Py_DECREF(key);
            step?;
            first = false;
        }
        self.buf.push(b'}');
        self.containers.pop();
        Ok(())
    }

    /// The `(key, value)` tuples of a dict subclass's items().
    unsafe fn pairs(&mut self, items: *mut ffi::PyObject) -> Step {
        let seq = ffi::PySequence_Fast(items, c"items() must return a sequence of pairs".as_ptr());
        if seq.is_null() {
            return Err(fetch_python_error());
        }
        let len = ffi::PySequence_Fast_GET_SIZE(seq);
        let items_ptr = ffi::PySequence_Fast_ITEMS(seq);
        self.buf.push(b'{');
        let mut result = Ok(());
        for i in 0..len {
            let pair = *items_ptr.offset(i);
            if ffi::PyTuple_Check(pair) == 0 || ffi::PyTuple_GET_SIZE(pair) != 2 {
                ffi::PyErr_SetString(
                    ffi::PyExc_ValueError,
                    c"items must return 2-tuples".as_ptr(),
                );
                result = Err(fetch_python_error());
                break;
            }
            let (key, value) = (
                ffi::PyTuple_GET_ITEM(pair, 0),
                ffi::PyTuple_GET_ITEM(pair, 1),
            );
            if let Err(e) = self.pair(key, value, i == 0) {
                result = Err(e.at_key(key));
                break;
            }
        }
        ffi::Py_DECREF(seq);
        result?;
        self.buf.push(b'}');
        Ok(())
    }

    #[inline]
    unsafe fn pair(
        &mut self,
        key: *mut ffi::PyObject,
        value: *mut ffi::PyObject,
        first: bool,
    ) -> Step {
        if !first {
            self.buf.push(b',');
        }
        if ffi::PyUnicode_Check(key) != 0 {
            self.string(key)?;
        } else {
            self.non_str_key(key)?;
        }
        self.buf.push(b':');
        self.value(value)
    }

    /// Keys the stdlib converts to strings: float (by repr), True/False/None, int (by int's repr).
    #[cold]
    unsafe fn non_str_key(&mut self, key: *mut ffi::PyObject) -> Step {
        self.buf.push(b'"');
        if ffi::PyFloat_Check(key) != 0 {
            let v = ffi::PyFloat_AS_DOUBLE(key);
            if v.is_finite() {
                self.repr_with(key, type_ptr!(PyFloat_Type))?;
            } else {
                self.non_finite(v);
            }
        } else if key == ffi::Py_True() {
            self.buf.extend_from_slice(b"true");
        } else if key == ffi::Py_False() {
            self.buf.extend_from_slice(b"false");
        } else if key == ffi::Py_None() {
            self.buf.extend_from_slice(b"null");
        } else if ffi::PyLong_Check(key) != 0 {
            self.repr_with(key, type_ptr!(PyLong_Type))?;
        } else {
            return Err(Failure::new(Kind::BadKey {
                type_name: type_name(key),
            }));
        }
        self.buf.push(b'"');
        Ok(())
    }

    /// Appends `base.__repr__(obj)`, which is ASCII for int and float: the stdlib's text for them.
    unsafe fn repr_with(&mut self, obj: *mut ffi::PyObject, base: *mut ffi::PyTypeObject) -> Step {
        let repr = match (*base).tp_repr {
            Some(f) => f(obj),
            None => std::ptr::null_mut(),
        };
        if repr.is_null() {
            let py = Python::assume_attached();
            return Err(Failure::new(Kind::BadValue(PyErr::fetch(py))));
        }
        let mut len: ffi::Py_ssize_t = 0;
        let text = ffi::PyUnicode_AsUTF8AndSize(repr, &mut len);
        if !text.is_null() {
            self.buf
                .extend_from_slice(std::slice::from_raw_parts(text.cast::<u8>(), len as usize));
        }
        ffi::Py_DECREF(repr);
        Ok(())
    }

    #[inline]
    unsafe fn int(&mut self, obj: *mut ffi::PyObject) -> Step {
        let mut overflow = 0;
        let v = ffi::PyLong_AsLongLongAndOverflow(obj, &mut overflow);
        if overflow != 0 {
            return self.repr_with(obj, type_ptr!(PyLong_Type));
        }
        if v == -1 && !ffi::PyErr_Occurred().is_null() {
            return Err(fetch_python_error());
        }
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        Ok(())
    }

    #[inline]
    unsafe fn float(&mut self, obj: *mut ffi::PyObject) {
        let v = ffi::PyFloat_AS_DOUBLE(obj);
        if v.is_finite() {
            // ryu writes the shortest text that reads back as the same double, always with a '.' or an
            // exponent, so the value stays a float when read.
            self.buf
                .extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
        } else {
            self.non_finite(v);
        }
    }

    /// NaN and the infinities, written as the stdlib writes them (it reads them back too).
    #[cold]
    fn non_finite(&mut self, v: f64) {
        let text: &[u8] = if v.is_nan() {
            b"NaN"
        } else if v > 0.0 {
            b"Infinity"
        } else {
            b"-Infinity"
        };
        self.buf.extend_from_slice(text);
    }

    /// # Safety
    /// `obj` must be a live `str` (or subclass) and the GIL held.
    #[inline]
    pub unsafe fn string(&mut self, obj: *mut ffi::PyObject) -> Step {
        #[cfg(not(Py_3_12))]
        if ffi::PyUnicode_READY(obj) != 0 {
            return Err(fetch_python_error());
        }
        let len = ffi::PyUnicode_GET_LENGTH(obj) as usize;
        self.buf.push(b'"');
        if ffi::PyUnicode_IS_ASCII(obj) != 0 {
            let data = std::slice::from_raw_parts(ffi::PyUnicode_1BYTE_DATA(obj), len);
            push_escaped_ascii(&mut self.buf, data);
        } else {
            match ffi::PyUnicode_KIND(obj) {
                ffi::PyUnicode_1BYTE_KIND => self.wide(std::slice::from_raw_parts(
                    ffi::PyUnicode_1BYTE_DATA(obj),
                    len,
                )),
                ffi::PyUnicode_2BYTE_KIND => self.wide(std::slice::from_raw_parts(
                    ffi::PyUnicode_2BYTE_DATA(obj),
                    len,
                )),
                _ => self.wide(std::slice::from_raw_parts(
                    ffi::PyUnicode_4BYTE_DATA(obj),
                    len,
                )),
            }
        }
        self.buf.push(b'"');
        Ok(())
    }

    /// A non-ASCII string, one code unit at a time, as UTF-8.
    fn wide<T: Copy + Into<u32>>(&mut self, units: &[T]) {
        self.buf.reserve(units.len() * 3);
        for &unit in units {
            let c: u32 = unit.into();
            if c < 0x80 {
                if is_string_special(c as u8) {
                    push_escape(&mut self.buf, c);
                } else {
                    self.buf.push(c as u8);
                }
            } else if (0xD800..0xE000).contains(&c) || c == 0x85 || c == 0x2028 || c == 0x2029 {
                // A lone surrogate (a paired one would be a single code point in CPython's storage) cannot be
                // UTF-8. NEL and the line/paragraph separators can, but `str.splitlines()` and JavaScript break
                // lines at them: escaped, a line of ours is a line to every reader.
                push_escape(&mut self.buf, c);
            } else {
                push_code_point(&mut self.buf, c);
            }
        }
    }
}
