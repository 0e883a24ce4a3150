// Exposes pyo3's `Py_3_12`-style cfgs, for the few CPython internals that changed between versions.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
