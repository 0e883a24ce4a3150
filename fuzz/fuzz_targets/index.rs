#![no_main]
//! See `conversation_codec_fuzz::index` (fuzz/src/index.rs) for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| conversation_codec_fuzz::index::check(data));
