//! The native core of conversation-codec (`conversation_codec._core`): JSONL bytes to and from Python objects.
//! It transforms only; the Python package orchestrates files, keys and options.

#![deny(unsafe_op_in_unsafe_fn)]

use pyo3::prelude::*;

mod decode;
mod encode;
mod errors;
mod ffi;
mod frames;
mod gzip;
mod index;
// scan.rs (not part of this change) still has an unsafe fn whose body is one unsafe operation: allowed there until
// its owner wraps it in an `unsafe` block.
mod scan;
mod validate;
#[cfg(unix)]
mod writer;

/// The core's functions for Rust callers (the fuzz targets in `fuzz/`), which the Python module wraps: all but
/// `decode` and `encode_lines` are pure byte work that needs no interpreter. Not a stable API: it moves with the core.
#[doc(hidden)]
pub mod raw {
    pub use crate::decode::decode;
    pub use crate::encode::{encode_lines, Encoded};
    pub use crate::errors::Error;
    pub use crate::frames::{count_messages, scan_plain_frames, PlainScan};
    pub use crate::gzip::{inflate, member, scan_members};
    pub use crate::index::{header, parse_header, parse_records, Record, HEADER_LEN, RECORD_LEN};
    pub use crate::validate::validate_line;
}

#[pymodule(gil_used = true)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The index file's layout has one definition (index.rs); the Python layer reads its sizes from here.
    m.add("INDEX_HEADER_LEN", index::HEADER_LEN)?;
    m.add("INDEX_RECORD_LEN", index::RECORD_LEN)?;
    // The turn flag of a frame header's message count: one definition (gzip.rs) for gzip members and tokens alike.
    m.add("TURN_FLAG", gzip::TURN_FLAG)?;
    m.add_class::<encode::Encoded>()?;
    #[cfg(unix)]
    m.add_class::<writer::BlockWriter>()?;
    m.add_class::<encode::LineChunks>()?;
    m.add_function(wrap_pyfunction!(encode::encode_chunks, m)?)?;
    m.add_function(wrap_pyfunction!(encode::encode_lines, m)?)?;
    m.add_function(wrap_pyfunction!(decode::decode_lines, m)?)?;
    m.add_class::<decode::LineDecoder>()?;
    m.add_function(wrap_pyfunction!(frames::scan_plain, m)?)?;
    m.add_function(wrap_pyfunction!(gzip::gzip_member, m)?)?;
    m.add_function(wrap_pyfunction!(gzip::gzip_members, m)?)?;
    m.add_function(wrap_pyfunction!(gzip::scan_gzip, m)?)?;
    m.add_function(wrap_pyfunction!(gzip::gunzip, m)?)?;
    m.add_function(wrap_pyfunction!(index::crc32, m)?)?;
    m.add_function(wrap_pyfunction!(index::index_header, m)?)?;
    m.add_function(wrap_pyfunction!(index::parse_index_header, m)?)?;
    m.add_function(wrap_pyfunction!(index::pack_records, m)?)?;
    m.add_function(wrap_pyfunction!(index::unpack_records, m)?)?;
    Ok(())
}
