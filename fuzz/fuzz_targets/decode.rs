#![no_main]
//! See `conversation_codec_fuzz::decode` (fuzz/src/decode.rs) for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| conversation_codec_fuzz::decode::check(data));
