//! The checks the fuzz targets run, one module per target (`fuzz_targets/<name>.rs` calls `<name>::check`).
//! Each states what must hold for any input: not only "no crash" but the function's contract, and where
//! there is a reference (serde_json, the stdlib's `json`, flate2) agreement with it. A failed check panics with
//! what disagreed; libFuzzer saves the input in `artifacts/<target>/`.

/// How the decoder splits data into lines: at `\n`, `\r\n` and a lone `\r`, as Python's text mode does. Yields
/// `(start, line)` with the line's offset in `data`.
pub fn lines(data: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let end = data[start..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .map_or(data.len(), |i| start + i);
        out.push((start, &data[start..end]));
        start = end + 1;
        if data.get(end) == Some(&b'\r') && data.get(end + 1) == Some(&b'\n') {
            start += 1;
        }
    }
    out
}

pub mod decode;
pub mod differential;
pub mod frames;
pub mod gzip;
pub mod index;
