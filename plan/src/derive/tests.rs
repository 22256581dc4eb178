use super::*;
use crate::WeightPart;

fn matrix(name: &str, format: WeightFormat, rows: usize, k: usize, offset: u64) -> WeightInfo {
    let bytes = part_layout(format, rows, k).unwrap().bytes;
    WeightInfo {
        name: name.into(),
        shape: vec![rows, k],
        offset,
        bytes,
        parts: vec![WeightPart { rows, format, offset, bytes }],
    }
}

#[test]
fn reference_q5_0_codes_and_scale() {
    // max magnitude -8 (d = 0.5, id = 2): x * 2 + 16.5 truncated, capped at 31.
    let mut x = [0f32; GROUP];
    x[0] = -8.0; // 0.5 -> 0
    x[1] = 1.0; // 18.5 -> 18
    x[2] = 7.75; // 32.0 -> 31 (capped)
    x[3] = -0.3; // 15.9 -> 15
    let (d, q) = quantize_q5_0_ref(&x);
    assert_eq!(d, 0.5);
    assert_eq!(&q[..4], &[0, 18, 31, 15]);
    assert!(q[4..].iter().all(|&c| c == 16), "zeros sit at the offset 16");
    // An all-zero group: d = 0 / -16 = -0.0 (as ggml stores it), every code 16.
    let (d, q) = quantize_q5_0_ref(&[0.0; GROUP]);
    assert_eq!(d.to_bits(), (-0.0f32).to_bits());
    assert!(q.iter().all(|&c| c == 16));
}

#[test]
fn recipe_writes_the_packed_q5_0_planes() {
    // One row of two groups. Q8_0 layout: qs plane at 0 (32 bytes per group), sc at 256.
    let base = matrix("output.weight", WeightFormat::Q8_0, 1, 64, 0);
    let mut bytes = vec![0u8; base.bytes as usize];
    bytes[0] = (-16i8) as u8; // group 0: codes -16, 0 .., 8 at element 17; d = 1
    bytes[17] = 8;
    bytes[256..258].copy_from_slice(&f16::from_f32(1.0).to_bits().to_le_bytes()); // group 1: d = 0
    let target = matrix("token_embd.weight", WeightFormat::Q5_0, 1, 64, 0);
    for threads in [1, 2, 5] {
        let out = apply_recipe(DeriveRecipe::RequantQ8_0ToQ5_0, &base, &bytes, &target, threads).unwrap();
        // Q5_0 layout: qs at 0 (16 per group), qh at 256 (4 per group), sc at 512 (2 per group).
        assert_eq!(out.len(), 768);
        // Group 0: x = [-16, 0 x 16, 8, 0 ..]: d = 1, codes 0, 16 .., 24 at element 17.
        let mut qs0 = [0u8; 16];
        qs0[1] = 0x80; // element 17: code 24, low nibble 8, in byte 1's high nibble
        assert_eq!(&out[0..16], &qs0);
        assert_eq!(&out[256..260], &[0xfe, 0xff, 0xff, 0xff], "bit 4 of every code but element 0's");
        assert_eq!(&out[512..514], &f16::from_f32(1.0).to_bits().to_le_bytes());
        // Group 1: all zeros: d = -0.0, every code 16 (qs nibbles 0, qh bits 1).
        assert_eq!(&out[16..32], &[0u8; 16]);
        assert_eq!(&out[260..264], &[0xff; 4]);
        assert_eq!(&out[514..516], &[0x00, 0x80]);
        assert!(out[32..256].iter().chain(&out[264..512]).chain(&out[516..]).all(|&b| b == 0), "padding");
    }
}

#[test]
fn recipe_refuses_other_formats_and_shapes() {
    let base = matrix("b", WeightFormat::Q8_0, 2, 64, 0);
    let bytes = vec![0u8; base.bytes as usize];
    let r = DeriveRecipe::RequantQ8_0ToQ5_0;
    let wrong_fmt = matrix("t", WeightFormat::Q4_0, 2, 64, 0);
    assert!(matches!(apply_recipe(r, &base, &bytes, &wrong_fmt, 1), Err(DeriveError::Format { .. })));
    let wrong_shape = matrix("t", WeightFormat::Q5_0, 3, 64, 0);
    assert!(matches!(apply_recipe(r, &base, &bytes, &wrong_shape, 1), Err(DeriveError::Shape { .. })));
    let target = matrix("t", WeightFormat::Q5_0, 2, 64, 0);
    assert_eq!(apply_recipe(r, &base, &bytes[1..], &target, 1), Err(DeriveError::Layout { what: "base" }));
}

#[test]
fn row_frames_cover_every_plane_of_the_target() {
    // Q5_0, 5 rows of 64 (2 groups per row): qs 32 bytes per row at 0, qh 8 at 256, sc 4 at 512.
    let g = FrameGeometry::new(WeightFormat::Q5_0, 5, 64, 2).unwrap();
    assert_eq!((g.row_bytes(), g.frames()), (44, 3));
    assert_eq!((g.frame_rows_of(2), g.frame_bytes(2), g.frame_of(4)), (4..5, 44, 2));
    assert_eq!(g.plane_ranges(1), [64..128, 272..288, 520..528, 768..768]);
    // Every target byte lies in exactly one frame's slices, except the padding between planes.
    let mut target: Vec<u8> = (0..part_layout(WeightFormat::Q5_0, 5, 64).unwrap().bytes).map(|i| i as u8).collect();
    let copy = target.clone();
    let mut seen = vec![0u32; target.len()];
    for (i, planes) in g.split_target(&mut target).into_iter().enumerate() {
        let ranges = g.plane_ranges(i);
        for (piece, r) in planes.iter().zip(&ranges) {
            assert_eq!(&piece[..], &copy[r.clone()], "frame {i}");
            r.clone().for_each(|b| seen[b] += 1);
        }
        let mut buf = vec![0u8; g.frame_bytes(i)];
        let lens: Vec<usize> = g.split_frame(i, &mut buf).iter().map(|p| p.len()).collect();
        assert_eq!(lens, ranges.iter().map(|r| r.len()).collect::<Vec<_>>());
    }
    let covered = |b: usize| b < 160 || (256..296).contains(&b) || (512..532).contains(&b);
    assert!((0..seen.len()).all(|b| seen[b] == u32::from(covered(b))));
    // The padding: every byte outside the planes, and only those.
    let mut packed: Vec<u8> = (0..copy.len()).map(|b| u8::from(covered(b))).collect();
    assert!(g.padding_is_zero(&packed));
    for b in [160, 255, 300, 532, copy.len() - 1] {
        packed[b] = 1;
        assert!(!g.padding_is_zero(&packed), "byte {b}");
        packed[b] = 0;
    }
    // The compiler's choice: whole rows of about FRAME_TARGET_BYTES; never 0, never over the bound.
    let emb = FrameGeometry::for_target(WeightFormat::Q5_0, 151_936, 896).unwrap();
    assert_eq!((emb.row_bytes(), emb.frame_rows, emb.frames()), (616, 212, 717));
    assert_eq!(FrameGeometry::for_target(WeightFormat::Q5_0, 3, 64).unwrap().frame_rows, 3);
    assert!(FrameGeometry::new(WeightFormat::Q5_0, 5, 64, 0).is_none());
    assert!(FrameGeometry::new(WeightFormat::Q8_0, 1 << 20, 4096, 1 << 20).is_none(), "over MAX_FRAME_BYTES");
}

#[test]
fn a_frame_of_rows_is_the_same_bytes_as_the_whole_target() {
    let (rows, k) = (7, 96);
    let base = matrix("output.weight", WeightFormat::Q8_0, rows, k, 0);
    let mut state = 5u64;
    let mut bytes: Vec<u8> = (0..base.bytes).map(|_| crate::rng::splitmix64(&mut state) as u8).collect();
    // Finite scales (f16 bits of magnitude below 2.0) so that every group quantises normally.
    let sc = part_layout(WeightFormat::Q8_0, rows, k).unwrap().sc as usize;
    for g in 0..rows * 3 {
        bytes[sc + 2 * g + 1] &= 0x3b;
    }
    let target = matrix("token_embd.weight", WeightFormat::Q5_0, rows, k, 0);
    let r = DeriveRecipe::RequantQ8_0ToQ5_0;
    // Two threads: chunks of 4 and 3 rows, not the frames' 3, 3, 1 (and one thread: all 7).
    let whole = apply_recipe(r, &base, &bytes, &target, 2).unwrap();
    assert_eq!(whole, apply_recipe(r, &base, &bytes, &target, 1).unwrap());
    let view = recipe_base(r, &base, &bytes, &target).unwrap();
    let g = FrameGeometry::new(WeightFormat::Q5_0, rows, k, 3).unwrap();
    for i in 0..g.frames() {
        let mut frame = vec![0u8; g.frame_bytes(i)];
        recipe_rows(r, &view, g.frame_rows_of(i), &mut g.split_frame(i, &mut frame));
        let want: Vec<u8> = g.plane_ranges(i).into_iter().flat_map(|r| whole[r].to_vec()).collect();
        assert_eq!(frame, want, "frame {i}");
    }
}

/// ggml's `quantize_row_q5_0_ref` for one block, transcribed literally (branchy search for the
/// largest magnitude, saturating casts): the specification the vectorised quantizer must equal.
fn ggml_q5_0_literal(x: &[f32; GROUP]) -> (f32, [u8; GROUP]) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0u8; GROUP];
    for (c, &v) in q.iter_mut().zip(x) {
        *c = ((v * id + 16.5) as i8 as u8).min(31);
    }
    (d, q)
}

#[test]
fn vectorised_quantizer_matches_ggml_literally() {
    // Dequantised Q8_0 groups as the recipe sees them (codes times an f16 scale of either sign,
    // zero included; every third group narrow, so ties at the largest magnitude, +m against -m,
    // are common); then groups no Q8_0 block makes: a single tiny element, the f16 extremes.
    let mut state = 0x5eed_u64;
    let mut next = || crate::rng::splitmix64(&mut state);
    for i in 0..20_000 {
        let sign = if next() % 2 == 0 { 0 } else { 0x8000 };
        let d8 = f16::from_bits((next() % 0x7c00) as u16 | sign).to_f32();
        let mut bq = [0u8; GROUP];
        for b in bq.iter_mut() {
            let q = (next() % 256) as u8 as i8;
            *b = (if i % 3 == 0 { q % 3 } else { q }) as u8;
        }
        let x = bq.map(|b| f32::from(b as i8) * d8);
        let literal = ggml_q5_0_literal(&x);
        let (d, q) = quantize_q5_0_ref(&x);
        assert_eq!((d.to_bits(), q), (literal.0.to_bits(), literal.1), "{bq:?} * {d8}");
    }
    let mut single = [0f32; GROUP];
    single[31] = -1e-30;
    for x in [[0.0; GROUP], single, [65504.0; GROUP], [-6e-8; GROUP]] {
        let (d, q) = quantize_q5_0_ref(&x);
        let (dl, ql) = ggml_q5_0_literal(&x);
        assert_eq!((d.to_bits(), q), (dl.to_bits(), ql), "{x:?}");
    }
}
