//! Typed wrappers over the raw CPython calls the encoder and decoder make, in the manner of orjson's `src/ffi/`.
//!
//! Every function here requires the GIL (an attached thread) and live objects of the stated type; that is the
//! whole of their contract, stated once here rather than at each call. What they add is ownership: `Strong` is a
//! reference we own and release on drop, so that an object we recurse into stays alive whatever Python code run
//! meanwhile does to the container it came from; and reads of list items re-check the size at every step.

use std::ptr::NonNull;

use pyo3::ffi;

/// A strong (owned) reference, released when dropped.
pub struct Strong(NonNull<ffi::PyObject>);

impl Strong {
    /// Takes ownership of a new reference; `None` if CPython returned NULL (an exception is set).
    ///
    /// # Safety
    /// `obj` is NULL or a new reference the caller owns; the GIL is held.
    #[inline]
    pub unsafe fn from_owned(obj: *mut ffi::PyObject) -> Option<Strong> {
        NonNull::new(obj).map(Strong)
    }

    /// A new strong reference to a borrowed object.
    ///
    /// # Safety
    /// `obj` is a live object; the GIL is held.
    #[inline]
    pub unsafe fn from_borrowed(obj: NonNull<ffi::PyObject>) -> Strong {
        // SAFETY: `obj` is live and the GIL is held (the caller's contract).
        unsafe { ffi::Py_INCREF(obj.as_ptr()) };
        Strong(obj)
    }

    #[inline]
    pub fn as_ptr(&self) -> *mut ffi::PyObject {
        self.0.as_ptr()
    }
}

impl Drop for Strong {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own this reference, and every `Strong` lives inside an encode or decode, which holds the GIL.
        // The release may free the object and run its finalizer: callers drop a `Strong` only where Python code
        // may run (they re-read what they walk after it).
        unsafe { ffi::Py_DECREF(self.0.as_ptr()) };
    }
}

/// The current size of a list: re-read it after anything that can run Python code.
///
/// # Safety
/// `list` is a live `list` (or subclass); the GIL is held.
#[inline]
pub unsafe fn list_len(list: *mut ffi::PyObject) -> usize {
    // SAFETY: the caller's contract; a list's size is never negative.
    unsafe { ffi::PyList_GET_SIZE(list) as usize }
}

/// A strong reference to `list[i]`, or `None` if the list is now shorter than `i + 1` (Python code cleared it).
///
/// # Safety
/// `list` is a live `list` (or subclass); the GIL is held.
#[inline]
pub unsafe fn list_item(list: *mut ffi::PyObject, i: usize) -> Option<Strong> {
    // SAFETY: the caller's contract. The size is read now, right before the item, and nothing runs in between,
    // so `i` is in bounds; the slots of a list's live part are never NULL.
    unsafe {
        if i >= list_len(list) {
            return None;
        }
        let item = ffi::PyList_GET_ITEM(list, i as ffi::Py_ssize_t);
        Some(Strong::from_borrowed(NonNull::new_unchecked(item)))
    }
}

/// The size of a tuple (immutable once built).
///
/// # Safety
/// `tuple` is a live `tuple` (or subclass); the GIL is held.
#[inline]
pub unsafe fn tuple_len(tuple: *mut ffi::PyObject) -> usize {
    // SAFETY: the caller's contract.
    unsafe { ffi::PyTuple_GET_SIZE(tuple) as usize }
}

/// A strong reference to `tuple[i]`.
///
/// # Safety
/// `tuple` is a live `tuple` (or subclass), `i < tuple_len(tuple)`; the GIL is held.
#[inline]
pub unsafe fn tuple_item(tuple: *mut ffi::PyObject, i: usize) -> Strong {
    // SAFETY: the caller's contract; a built tuple's items are never NULL and never change, and the caller holds
    // the tuple alive.
    unsafe {
        let item = ffi::PyTuple_GET_ITEM(tuple, i as ffi::Py_ssize_t);
        Strong::from_borrowed(NonNull::new_unchecked(item))
    }
}

/// The number of items in a dict's own storage (what `PyDict_Next` walks).
///
/// # Safety
/// `dict` is a live `dict` (or subclass); the GIL is held.
#[inline]
pub unsafe fn dict_len(dict: *mut ffi::PyObject) -> usize {
    // SAFETY: the caller's contract.
    unsafe { ffi::PyDict_Size(dict) as usize }
}

/// The next `(key, value)` of a dict from position `pos`, as strong references. Memory-safe even if the dict
/// changed since `pos` was taken (CPython checks `pos` against the current table), but then the walk may repeat
/// or miss entries: callers snapshot the rest before Python code can run (see `encode::Encoder::before_python`).
///
/// # Safety
/// `dict` is a live `dict` (or subclass); the GIL is held.
#[inline]
pub unsafe fn dict_next(
    dict: *mut ffi::PyObject,
    pos: &mut ffi::Py_ssize_t,
) -> Option<(Strong, Strong)> {
    let mut key = std::ptr::null_mut();
    let mut value = std::ptr::null_mut();
    // SAFETY: the caller's contract; PyDict_Next returns borrowed, non-NULL key and value when it returns 1, and
    // we take our own references before anything else can run.
    unsafe {
        if ffi::PyDict_Next(dict, pos, &mut key, &mut value) == 0 {
            return None;
        }
        Some((
            Strong::from_borrowed(NonNull::new_unchecked(key)),
            Strong::from_borrowed(NonNull::new_unchecked(value)),
        ))
    }
}

/// The address of the type's `tp_iter` slot function, to tell a subclass that overrides `__iter__` from one that
/// inherits it (compared as addresses: both sides are read from type objects, never from Rust function items).
///
/// # Safety
/// `ty` is a live type object; the GIL is held.
#[inline]
pub unsafe fn iter_slot(ty: *mut ffi::PyTypeObject) -> usize {
    // SAFETY: the caller's contract.
    unsafe { (*ty).tp_iter.map_or(0, |f| f as usize) }
}

/// The type of a live object.
///
/// # Safety
/// `obj` is live; the GIL is held.
#[inline]
pub unsafe fn type_of(obj: *mut ffi::PyObject) -> *mut ffi::PyTypeObject {
    // SAFETY: the caller's contract.
    unsafe { ffi::Py_TYPE(obj) }
}

/// `list(obj)`: runs `obj.__iter__` (Python code), so callers snapshot what they walk first.
///
/// # Safety
/// `obj` is live; the GIL is held.
#[inline]
pub unsafe fn to_list(obj: *mut ffi::PyObject) -> Option<Strong> {
    // SAFETY: the caller's contract; PySequence_List returns a new reference or NULL with an exception set.
    unsafe { Strong::from_owned(ffi::PySequence_List(obj)) }
}

/// `obj.items()` as a list, as the stdlib's encoder takes it (an exact list returned by `items()` is used as
/// it is, so later changes to it are seen, as the stdlib's list iterator sees them). Runs Python code.
///
/// # Safety
/// `obj` is live; the GIL is held.
#[inline]
pub unsafe fn mapping_items(obj: *mut ffi::PyObject) -> Option<Strong> {
    // SAFETY: the caller's contract; PyMapping_Items returns a new reference to a list, or NULL with an error.
    unsafe { Strong::from_owned(ffi::PyMapping_Items(obj)) }
}

/// `base.__repr__(obj)`: the stdlib's text for an int or float key, or for an int too large for 64 bits.
/// `None` leaves the Python exception set (an int with more digits than Python will print).
///
/// # Safety
/// `obj` is a live instance of `base` (or of a subclass); the GIL is held.
#[inline]
pub unsafe fn repr_with(obj: *mut ffi::PyObject, base: *mut ffi::PyTypeObject) -> Option<Strong> {
    // SAFETY: the caller's contract; int's and float's tp_repr return a new reference or NULL with an error set.
    unsafe {
        let repr_fn = (*base).tp_repr?;
        Strong::from_owned(repr_fn(obj))
    }
}

/// Appends the UTF-8 text of a str. `Err(())` leaves the Python exception set (MemoryError, or a lone surrogate).
///
/// # Safety
/// `s` is a live `str`; the GIL is held.
#[inline]
pub unsafe fn push_utf8(buf: &mut Vec<u8>, s: &Strong) -> Result<(), ()> {
    let mut len: ffi::Py_ssize_t = 0;
    // SAFETY: the caller's contract; the UTF-8 buffer CPython returns lives as long as `s`, which the caller holds
    // across the copy.
    unsafe {
        let text = ffi::PyUnicode_AsUTF8AndSize(s.as_ptr(), &mut len);
        if text.is_null() {
            return Err(());
        }
        buf.extend_from_slice(std::slice::from_raw_parts(text.cast::<u8>(), len as usize));
    }
    Ok(())
}

/// How much stack a container level may not eat into: room for the Python code a subclass's `items()` or
/// `__iter__` runs (and for a garbage collection's finalizers, which an allocation can start), for CPython's own
/// C frames under it, and for the error's way back. Measured on CPython 3.11, release build, 128 KiB thread: a
/// dict subclass at the deepest level allowed crashes with a 2 KiB margin when its items() calls `sorted()`, and
/// survives with 4 KiB whether items() calls `sorted()`, `gc.collect()`, `repr(self)` or `json.dumps()`. 64 KiB is
/// 16 times that, and still leaves a 128 KiB thread (musl's default) about 130 levels, a 256 KiB one about 400
/// (a level takes about 220 bytes of stack in the encoder and decoder alike).
pub const STACK_MARGIN: usize = 64 * 1024;

/// The lowest stack address a container level may start at, for a walk that starts here: levels below it are
/// refused ("nested too deep for the thread's stack") instead of overflowing a small thread stack. Zero (no
/// limit) where the stack's extent is unknown. Computed once per call; checked with `stack_exhausted`.
///
/// The stack is not grown onto the heap (as `stacker::maybe_grow` would): CPython 3.12+ checks the C stack
/// position against the thread's real stack, and would see a foreign one.
#[inline(never)]
pub fn stack_floor() -> usize {
    match stacker::remaining_stack() {
        Some(remaining) => stack_position().saturating_sub(remaining) + STACK_MARGIN,
        None => 0,
    }
}

/// Whether the current frame is below `floor` (the stack grows down on every platform we build for).
#[inline(always)]
pub fn stack_exhausted(floor: usize) -> bool {
    stack_position() < floor
}

/// An address in the current frame.
#[inline(always)]
fn stack_position() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// Keeps the cyclic garbage collector from running for the guard's lifetime, restoring its state on drop.
///
/// Up to CPython 3.11 an allocation of a container (a list or dict the decoder builds) can start a collection
/// there and then, and a collection runs finalizers: Python code, in the middle of a call that relies on no Python
/// code running. From 3.12 a collection only starts at the interpreter's eval breaker, never inside our call, and
/// the guard does nothing.
pub struct GcPause {
    #[cfg(not(Py_3_12))]
    was_enabled: bool,
}

impl GcPause {
    #[cfg(Py_3_12)]
    #[inline]
    pub fn new(_py: pyo3::Python<'_>) -> pyo3::PyResult<Self> {
        Ok(GcPause {})
    }

    #[cfg(all(Py_3_10, not(Py_3_12)))]
    #[inline]
    pub fn new(_py: pyo3::Python<'_>) -> pyo3::PyResult<Self> {
        // SAFETY: the GIL is held (`_py`); PyGC_Disable only sets a flag and returns the previous state.
        let was_enabled = unsafe { ffi::PyGC_Disable() } != 0;
        Ok(GcPause { was_enabled })
    }

    #[cfg(not(Py_3_10))]
    pub fn new(py: pyo3::Python<'_>) -> pyo3::PyResult<Self> {
        use pyo3::types::PyAnyMethods;
        let gc = gc_module(py)?;
        let was_enabled = gc.call_method0("isenabled")?.is_truthy()?;
        gc.call_method0("disable")?;
        Ok(GcPause { was_enabled })
    }
}

/// The `gc` module, taken from `sys.modules` when it is there rather than imported: an import builds tuples and
/// dicts, so with a collection due it would start the very collection the guard is to hold off.
#[cfg(not(Py_3_10))]
fn gc_module(py: pyo3::Python<'_>) -> pyo3::PyResult<pyo3::Bound<'_, pyo3::PyAny>> {
    let name = pyo3::intern!(py, "gc");
    // SAFETY: the GIL is held and `name` is a live str; PyImport_GetModule returns a new reference, or NULL (with
    // an exception set only if the lookup itself failed).
    let found =
        unsafe { pyo3::Bound::from_owned_ptr_or_opt(py, ffi::PyImport_GetModule(name.as_ptr())) };
    match (found, pyo3::PyErr::take(py)) {
        (Some(gc), _) => Ok(gc),
        (None, Some(err)) => Err(err),
        (None, None) => Ok(py.import("gc")?.into_any()),
    }
}

impl Drop for GcPause {
    #[inline]
    fn drop(&mut self) {
        #[cfg(all(Py_3_10, not(Py_3_12)))]
        if self.was_enabled {
            // SAFETY: dropped inside the call that made the guard, with the GIL held.
            unsafe { ffi::PyGC_Enable() };
        }
        #[cfg(not(Py_3_10))]
        if self.was_enabled {
            use pyo3::types::PyAnyMethods;
            // SAFETY: dropped inside the call that made the guard, with the GIL held.
            let py = unsafe { pyo3::Python::assume_attached() };
            if let Ok(gc) = gc_module(py) {
                let _ = gc.call_method0("enable");
            }
        }
    }
}
