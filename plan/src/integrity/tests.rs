//! Windows, their hashes and the plan seal on hand-made inputs; the runtime's tests check the
//! sample, and whole compiled models (a flipped byte, a truncated file, an edited plan) are in
//! tests/compiled_dir_errors.rs.
use super::*;

#[test]
fn a_part_is_cut_into_windows_from_its_own_start() {
    let w: Vec<Range<u64>> = part_windows(256, 2 * WINDOW_BYTES + 512).collect();
    assert_eq!(
        w,
        [
            256..256 + WINDOW_BYTES,
            256 + WINDOW_BYTES..256 + 2 * WINDOW_BYTES,
            256 + 2 * WINDOW_BYTES..768 + 2 * WINDOW_BYTES
        ]
    );
    assert_eq!(part_windows(0, WINDOW_BYTES).count(), 1, "an exact multiple has no empty tail");
    assert_eq!(part_windows(0, 0).count(), 0);
}

#[test]
fn summaries_are_the_short_hashes_and_the_hash_of_the_digests() {
    let (a, b) = (window_digest(b"abc"), window_digest(b""));
    // SHA-256("abc") and SHA-256(""), the FIPS 180-2 test vectors.
    assert_eq!(hex(&a), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(hex(&b), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    let (tree, short) = summarize(&[a, b]);
    assert_eq!(short, "ba7816bf8f01cfeae3b0c44298fc1c14");
    let mut both = a.to_vec();
    both.extend_from_slice(&b);
    assert_eq!(tree, hex(&Sha256::digest(&both)));
}

/// `{"a": .., "plan_sha256": seal}` sealed the way [`seal_plan`] seals a plan.
fn sealed(body: &str) -> String {
    let zeroed = format!("{{\"a\": {body},\n  \"plan_sha256\": \"{ZERO_SEAL}\"\n}}");
    let seal = hex(&Sha256::digest(zeroed.as_bytes()));
    zeroed.replace(ZERO_SEAL, &seal)
}

#[test]
fn a_sealed_text_matches_and_any_change_breaks_it() {
    let text = sealed("[1, 2, \"x\\\"plan_sha256\\\": \\\"\"]");
    assert!(seal_matches(&text), "{text}");
    assert!(!seal_matches(&text.replace("[1, 2", "[1, 3")), "an edited value");
    assert!(!seal_matches(&text.replace(": [", ":  [")), "even white space");
    assert!(!seal_matches(&text.replace("\"plan_sha256\"", "\"plan_sha\"")), "no seal at all");
    let r = seal_value(&text).unwrap();
    let mut other = text.clone();
    other.replace_range(r.start..r.start + 1, if &text[r.start..r.start + 1] == "0" { "1" } else { "0" });
    assert!(!seal_matches(&other), "a changed seal");
}
