//! `CompiledModel::stream_weights`, how the GPU backend uploads `weights.bin`: every byte in
//! order, chunk by chunk, and the chunks' pages leave the process's resident set once handed
//! over (so a load never holds the whole file resident), without changing what a later read sees.
use qwen_aot_compiler::compile::CompileOptions;
use qwen_aot_compiler::synthetic::{compile_random, multi_window_hparams, FormatMix};
use qwen_aot_runtime::compiled::{CompiledModel, Integrity};

/// Resident kB of the mapping that starts at `addr`, from /proc/self/smaps.
#[cfg(target_os = "linux")]
fn resident_kb(addr: usize) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut in_map = false;
    for line in smaps.lines() {
        // A mapping's header: `start-end perms offset dev inode path`, addresses in hex.
        let head = line.split_whitespace().next().unwrap_or("");
        if let Some((Ok(start), Ok(_))) =
            head.split_once('-').map(|(s, e)| (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16)))
        {
            in_map = start == addr;
            continue;
        }
        if in_map {
            if let Some(kb) = line.strip_prefix("Rss:") {
                return kb.trim().trim_end_matches("kB").trim().parse().unwrap();
            }
        }
    }
    panic!("no mapping at {addr:#x}");
}

#[test]
fn streamed_weights_are_the_file_and_leave_the_resident_set() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let opts = CompileOptions { prefill_tokens: 8, ..Default::default() };
    compile_random(&multi_window_hparams(), false, 5, &FormatMix::f16(), &opts, &dir).unwrap();
    let model = CompiledModel::open(&dir, Integrity::Sampled).unwrap();
    let file = std::fs::read(dir.join("weights.bin")).unwrap();
    assert_eq!(model.weight_bytes(), &file[..]);
    let chunk = 1 << 20;
    let mut seen = Vec::new();
    let mut offsets = Vec::new();
    model
        .stream_weights(chunk, |off, bytes| {
            offsets.push(off);
            seen.extend_from_slice(bytes);
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, file, "every byte, in order");
    let want: Vec<u64> = (0..file.len().div_ceil(chunk)).map(|i| (i * chunk) as u64).collect();
    assert_eq!(offsets, want);
    #[cfg(target_os = "linux")]
    {
        let addr = model.weight_bytes().as_ptr() as usize;
        // Touch every page, then stream: the pages are released chunk by chunk.
        let sum: u64 = model.weight_bytes().iter().step_by(4096).map(|&b| u64::from(b)).sum();
        std::hint::black_box(sum);
        let before = resident_kb(addr);
        assert!(before * 1024 >= file.len() as u64 * 9 / 10, "{before} kB resident of {} bytes", file.len());
        model.stream_weights(chunk, |_, _| Ok(())).unwrap();
        let after = resident_kb(addr);
        assert!(after * 1024 <= chunk as u64, "{after} kB still resident after streaming");
    }
    // Released pages read back the same bytes.
    assert_eq!(model.weight_bytes(), &file[..]);
    // An error from the consumer stops the stream and is returned.
    let mut calls = 0;
    let r = model.stream_weights(chunk, |_, _| {
        calls += 1;
        Err(qwen_aot_runtime::error::RuntimeError::InvalidCall("stop".into()))
    });
    assert!(r.is_err() && calls == 1);
}
