//! The native core of conversation-codec (`conversation_codec._core`): JSONL bytes to and from Python objects.
//! It transforms only; the Python package orchestrates files, keys and options.

use pyo3::prelude::*;

mod decode;
mod encode;
mod errors;
mod scan;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<encode::Encoded>()?;
    m.add_class::<encode::LineChunks>()?;
    m.add_function(wrap_pyfunction!(encode::encode_chunks, m)?)?;
    m.add_function(wrap_pyfunction!(encode::encode_lines, m)?)?;
    m.add_function(wrap_pyfunction!(decode::decode_lines, m)?)?;
    m.add_class::<decode::LineDecoder>()?;
    Ok(())
}
