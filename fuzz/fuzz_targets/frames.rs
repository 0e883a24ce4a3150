#![no_main]
//! See `conversation_codec_fuzz::frames` (fuzz/src/frames.rs) for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| conversation_codec_fuzz::frames::check(data));
