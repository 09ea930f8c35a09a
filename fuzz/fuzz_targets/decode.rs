//! Any bytes, fed whole and in pieces to every kind of decoder: the same packets, no panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_codec::fuzzing::decode(data));
