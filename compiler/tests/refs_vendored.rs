//! The reference outputs the tests read are vendored in `<repo>/tests/refs` (so a fresh clone
//! tests the same anywhere). Where the team's `../shared/refs` exists beside the checkout, the
//! copies must be byte-identical to it: a changed reference must be re-vendored, not missed.
use std::path::PathBuf;

const FILES: [&str; 2] = ["generation-qwen2.5-coder-0.5b.json", "tokenizer-cases.json"];

#[test]
fn vendored_refs_equal_the_shared_ones() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let vendored = repo.join("tests/refs");
    let shared = repo.join("../shared/refs");
    for file in FILES {
        let ours =
            std::fs::read(vendored.join(file)).unwrap_or_else(|e| panic!("vendored reference {file} missing: {e}"));
        assert!(ours.len() > 1000, "vendored reference {file} is implausibly small");
        if !shared.is_dir() {
            eprintln!("note: {} absent; only the vendored copy of {file} was checked", shared.display());
            continue;
        }
        let theirs = std::fs::read(shared.join(file))
            .unwrap_or_else(|e| panic!("{file} missing from {}: {e}", shared.display()));
        assert!(ours == theirs, "tests/refs/{file} differs from ../shared/refs/{file}: copy it again");
    }
}
