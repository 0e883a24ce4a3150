//! The core's errors and their one conversion to Python exceptions.
//!
//! The exception classes users catch are defined in Python (`conversation_codec.errors`) and imported here, as
//! cryptography does, so there is a single definition of each. Errors that Python code raised while we called it
//! (an iterator, a `dict` subclass's `items()`, a `MemoryError`) travel through unchanged.

use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::prelude::*;

pyo3::import_exception!(conversation_codec.errors, DecodeError);
pyo3::import_exception!(conversation_codec.errors, EncodeError);
pyo3::import_exception!(conversation_codec.errors, CorruptFileError);

#[derive(Debug)]
pub enum Error {
    /// A line that is not JSON; `source` (the file) is added where the error leaves the core.
    Decode {
        lineno: usize,
        colno: usize,
        reason: String,
    },
    /// A value that cannot be written as JSON; `path` is where it sits, e.g. `messages[3]["content"]`.
    Encode { path: String, reason: String },
    /// Stored bytes that cannot be read at `offset` (in the file): damaged, or `truncated` (the data ends before
    /// the member that starts there does: a torn append, or a read buffer that stops short).
    Corrupt {
        offset: u64,
        truncated: bool,
        reason: String,
    },
    /// An allocation that the data asked for failed (a decompression bomb, or data larger than memory): reported,
    /// never an abort.
    NoMemory,
    /// An argument out of range (a compression level, lists of different lengths).
    Invalid(String),
    /// An exception Python raised while the core called it.
    Python(PyErr),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<PyErr> for Error {
    fn from(err: PyErr) -> Self {
        Error::Python(err)
    }
}

impl Error {
    /// The Python exception, naming `source` (the file) where the error has one.
    #[cold]
    pub fn into_pyerr(self, source: &str) -> PyErr {
        self.into_pyerr_for(source.to_owned())
    }

    /// `into_pyerr` for a source that is any Python object (a file name with surrogate escapes is passed through
    /// as it came, never decoded).
    #[cold]
    pub fn into_pyerr_for<S>(self, source: S) -> PyErr
    where
        S: for<'py> IntoPyObject<'py> + Send + Sync + 'static,
    {
        match self {
            Error::Decode {
                lineno,
                colno,
                reason,
            } => DecodeError::new_err((source, lineno, colno, reason)),
            Error::Encode { path, reason } => EncodeError::new_err((path, reason)),
            Error::Corrupt { offset, reason, .. } => {
                CorruptFileError::new_err((source, offset, reason))
            }
            Error::NoMemory => PyMemoryError::new_err("the data does not fit in memory"),
            Error::Invalid(reason) => PyValueError::new_err(reason),
            Error::Python(err) => err,
        }
    }
}
