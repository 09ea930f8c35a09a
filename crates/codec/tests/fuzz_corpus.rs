//! Replays the saved fuzz corpora (`fuzz/corpus/*`) through the same checks the fuzz
//! targets run, so that every input the fuzzer once kept, crashes included, stays fixed.

use std::fs;
use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let data = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (path, data)
        })
        .collect();
    inputs.sort();
    inputs
}

fn replay(target: &str, check: fn(&[u8])) {
    let inputs = corpus(target);
    assert!(
        inputs.len() >= 8,
        "the {target} corpus has only {} inputs",
        inputs.len()
    );
    for (path, data) in inputs {
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{target} fails on {}", path.display());
        }
    }
}

#[test]
fn decode_corpus_replays_clean() {
    replay("decode", shoal_codec::fuzzing::decode);
}

#[test]
fn roundtrip_corpus_replays_clean() {
    replay("roundtrip", shoal_codec::fuzzing::roundtrip);
}
