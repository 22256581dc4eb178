// The constants the CUDA kernels and the runtime must agree on, defined once.
//
// This file is read twice:
// - the runtime compiles it as the module `qwen_aot_runtime::kernel_constants` (its launchers and
//   sampler use the values below);
// - the root build.rs `include!`s it and writes `cuda_header()` to
//   `$OUT_DIR/generated_constants.cuh`, which `kernels/common.cuh` includes (nvcc gets `-I
//   $OUT_DIR`), so no kernel spells these values itself.
// So it holds only plain items that compile in both places: no `use` at the top level, no inner
// attributes or `//!` docs, nothing from the runtime's other modules.
// The tests at the end (compiled only into the runtime's test build) check that no kernel file
// defines one of these names by hand, that every kernel-side name is used, and that the format
// codes and limits equal the runtime's own (`WeightFormat`, `MAX_WEIGHT_PARTS`).

/// The GPU architecture the kernels are compiled for: build.rs embeds sm_90 SASS and compute_90
/// PTX, so they run on compute capability 9.0 (Hopper) natively and on newer GPUs through the
/// driver's PTX JIT; the runtime refuses older GPUs at open (`cuda::device`). Not in the header.
pub const CUDA_ARCH: u32 = 90;

/// Warps per block of every GEMV kernel (f16 and quantized): `GEMV_WARPS` in the kernels.
pub const GEMV_WARPS: usize = 8;

/// Most row-range parts of one weight (`QParts` holds this many): `QA_MAX_PARTS`.
pub const QA_MAX_PARTS: usize = 3;

/// Warps per attention block; warp w serves query head w of a KV group, so this is also the
/// largest query-head group the attention kernel supports: `ATT_WARPS` (`MAX_G`).
pub const ATT_WARPS: usize = 8;

/// Largest split count the attention kernel's merge supports: `ATT_MAX_SPLITS`.
pub const ATT_MAX_SPLITS: usize = 128;

/// Query rows per block of the prefill attention kernels (`attention_rows_d{64,128}`), which share
/// each staged K/V tile among that many rows: `ATT_PREFILL_ROWS`. Two, longest rows first
/// (sixteenth session, random weights, 512-token prefill against one row per block: 0.5B ×1.111,
/// 1.5B ×1.051; four rows ×1.099 / ×1.016, and ×0.954 / ×1.021 before the reversed order).
pub const ATT_PREFILL_ROWS: usize = 2;

/// A split's chunk keeps at least `min_chunk` keys while the context is at most this many times
/// `min_chunk`, and 64 beyond (`attn_chunk` in common.cuh, `launch::attn_chunk`). 1: a context
/// past min_chunk keys is cut into one-tile (64-key) splits at once. With 8 (before the
/// thirty-sixth session) contexts of 129-1,024 keys took 2-8 splits of two tiles, the second
/// tile's work on every block's path: random 0.5B weights, H100, decode at depths 128-512
/// ≈ 1,630-1,665 tok/s against ≈ 1,660-1,690 with 1 (measured in a build that also carried a
/// merge change since reverted; experiments/LOG.md).
pub const ATTN_LONG_FACTOR: usize = 1;

/// The integer range of x's digits in the int8 tensor-core GEMVs (kernels/int8_mma.cuh): each
/// element becomes v = rint(x * X_DIGIT_RANGE / amax), written as three balanced base-256 digits.
/// At most 0x800000 - 0x408080 - 1, so that v + 0x408080 stays a 23-bit mantissa.
pub const X_DIGIT_RANGE: usize = 4_161_280;

/// Rows of W per tile of the tensor-core quantized GEMVs (kernels/qmma.cu): `QMMA_TILE_ROWS`.
pub const QMMA_TILE_ROWS: usize = 8;

/// Groups of 32 elements a warp of those GEMVs takes per step (two MMAs of two groups):
/// `QMMA_STEP_GROUPS`.
pub const QMMA_STEP_GROUPS: usize = 4;

/// Steps of weights a warp of those GEMVs has in flight (cp.async ring stages): `QMMA_STAGES`.
pub const QMMA_STAGES: usize = 4;

/// 4-byte words per lane and ring stage (a step's codes and scales in the widest format, Q6_K:
/// 15): `QMMA_RING_WORDS`.
pub const QMMA_RING_WORDS: usize = 16;

/// Shared memory per group of 32 x elements in those GEMVs: three int8 digit planes (96 bytes)
/// and the group's scale and sums (16 bytes): `QMMA_GROUP_SMEM`.
pub const QMMA_GROUP_SMEM: usize = 112;

/// Warps per block of the wide store entry points of those GEMVs (`gemv_m_store_wide_*`: few
/// tiles with long rows, such as down_proj, take this many warps per tile): `QMMA_WIDE_WARPS`.
/// 20, not 16: the 0.5B down_proj's k = 4,864 is 19 super-blocks (152 groups), so 16 warps took
/// two MMA steps a tile (the second on 3 warps) and two passes of x digit arithmetic (128 groups
/// a pass); 20 take one of each (any count works: the kernels need no power of two here).
pub const QMMA_WIDE_WARPS: usize = 20;

/// Ring stages of the wide store entry points (`QMMA_WIDE_STAGES`): 2, so that a wide block's
/// shared memory (20 warps: 80 KB of ring and 17 KB of x digits at k = 4,864) leaves room for a
/// block of the next kernel (the qkv GEMV, 69 KB) to start under PDL before it ends; with
/// QMMA_STAGES it took 181 KB, and two blocks did not fit sm_90's 228 KB. One step in flight
/// before the wait is a whole tile's share of a warp for the k-quant pairs (a super-block a step)
/// while k <= 20 x 256 = 5,120; the other pairs step four groups, so half of it at k = 4,864.
pub const QMMA_WIDE_STAGES: usize = 2;

/// Registers a thread of the wide store entry points may use (`QMMA_WIDE_MAX_REGS`, their
/// `__maxnreg__`): 72, so that 20 warps (46,080) and an 8-warp block of the next kernel at 72
/// (18,432) share an SM's 65,536. Q6_K's entry (the 0.5B down_proj) took 84 uncapped and spills
/// nothing at 72; the mixed k-quant pairs' wide entries (91 uncapped) spill 4-12 bytes.
pub const QMMA_WIDE_MAX_REGS: usize = 72;

/// Groups of 32 elements one block of the prefill's dequantisation (kernels/qlookup.cu) stages in
/// shared memory and converts to f16: `DQ_CHUNK`.
pub const DQ_CHUNK: usize = 256;

/// Threads per block of that dequantisation: `DQ_THREADS`.
pub const DQ_THREADS: usize = 256;

/// Threads per block of the argmax kernel.
pub const ARGMAX_THREADS: usize = 256;

/// Threads per block of the row scores kernel (kernels/row_scores.cu; one block per row).
pub const ROW_SCORE_THREADS: usize = 512;

/// Most alternatives the row scores kernel lists per row (`scores::MAX_TOP`; OpenAI's limit for
/// `top_logprobs`).
pub const ROW_SCORE_MAX_TOP: usize = 20;

/// Most slices one row's scores are split into (a decode row spread over many SMs; the last
/// slice's block merges them): `ROW_SCORE_MAX_SLICES`. Their top lists together must fit the
/// kernel's shared candidates (RS_CAP, 1,024 = 48 x 20 + 64).
pub const ROW_SCORE_MAX_SLICES: usize = 48;

/// u32 words of one slice's partial result: its maximum, first non-finite index, sum of
/// exponentials (f64) and top list of ROW_SCORE_MAX_TOP (logit, id) pairs: `ROW_SCORE_PART_WORDS`.
pub const ROW_SCORE_PART_WORDS: usize = 4 + 2 * ROW_SCORE_MAX_TOP;

/// Threads per block of both sampling kernels (sample.cu's `THREADS`).
pub const SAMPLE_THREADS: usize = 256;

/// Largest vocabulary slice one sampling block owns (sample.cu's `MAX_CHUNK`).
pub const SAMPLE_MAX_CHUNK: usize = 4096;

/// Most candidates the sampler keeps after top-k, on the CPU and the GPU (`sampler::MAX_CANDIDATES`,
/// sample.cu's `MAX_CAND`).
pub const SAMPLE_MAX_CANDIDATES: usize = 256;

/// sample_prep's histogram is over the top `32 - SAMPLE_HIST_SHIFT` bits of the order key, i.e.
/// `1 << (32 - SAMPLE_HIST_SHIFT)` bins (sample.cu's `HIST_SHIFT`).
pub const SAMPLE_HIST_SHIFT: usize = 20;

/// Every integer constant above, as `constexpr int NAME = value;` in the generated header.
pub const CUDA_INTS: &[(&str, usize)] = &[
    ("GEMV_WARPS", GEMV_WARPS),
    ("QA_MAX_PARTS", QA_MAX_PARTS),
    ("ATT_WARPS", ATT_WARPS),
    ("ATT_MAX_SPLITS", ATT_MAX_SPLITS),
    ("ATT_PREFILL_ROWS", ATT_PREFILL_ROWS),
    ("ATTN_LONG_FACTOR", ATTN_LONG_FACTOR),
    ("X_DIGIT_RANGE", X_DIGIT_RANGE),
    ("QMMA_TILE_ROWS", QMMA_TILE_ROWS),
    ("QMMA_GROUP_SMEM", QMMA_GROUP_SMEM),
    ("QMMA_WIDE_WARPS", QMMA_WIDE_WARPS),
    ("QMMA_WIDE_STAGES", QMMA_WIDE_STAGES),
    ("QMMA_WIDE_MAX_REGS", QMMA_WIDE_MAX_REGS),
    ("QMMA_STEP_GROUPS", QMMA_STEP_GROUPS),
    ("QMMA_STAGES", QMMA_STAGES),
    ("QMMA_RING_WORDS", QMMA_RING_WORDS),
    ("DQ_CHUNK", DQ_CHUNK),
    ("DQ_THREADS", DQ_THREADS),
    ("ARGMAX_THREADS", ARGMAX_THREADS),
    ("ROW_SCORE_THREADS", ROW_SCORE_THREADS),
    ("ROW_SCORE_MAX_TOP", ROW_SCORE_MAX_TOP),
    ("ROW_SCORE_MAX_SLICES", ROW_SCORE_MAX_SLICES),
    ("ROW_SCORE_PART_WORDS", ROW_SCORE_PART_WORDS),
    ("SAMPLE_THREADS", SAMPLE_THREADS),
    ("SAMPLE_MAX_CHUNK", SAMPLE_MAX_CHUNK),
    ("SAMPLE_MAX_CANDIDATES", SAMPLE_MAX_CANDIDATES),
    ("SAMPLE_HIST_SHIFT", SAMPLE_HIST_SHIFT),
];

/// Weight format codes, in code order: `WeightFormat`'s names and discriminants (the plan's
/// `plan/src/quant`), written as `enum QFmt { QF_<name> = code, ... }` for the kernels.
pub const FORMAT_CODES: &[(&str, i32)] = &[
    ("F32", 0),
    ("F16", 1),
    ("BF16", 2),
    ("Q4_0", 3),
    ("Q4_1", 4),
    ("Q5_0", 5),
    ("Q5_1", 6),
    ("Q8_0", 7),
    ("Q2_K", 8),
    ("Q3_K", 9),
    ("Q4_K", 10),
    ("Q5_K", 11),
    ("Q6_K", 12),
];

/// The text of `generated_constants.cuh`.
pub fn cuda_header() -> String {
    let mut s =
        String::from("// Generated by build.rs from runtime/src/kernel_constants.rs -- do not edit.\n#pragma once\n\n");
    for (name, value) in CUDA_INTS {
        s += &format!("constexpr int {name} = {value};\n");
    }
    s += "\n// Weight format codes: WeightFormat's discriminants.\nenum QFmt {\n";
    for (name, code) in FORMAT_CODES {
        s += &format!("    QF_{name} = {code},\n");
    }
    s += "};\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `kernels/*.cu` and `*.cuh` file and the test image's `kernels/test/*.cu`, with its
    /// name (`test/` prefixed for the latter).
    fn kernel_sources() -> Vec<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels");
        let mut files: Vec<(String, String)> = [("", dir.clone()), ("test/", dir.join("test"))]
            .iter()
            .flat_map(|(prefix, d)| {
                std::fs::read_dir(d).expect("kernels/").map(move |e| (prefix.to_string(), e.unwrap().path()))
            })
            .filter(|(_, p)| p.extension().is_some_and(|x| x == "cu" || x == "cuh"))
            .map(|(prefix, p)| {
                (format!("{prefix}{}", p.file_name().unwrap().to_string_lossy()), std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        files.sort();
        assert!(files.len() >= 10, "found only {} kernel files in {}", files.len(), dir.display());
        files
    }

    #[test]
    fn header_lists_every_constant_and_format() {
        let h = cuda_header();
        assert!(h.starts_with("// Generated by build.rs"));
        assert!(h.contains("#pragma once"));
        assert!(h.contains("constexpr int GEMV_WARPS = 8;\n"));
        assert!(h.contains("constexpr int QA_MAX_PARTS = 3;\n"));
        assert!(h.contains("constexpr int SAMPLE_HIST_SHIFT = 20;\n"));
        assert!(h.contains("enum QFmt {\n    QF_F32 = 0,\n    QF_F16 = 1,\n"));
        assert!(h.contains("    QF_Q6_K = 12,\n};\n"));
        assert_eq!(h.matches("constexpr int ").count(), CUDA_INTS.len());
    }

    /// A value written by hand in a kernel next to the generated one could drift from it: no
    /// kernel file may define a generated name, and each name must be used by some kernel (an
    /// unused one suggests a literal took its place).
    #[test]
    fn kernels_use_the_generated_constants_and_define_none() {
        let sources = kernel_sources();
        let names: Vec<String> = CUDA_INTS
            .iter()
            .map(|(n, _)| n.to_string())
            .chain(FORMAT_CODES.iter().map(|(n, _)| format!("QF_{n}")))
            .collect();
        for name in &names {
            for (file, text) in &sources {
                for bad in [format!("constexpr int {name} ="), format!("#define {name} "), format!("{name} = ")] {
                    assert!(!text.contains(&bad), "kernels/{file} defines `{name}` by hand (`{bad}`): it is generated from runtime/src/kernel_constants.rs");
                }
            }
            assert!(sources.iter().any(|(_, t)| t.contains(name.as_str())), "no kernel uses `{name}`");
        }
        let common = &sources.iter().find(|(f, _)| f == "common.cuh").unwrap().1;
        assert!(common.contains("#include \"generated_constants.cuh\""));
    }

    /// The format codes are `WeightFormat`'s discriminants and names, in code order.
    #[test]
    fn format_codes_are_weight_formats() {
        let ours: Vec<(&str, i32)> = crate::quant::ALL_FORMATS.iter().map(|f| (f.name(), f.code())).collect();
        assert_eq!(ours, FORMAT_CODES.to_vec());
    }

    #[test]
    fn limits_equal_the_runtime_ones() {
        assert_eq!(crate::compiled::MAX_WEIGHT_PARTS, QA_MAX_PARTS);
        assert_eq!(crate::sampler::MAX_CANDIDATES, SAMPLE_MAX_CANDIDATES);
    }
}
