//! A thread that writes a save's blocks to a file, in order, with the GIL never involved.
//!
//! A Python writer thread overlapped the disk with encoding too, but it needed the GIL back after every write, and
//! waited up to the interpreter's switch interval (5 ms) each time: measured, a 120 MB save took 172 ms against
//! 136 ms with a 0.5 ms interval. This thread owns no Python object: it receives the blocks' bytes (shared with
//! their `Encoded`, or copied from any other buffer), writes them, and for a durable save flushes them to disk
//! every 32 MiB, so the caller's last fsync has little left. It writes through its own duplicate of the caller's
//! descriptor (close-on-exec, closed when the thread ends): the caller closing its descriptor early can never make
//! the thread write into whatever file reuses the number. The Python layer still owns the file: it opens, fsyncs
//! (the same file, through its own descriptor), renames and closes it.

use std::fs::File;
use std::io::Write;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::encode::Encoded;

const FLUSH_EVERY: usize = 32 << 20;
/// Blocks in flight: the encoder runs at most this far ahead of the disk (bounded memory).
const QUEUED: usize = 32;

type Block = Arc<Vec<u8>>;

/// Why the thread stopped before writing everything.
#[derive(Debug)]
enum Failure {
    Io(std::io::Error),
    Panicked,
}

/// The thread and the sending end of its queue.
struct Running {
    sender: SyncSender<Block>,
    thread: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Starts the thread on a duplicate of `fd`, which need stay open only for this call.
    fn start(fd: RawFd, durable: bool) -> std::io::Result<Running> {
        if fd < 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        }
        // SAFETY: the borrow lives only for the dup below, within the call the caller passed `fd` in; a
        // descriptor that is not open makes the dup fail with EBADF (reported), and -1 was refused above.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        // fcntl(F_DUPFD_CLOEXEC): ours, close-on-exec, closed when the thread drops it.
        let file = File::from(borrowed.try_clone_to_owned()?);
        let (sender, receiver) = sync_channel(QUEUED);
        let thread = std::thread::Builder::new()
            .name("conversation-codec-writer".into())
            .spawn(move || run(file, durable, receiver))?;
        Ok(Running { sender, thread })
    }

    /// Closes the queue and waits for every queued block to be written.
    fn finish(self) -> Result<(), Failure> {
        drop(self.sender);
        match self.thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(Failure::Io(err)),
            Err(_) => Err(Failure::Panicked),
        }
    }
}

fn run(mut file: File, durable: bool, blocks: Receiver<Block>) -> std::io::Result<()> {
    let mut unflushed = 0;
    for block in blocks {
        file.write_all(&block)?;
        unflushed += block.len();
        if durable && unflushed >= FLUSH_EVERY {
            file.sync_data()?;
            unflushed = 0;
        }
    }
    Ok(())
}

#[pyclass(module = "conversation_codec._core", frozen)]
pub struct BlockWriter {
    running: Mutex<Option<Running>>,
}

impl BlockWriter {
    fn running(&self) -> MutexGuard<'_, Option<Running>> {
        // Nothing panics while holding the lock; if it did, the state is still consistent.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[pymethods]
impl BlockWriter {
    /// Starts the thread, writing to a duplicate of `fd` (OSError if `fd` is not open or no thread can start).
    #[new]
    #[pyo3(signature = (fd, /, *, durable))]
    fn new(fd: i32, durable: bool) -> PyResult<Self> {
        if fd < 0 {
            return Err(PyValueError::new_err(format!(
                "fd must be a file descriptor, not {fd}"
            )));
        }
        let running = Running::start(fd, durable).map_err(os_error)?;
        Ok(BlockWriter {
            running: Mutex::new(Some(running)),
        })
    }

    /// Queues a block: an `Encoded` without copying it, any other C-contiguous buffer (bytes, bytearray,
    /// memoryview...) in one copy; ValueError for a buffer that is not contiguous. If the thread has stopped on
    /// an error, that error is raised here.
    #[pyo3(signature = (block, /))]
    fn put(&self, py: Python<'_>, block: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = match block.cast::<Encoded>() {
            Ok(encoded) => encoded.get().data.clone(),
            Err(_) => Arc::new(copy_buffer(block)?),
        };
        let sender = self.running().as_ref().map(|r| r.sender.clone());
        let Some(sender) = sender else {
            return Err(PyValueError::new_err("the writer is closed"));
        };
        if py.detach(|| sender.send(bytes)).is_err() {
            // The thread ended early: its error says why.
            return self.close(py);
        }
        Ok(())
    }

    /// Waits for every queued block to be written, then closes the writer's descriptor; raises the first write
    /// error as OSError. Closing again does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let running = self.running().take();
        let Some(running) = running else {
            return Ok(());
        };
        match py.detach(|| running.finish()) {
            Ok(()) => Ok(()),
            Err(Failure::Io(err)) => Err(os_error(err)),
            Err(Failure::Panicked) => Err(PyRuntimeError::new_err(
                "the writer thread stopped on an internal error",
            )),
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Closes the writer. When the block raised, that exception goes on and a write error is dropped (the save
    /// has failed either way).
    #[pyo3(signature = (exc_type, exc, tb, /))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        exc: &Bound<'_, PyAny>,
        tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let _ = (exc, tb);
        let closed = self.close(py);
        if exc_type.is_none() {
            closed?;
        }
        Ok(false)
    }
}

impl Drop for BlockWriter {
    /// A writer dropped without `close()` still ends its thread (and its descriptor): it writes what was queued,
    /// and its error, if any, has no one left to report to.
    fn drop(&mut self) {
        if let Some(running) = self.running().take() {
            let _ = running.finish();
        }
    }
}

/// The bytes of a C-contiguous buffer of any format, in one copy.
fn copy_buffer(block: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let buffer = PyUntypedBuffer::get(block)?;
    if !buffer.is_c_contiguous() {
        return Err(PyValueError::new_err(
            "put() needs a C-contiguous buffer (bytes, bytearray, a contiguous memoryview)",
        ));
    }
    // SAFETY: a C-contiguous buffer is `len_bytes()` bytes from `buf_ptr()`, alive while `buffer` is; the GIL is
    // held and no Python code runs during the copy, so no Python thread resizes or writes the exporter meanwhile.
    let bytes =
        unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, buffer.len_bytes()) };
    Ok(bytes.to_vec())
}

/// The OSError Python itself would raise: built from (errno, strerror), so it has `errno` and is the precise
/// subclass (FileNotFoundError, PermissionError...). pyo3's own conversion leaves `errno` empty.
fn os_error(err: std::io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(code) => PyOSError::new_err((code, err.to_string())),
        None => err.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
    use std::process::Command;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cc-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// Closes a descriptor taken with into_raw_fd.
    fn close(fd: RawFd) {
        // SAFETY: `fd` came from into_raw_fd, nothing else owns it, and it is closed only here.
        drop(unsafe { File::from_raw_fd(fd) });
    }

    #[test]
    fn the_thread_writes_to_its_own_descriptor() {
        const CHILD: &str = "CONVERSATION_CODEC_WRITER_CHILD";
        if std::env::var_os(CHILD).is_none() {
            // Descriptor numbers are reused deterministically only with no other test opening files meanwhile:
            // this runs alone, in a child process.
            let status = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "writer::tests::the_thread_writes_to_its_own_descriptor",
                    "--test-threads=1",
                    "-q",
                ])
                .env(CHILD, "1")
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "the child failed: {status:?}");
            return;
        }
        let (a, b) = (temp("a"), temp("b"));
        let fd = File::create(&a).unwrap().into_raw_fd();
        let running = Running::start(fd, true).unwrap();
        // The caller closes its descriptor early, and the number is reused for another file: the blocks still go
        // to the first file (they went to the second before the writer dup'd the descriptor).
        close(fd);
        let other = File::create(&b).unwrap();
        assert_eq!(other.as_raw_fd(), fd);
        for block in [b"one\n".to_vec(), b"two\n".to_vec()] {
            running.sender.send(Arc::new(block)).unwrap();
        }
        running.finish().unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"one\ntwo\n");
        assert_eq!(std::fs::read(&b).unwrap(), b"");
        // A descriptor that is not open (the caller closed it before): an error, not a writer on a stranger.
        let closed = File::open("/dev/null").unwrap().into_raw_fd();
        close(closed);
        assert!(Running::start(closed, false).is_err());
        assert!(Running::start(-1, false).is_err());
        std::fs::remove_file(a).unwrap();
        std::fs::remove_file(b).unwrap();
    }

    #[test]
    fn write_errors_come_back_from_finish() {
        // /dev/full refuses every write with ENOSPC.
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let running = Running::start(full.as_raw_fd(), false).unwrap();
        drop(full);
        running.sender.send(Arc::new(b"x".to_vec())).unwrap();
        match running.finish() {
            Err(Failure::Io(err)) => assert_eq!(err.raw_os_error(), Some(28)),
            other => panic!("{other:?}"),
        }
    }
}
