//! Every packet that decodes encodes to bytes that decode to the same packet.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_codec::fuzzing::roundtrip(data));
