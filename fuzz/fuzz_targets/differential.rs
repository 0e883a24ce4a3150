#![no_main]
//! See `conversation_codec_fuzz::differential` (fuzz/src/differential.rs) for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| conversation_codec_fuzz::differential::check(data));
