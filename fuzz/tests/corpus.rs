//! Every fuzz target's body over its checked-in corpus (fuzz/corpus/<target>), on the
//! stable toolchain and without libFuzzer: `cargo test --manifest-path fuzz/Cargo.toml`.
//! A seed that a body rejects (a panic) fails here before any fuzzing.

use std::path::Path;

#[test]
fn every_target_passes_its_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, body) in lockstep_fuzz::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut seeds = 0;
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let data = std::fs::read(&path).expect("a seed file");
            eprintln!("{name}: {}", path.display());
            body(&data);
            seeds += 1;
        }
        assert!(seeds > 0, "{name} has no seeds in {}", dir.display());
    }
}
