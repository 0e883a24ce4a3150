//! The core's errors and their one conversion to Python exceptions.
//!
//! The exception classes users catch are defined in Python (`conversation_codec.errors`) and imported here, as
//! cryptography does, so there is a single definition of each. Errors that Python code raised while we called it
//! (an iterator, a `dict` subclass's `items()`, a `MemoryError`) travel through unchanged.

use pyo3::PyErr;

pyo3::import_exception!(conversation_codec.errors, DecodeError);
pyo3::import_exception!(conversation_codec.errors, EncodeError);

pub enum Error {
    /// A line that is not JSON; `source` (the file) is added where the error leaves the core.
    Decode {
        lineno: usize,
        colno: usize,
        reason: String,
    },
    /// A value that cannot be written as JSON; `path` is where it sits, e.g. `messages[3]["content"]`.
    Encode { path: String, reason: String },
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
    #[cold]
    pub fn into_pyerr(self, source: &str) -> PyErr {
        match self {
            Error::Decode {
                lineno,
                colno,
                reason,
            } => DecodeError::new_err((source.to_owned(), lineno, colno, reason)),
            Error::Encode { path, reason } => EncodeError::new_err((path, reason)),
            Error::Python(err) => err,
        }
    }
}
