#![no_main]
//! See `conversation_codec_fuzz::gzip` (fuzz/src/gzip.rs) for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| conversation_codec_fuzz::gzip::check(data));
