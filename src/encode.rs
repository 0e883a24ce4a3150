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
use crate::ffi::{
    dict_len, dict_next, iter_slot, list_item, list_len, mapping_items, push_utf8, repr_with,
    stack_exhausted, to_list, tuple_item, tuple_len, type_of, Strong,
};
use crate::scan::{is_string_special, push_code_point, push_escape, push_escaped_ascii};

/// Containers nested deeper than this are refused (a cycle always reaches it). The stdlib's own limit is the
/// interpreter's recursion limit, 1000 frames by default.
pub const MAX_DEPTH: usize = 1024;

/// All the messages at once: one JSON document per message, each followed by `\n`. `start` is the position of
/// the first in its conversation, for the path in errors.
#[pyfunction]
#[pyo3(signature = (messages, /, *, start = 0))]
pub fn encode_lines(messages: &Bound<'_, PyAny>, start: usize) -> PyResult<Encoded> {
    let mut chunks = encode_chunks(messages, usize::MAX, start)?;
    Ok(chunks.__next__(messages.py())?.unwrap_or(Encoded {
        data: Arc::new(Vec::new()),
        count: 0,
    }))
}

/// The messages a block at a time, so that a save streams in bounded memory and can write one block while the
/// next is encoded. Each block holds whole lines and at least `chunk_size` bytes, but the last. `start` is the
/// position of the first message in its conversation, for the path in errors.
#[pyfunction]
#[pyo3(signature = (messages, /, *, chunk_size = 4194304, start = 0))]
pub fn encode_chunks(
    messages: &Bound<'_, PyAny>,
    chunk_size: usize,
    start: usize,
) -> PyResult<LineChunks> {
    Ok(LineChunks {
        messages: messages.try_iter()?.into_any().unbind(),
        index: start,
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
        let mut encoder = Encoder::new();
        if self.chunk_size < usize::MAX / 2 {
            // Room for the block and the message that crosses its end, so a typical block never reallocates.
            encoder.buf.reserve(self.chunk_size + self.chunk_size / 4);
        }
        let iter = self.messages.as_ptr();
        let first = self.index;
        while encoder.buf.len() < self.chunk_size {
            // SAFETY: the GIL is held (`py`); `iter` is the iterator we own; PyIter_Next returns a new reference.
            let Some(item) = (unsafe { Strong::from_owned(ffi::PyIter_Next(iter)) }) else {
                self.done = true;
                if let Some(err) = PyErr::take(py) {
                    return Err(err);
                }
                break;
            };
            // SAFETY: `item` is held; the GIL is held.
            let step = unsafe { encoder.message(item.as_ptr()) };
            drop(item);
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
        // SAFETY: CPython passes a valid `view`; the bytes are immutable and owned by `slf`, which the view keeps
        // alive (PyBuffer_FillInfo takes a reference to it).
        let status = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                data.as_ptr() as *mut c_void,
                data.len() as ffi::Py_ssize_t,
                1,
                flags,
            )
        };
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

/// The walk's state. Python code can run in the middle of it (a dict subclass's `items()`, a list subclass's
/// `__iter__`, and another thread while that code releases the GIL), and can then change any container we are
/// inside. So: every object we recurse into is held by a strong reference (`Strong`), lists are re-read (size and
/// item) at every step as CPython's `Modules/_json.c` does, and the exact dicts we walk with `PyDict_Next` have
/// their remaining items snapshotted right before Python code can run (`before_python`).
///
/// Nothing else runs Python code or lets go of the GIL: the checks and reads here do not, and releasing a
/// reference we hold cannot free an object (and run its finalizer) unless its container dropped it, which only
/// Python code can have done, after a snapshot.
#[derive(Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
    /// The containers being written, outermost first: the depth, and the evidence for a cycle. Compared by address
    /// only, never dereferenced (each is kept alive by the level that recursed into it).
    containers: Vec<*mut ffi::PyObject>,
    /// The exact dicts being walked, outermost first.
    dicts: Vec<DictWalk>,
    /// Container levels must start above this address (`ffi::stack_floor`); 0 when unknown.
    stack_floor: usize,
}

/// An exact dict being walked: live with `PyDict_Next` from `pos`, or, once Python code could run (and change the
/// dict), from the snapshot of the items that were still to come. Snapshotting lazily keeps the hot path (exact
/// dicts with no subclass inside) free of the list of items the stdlib builds for every dict, while the output is
/// the stdlib's: the dict as it was when its walk began, whatever the code does to it meanwhile.
struct DictWalk {
    /// Kept alive by the level that recursed into it.
    dict: *mut ffi::PyObject,
    pos: ffi::Py_ssize_t,
    rest: Option<std::vec::IntoIter<(Strong, Strong)>>,
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
    /// Less than `ffi::STACK_MARGIN` of the thread's stack was left at this depth.
    StackExhausted {
        depth: usize,
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
        // SAFETY: the contract above.
        let key = unsafe { Bound::from_borrowed_ptr(Python::assume_attached(), key) };
        self.path.push(Segment::Key(key.unbind()));
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
            Kind::StackExhausted { depth } => {
                format!("nested too deep for the thread's stack ({depth} levels)")
            }
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
    // SAFETY: GIL held via `key`, which is live.
    let is_str = unsafe { ffi::PyUnicode_Check(key.as_ptr()) } != 0;
    // SAFETY: as above, and `key` is a str (which cannot fail to encode).
    if is_str && unsafe { encoder.string(key.as_ptr()) }.is_ok() {
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
    /// An encoder for a walk that starts in the caller's frame: its levels are checked against the stack left here.
    pub fn new() -> Self {
        Encoder {
            stack_floor: crate::ffi::stack_floor(),
            ..Encoder::default()
        }
    }

    /// # Safety
    /// `obj` is live and the GIL is held.
    unsafe fn message(&mut self, obj: *mut ffi::PyObject) -> Step {
        // SAFETY: the caller's contract.
        unsafe { self.value(obj)? };
        self.buf.push(b'\n');
        Ok(())
    }

    /// # Safety (for this and every method below that takes an object)
    /// The object is live for the duration of the call (the caller holds a strong reference to it, directly or
    /// through an immutable tuple), and the GIL is held.
    #[inline]
    unsafe fn value(&mut self, obj: *mut ffi::PyObject) -> Step {
        // SAFETY: the contract above; the checks below only read the object's type and the singletons.
        unsafe {
            let ty = type_of(obj);
            if ty == type_ptr!(PyUnicode_Type) {
                self.string(obj)
            } else if ty == type_ptr!(PyDict_Type) {
                self.dict(obj)
            } else if ty == type_ptr!(PyList_Type) {
                self.list(obj)
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
                self.tuple(obj)
            } else {
                self.subclass_value(obj)
            }
        }
    }

    /// Subclasses of the JSON types, in the order the stdlib's encoder tries them.
    #[cold]
    unsafe fn subclass_value(&mut self, obj: *mut ffi::PyObject) -> Step {
        // SAFETY: `value`'s contract. The type slots compared are read from live type objects.
        unsafe {
            if ffi::PyUnicode_Check(obj) != 0 {
                self.string(obj)
            } else if ffi::PyLong_Check(obj) != 0 {
                self.int(obj)
            } else if ffi::PyFloat_Check(obj) != 0 {
                self.float(obj);
                Ok(())
            } else if ffi::PyList_Check(obj) != 0 {
                // As the stdlib: what __iter__ yields. A subclass that inherits list's __iter__ yields its storage,
                // read directly as for a list.
                if iter_slot(type_of(obj)) == iter_slot(type_ptr!(PyList_Type)) {
                    self.list(obj)
                } else {
                    self.iterated(obj)
                }
            } else if ffi::PyTuple_Check(obj) != 0 {
                if iter_slot(type_of(obj)) == iter_slot(type_ptr!(PyTuple_Type)) {
                    self.tuple(obj)
                } else {
                    self.iterated(obj)
                }
            } else if ffi::PyDict_Check(obj) != 0 {
                self.dict_subclass(obj)
            } else {
                Err(Failure::new(Kind::Unserializable {
                    type_name: type_name(obj),
                }))
            }
        }
    }

    /// Counts a level; refuses it past `MAX_DEPTH`, or when the thread's stack is nearly used up.
    #[inline]
    fn enter(&mut self, container: *mut ffi::PyObject) -> Step {
        if self.containers.len() >= MAX_DEPTH || stack_exhausted(self.stack_floor) {
            return Err(self.too_deep(container));
        }
        self.containers.push(container);
        Ok(())
    }

    #[cold]
    fn too_deep(&self, container: *mut ffi::PyObject) -> Failure {
        let depth = self.containers.len();
        if depth < MAX_DEPTH {
            return Failure::new(Kind::StackExhausted { depth });
        }
        Failure::new(Kind::TooDeep {
            circular: self.containers.contains(&container),
        })
    }

    /// An empty container is a level too, as the decoder counts it: what we write must read back.
    #[inline]
    fn leaf_container(&self) -> Step {
        if self.containers.len() >= MAX_DEPTH {
            return Err(Failure::new(Kind::TooDeep { circular: false }));
        }
        Ok(())
    }

    /// Python code is about to run: snapshot the rest of every exact dict being walked live, so that what the code
    /// does to them (or lets another thread do) is not seen, as the stdlib's snapshot of each dict is not. Walks
    /// enclosing a snapshotted one were snapshotted with it, so the loop stops at the first.
    #[cold]
    unsafe fn before_python(&mut self) {
        for walk in self.dicts.iter_mut().rev() {
            if walk.rest.is_some() {
                break;
            }
            let mut rest = Vec::new();
            // SAFETY: `walk.dict` is kept alive by the level walking it, and the GIL is held.
            while let Some(pair) = unsafe { dict_next(walk.dict, &mut walk.pos) } {
                rest.push(pair);
            }
            walk.rest = Some(rest.into_iter());
        }
    }

    /// A list, or a subclass that inherits list's `__iter__`.
    #[inline(always)]
    unsafe fn list(&mut self, obj: *mut ffi::PyObject) -> Step {
        // SAFETY: `value`'s contract.
        if unsafe { list_len(obj) } == 0 {
            self.leaf_container()?;
            self.buf.extend_from_slice(b"[]");
            return Ok(());
        }
        self.enter(obj)?;
        // SAFETY: `value`'s contract.
        let result = unsafe { self.list_items(obj) };
        self.containers.pop();
        result
    }

    #[inline(always)]
    unsafe fn list_items(&mut self, list: *mut ffi::PyObject) -> Step {
        self.buf.push(b'[');
        let mut i = 0;
        // Python code run by an item (a subclass inside it) may shrink or clear the list: the size and the item are
        // read again at every step, and the item is held while we write it.
        // SAFETY: `value`'s contract.
        while let Some(item) = unsafe { list_item(list, i) } {
            if i > 0 {
                self.buf.push(b',');
            }
            // SAFETY: `item` is held; the GIL is held.
            unsafe { self.value(item.as_ptr()) }.map_err(|e| e.at_index(i))?;
            i += 1;
        }
        self.buf.push(b']');
        Ok(())
    }

    /// A tuple, or a subclass that inherits tuple's `__iter__` (a namedtuple).
    unsafe fn tuple(&mut self, obj: *mut ffi::PyObject) -> Step {
        // SAFETY: `value`'s contract; a tuple never changes size, and we hold each item while writing it.
        unsafe {
            let len = tuple_len(obj);
            if len == 0 {
                self.leaf_container()?;
                self.buf.extend_from_slice(b"[]");
                return Ok(());
            }
            self.enter(obj)?;
            self.buf.push(b'[');
            let mut result = Ok(());
            for i in 0..len {
                if i > 0 {
                    self.buf.push(b',');
                }
                let item = tuple_item(obj, i);
                if let Err(e) = self.value(item.as_ptr()) {
                    result = Err(e.at_index(i));
                    break;
                }
            }
            self.buf.push(b']');
            self.containers.pop();
            result
        }
    }

    /// A list or tuple subclass with its own `__iter__`: written as what it yields, as the stdlib writes it.
    #[cold]
    unsafe fn iterated(&mut self, obj: *mut ffi::PyObject) -> Step {
        self.enter(obj)?;
        // SAFETY: `value`'s contract. `to_list` runs __iter__ (Python code): `before_python` first.
        let result = unsafe {
            self.before_python();
            match to_list(obj) {
                None => Err(fetch_python_error()),
                Some(items) => self.list_items(items.as_ptr()),
            }
        };
        self.containers.pop();
        result
    }

    unsafe fn dict(&mut self, obj: *mut ffi::PyObject) -> Step {
        // SAFETY: `value`'s contract.
        if unsafe { dict_len(obj) } == 0 {
            self.leaf_container()?;
            self.buf.extend_from_slice(b"{}");
            return Ok(());
        }
        self.enter(obj)?;
        self.dicts.push(DictWalk {
            dict: obj,
            pos: 0,
            rest: None,
        });
        // SAFETY: `value`'s contract.
        let result = unsafe { self.dict_items(self.dicts.len() - 1) };
        self.dicts.pop();
        self.containers.pop();
        result
    }

    /// The items of `self.dicts[walk]`.
    unsafe fn dict_items(&mut self, walk: usize) -> Step {
        self.buf.push(b'{');
        let mut first = true;
        loop {
            let state = &mut self.dicts[walk];
            let next = match &mut state.rest {
                // SAFETY: `state.dict` is kept alive by our caller; the GIL is held.
                None => unsafe { dict_next(state.dict, &mut state.pos) },
                Some(rest) => rest.next(),
            };
            let Some((key, value)) = next else { break };
            // Both are held while written: code run inside the value may remove them from the dict.
            // SAFETY: `key` and `value` are held; the GIL is held.
            let step = unsafe { self.pair(key.as_ptr(), value.as_ptr(), first) };
            // SAFETY: `key` is held; the GIL is held.
            step.map_err(|e| unsafe { e.at_key(key.as_ptr()) })?;
            first = false;
        }
        self.buf.push(b'}');
        Ok(())
    }

    /// A dict subclass: as the stdlib does, whatever its items() gives.
    #[cold]
    unsafe fn dict_subclass(&mut self, obj: *mut ffi::PyObject) -> Step {
        self.enter(obj)?;
        // SAFETY: `value`'s contract. items() is Python code: `before_python` first.
        let result = unsafe {
            self.before_python();
            match mapping_items(obj) {
                None => Err(fetch_python_error()),
                Some(items) => self.pairs(items.as_ptr()),
            }
        };
        self.containers.pop();
        result
    }

    /// The `(key, value)` tuples of a dict subclass's items(), a list. As the stdlib's list iterator over it, the
    /// size is read again at every step: a list that items() returned, and kept, may change while we walk it.
    unsafe fn pairs(&mut self, items: *mut ffi::PyObject) -> Step {
        self.buf.push(b'{');
        let mut i = 0;
        // SAFETY: `items` is a list our caller holds; the GIL is held. Each pair is held while we write it, and its
        // key and value with it (a tuple never changes).
        unsafe {
            while let Some(pair) = list_item(items, i) {
                let pair = pair.as_ptr();
                if ffi::PyTuple_Check(pair) == 0 || tuple_len(pair) != 2 {
                    ffi::PyErr_SetString(
                        ffi::PyExc_ValueError,
                        c"items must return 2-tuples".as_ptr(),
                    );
                    return Err(fetch_python_error());
                }
                let (key, value) = (tuple_item(pair, 0), tuple_item(pair, 1));
                self.pair(key.as_ptr(), value.as_ptr(), i == 0)
                    .map_err(|e| e.at_key(key.as_ptr()))?;
                i += 1;
            }
        }
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
        // SAFETY: `value`'s contract, for both objects.
        unsafe {
            if ffi::PyUnicode_Check(key) != 0 {
                self.string(key)?;
            } else {
                self.non_str_key(key)?;
            }
            self.buf.push(b':');
            self.value(value)
        }
    }

    /// Keys the stdlib converts to strings: float (by repr), True/False/None, int (by int's repr).
    #[cold]
    unsafe fn non_str_key(&mut self, key: *mut ffi::PyObject) -> Step {
        self.buf.push(b'"');
        // SAFETY: `value`'s contract; PyFloat_AS_DOUBLE only after PyFloat_Check.
        unsafe {
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
        }
        self.buf.push(b'"');
        Ok(())
    }

    /// Appends `base.__repr__(obj)`, which is ASCII for int and float: the stdlib's text for them.
    #[cold]
    unsafe fn repr_with(&mut self, obj: *mut ffi::PyObject, base: *mut ffi::PyTypeObject) -> Step {
        // SAFETY: `value`'s contract; `obj` is an instance of `base` (checked by the callers).
        let Some(repr) = (unsafe { repr_with(obj, base) }) else {
            // The value cannot be printed (an int with too many digits): a reason for an EncodeError.
            // SAFETY: right after the failed call, with the GIL held.
            let py = unsafe { Python::assume_attached() };
            return Err(Failure::new(Kind::BadValue(PyErr::fetch(py))));
        };
        // SAFETY: `repr` is a str we hold; the GIL is held. A failure (MemoryError) is Python's, passed through.
        unsafe { push_utf8(&mut self.buf, &repr) }.map_err(|()| fetch_python_error())
    }

    #[inline]
    unsafe fn int(&mut self, obj: *mut ffi::PyObject) -> Step {
        let mut overflow = 0;
        // SAFETY: `value`'s contract; `obj` is an int (or subclass), so no __index__ runs.
        let v = unsafe { ffi::PyLong_AsLongLongAndOverflow(obj, &mut overflow) };
        if overflow != 0 {
            // SAFETY: as above.
            return unsafe { self.repr_with(obj, type_ptr!(PyLong_Type)) };
        }
        // SAFETY: the GIL is held.
        if v == -1 && !unsafe { ffi::PyErr_Occurred() }.is_null() {
            return Err(fetch_python_error());
        }
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        Ok(())
    }

    #[inline]
    unsafe fn float(&mut self, obj: *mut ffi::PyObject) {
        // SAFETY: `value`'s contract; `obj` is a float (or subclass).
        let v = unsafe { ffi::PyFloat_AS_DOUBLE(obj) };
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
        // SAFETY: the contract above. A ready str's data holds `len` code units of its kind, and stays put while
        // we read it (a str is immutable, held by our caller, and no Python code runs here).
        unsafe {
            #[cfg(not(Py_3_12))]
            if ffi::PyUnicode_READY(obj) != 0 {
                return Err(fetch_python_error());
            }
            let len = ffi::PyUnicode_GET_LENGTH(obj) as usize;
            self.buf.push(b'"');
            // CPython keeps an "ascii" bit; pyo3-ffi does not expose it for 3.14 (the bitfield it sits in changed
            // layout), so there a 1-byte string is checked for ASCII instead (word at a time).
            #[cfg(not(Py_3_14))]
            let ascii = ffi::PyUnicode_IS_ASCII(obj) != 0;
            #[cfg(Py_3_14)]
            let ascii = ffi::PyUnicode_KIND(obj) == ffi::PyUnicode_1BYTE_KIND
                && std::slice::from_raw_parts(ffi::PyUnicode_1BYTE_DATA(obj), len).is_ascii();
            if ascii {
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
