//! Compiles every `kernels/*.cu` into one CUDA fatbin and embeds it in the root crate.
//!
//! - nvcc is located through `cc` (the `NVCC` variable, with cc's target prefixes), then the
//!   project-local toolchain that `scripts/setup-cuda.sh` installs under `.toolchain/cuda`, then
//!   `nvcc` on `PATH` (cc's default).
//! - All `kernels/*.cu` files are compiled as one translation unit (a generated `all_kernels.cu` that
//!   includes them), so the runtime loads a single module with `cuModuleLoadData`. The image holds
//!   SASS for sm_90 (H100/H200) and PTX for compute_90, which the driver JIT-compiles on newer
//!   GPUs.
//! - Flags: `-O3 -lineinfo` and *no* `--use_fast_math`: every kernel is bandwidth- or
//!   latency-bound, so IEEE `expf`/`sincosf`/`sqrtf`/division cost nothing measurable, while the
//!   fast variants would add error to softmax and would break RoPE at large angles (`__sinf` is
//!   only accurate near zero). `-Xptxas -v` is always on: its report (registers, shared memory,
//!   spills) is written to `OUT_DIR/ptxas.txt`; spills become `cargo:warning`s, and
//!   `QWEN_AOT_PTXAS_VERBOSE=1` prints the whole report. The kernel entry-point table is read from
//!   that same report, so it always matches the image.
//! - Without nvcc (or with `QWEN_AOT_NO_CUDA=1`) the build still succeeds: the image is empty,
//!   `KERNELS_AVAILABLE` is false and a `cargo:warning` says so. A kernel that fails to compile
//!   fails the build.
//!
//! - The constants the kernels share with the runtime (GEMV_WARPS, the attention and sampler
//!   limits, the weight format codes) are defined once, in `runtime/src/kernel_constants.rs`:
//!   this script includes that file and writes `OUT_DIR/generated_constants.cuh` from it, which
//!   `kernels/common.cuh` includes (nvcc gets `-I OUT_DIR`).
//!
//! - `kernels/test/*.cu` (kernels only the verification harness launches, e.g. the sampler's
//!   expf probe) are compiled the same way into a second, small image, so the production image
//!   holds only the kernels the runtime launches; `qwen-aot check` loads both.
//!
//! Generated `OUT_DIR/kernels.rs` (included by `src/kernels.rs`): `IMAGE`, `KERNELS_AVAILABLE`,
//! `KERNEL_NAMES`, `TEST_IMAGE`, `TEST_KERNEL_NAMES`, `NVCC_VERSION`, `TARGET_ARCH`. The images
//! are `OUT_DIR/kernels.fatbin` and `OUT_DIR/test_kernels.fatbin`; ptxas' reports
//! `OUT_DIR/ptxas.txt` and `OUT_DIR/ptxas-test.txt`.
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The one table of constants shared by the kernels and the runtime (see the file's header).
mod kernel_constants {
    include!("runtime/src/kernel_constants.rs");
}

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let kernel_dir = manifest_dir.join("kernels");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=scripts/setup-cuda.sh");
    println!("cargo:rerun-if-changed=runtime/src/kernel_constants.rs");
    for var in ["NVCC", "QWEN_AOT_NO_CUDA", "QWEN_AOT_PTXAS_VERBOSE", "NVCC_PREPEND_FLAGS", "NVCC_APPEND_FLAGS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if let Ok(target) = env::var("TARGET") {
        println!("cargo:rerun-if-env-changed=NVCC_{target}");
        println!("cargo:rerun-if-env-changed=NVCC_{}", target.replace('-', "_"));
    }

    let sources = cu_files(&kernel_dir);
    let test_sources = cu_files(&kernel_dir.join("test"));
    for s in sources.iter().chain(&test_sources) {
        println!("cargo:rerun-if-changed={}", s.display());
    }
    let toolchain_stamp = manifest_dir.join(".toolchain/cuda/.installed");
    if toolchain_stamp.exists() {
        // Only watched once it exists: a missing rerun-if-changed path would rerun this script
        // (and rebuild the crate) on every build. After installing the toolchain for the first
        // time, `touch build.rs` (or `cargo clean -p qwen-aot`).
        println!("cargo:rerun-if-changed={}", toolchain_stamp.display());
    }

    fs::write(out_dir.join("generated_constants.cuh"), kernel_constants::cuda_header())
        .expect("write generated_constants.cuh");

    let disabled = |why: String| {
        println!("cargo:warning=CUDA backend disabled: {why}. Run scripts/setup-cuda.sh (then `touch build.rs`) or set NVCC to enable it.");
        write_generated(&out_dir, None, "", "");
    };

    if env::var("QWEN_AOT_NO_CUDA").is_ok_and(|v| v == "1") {
        return disabled("QWEN_AOT_NO_CUDA=1".into());
    }
    if sources.is_empty() {
        return disabled(format!("no .cu files in {}", kernel_dir.display()));
    }
    let Some(nvcc) = find_nvcc(&manifest_dir) else {
        return disabled("nvcc not found (NVCC, .toolchain/cuda, PATH)".into());
    };
    let version = nvcc_version(&nvcc).unwrap_or_default();

    let arch = kernel_constants::CUDA_ARCH.to_string();
    let dirs = (kernel_dir.as_path(), out_dir.as_path());
    let image = compile_image(&nvcc, &arch, &sources, dirs, "kernels", "ptxas.txt");
    if image.names.is_empty() {
        panic!("nvcc succeeded but reported no kernel entry points in kernels/*.cu");
    }
    let test_image = compile_image(&nvcc, &arch, &test_sources, dirs, "test_kernels", "ptxas-test.txt");
    write_generated(&out_dir, Some((&image, &test_image)), &version, &arch);
}

/// The `.cu` files directly in `dir`, sorted (none when it does not exist).
fn cu_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "cu")).collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// One compiled kernel image: the fatbin and its entry points (sorted).
struct Image {
    fatbin: PathBuf,
    names: Vec<String>,
}

/// Compiles `sources` as one translation unit (`OUT_DIR/all_<stem>.cu`, which includes them) into
/// `OUT_DIR/<stem>.fatbin`, with ptxas' report in `OUT_DIR/<report>`; spills are `cargo:warning`s.
fn compile_image(
    nvcc: &Path,
    arch: &str,
    sources: &[PathBuf],
    dirs: (&Path, &Path),
    stem: &str,
    report: &str,
) -> Image {
    let (kernel_dir, out_dir) = dirs;
    let mut unity = format!("// Generated by build.rs: the {stem} image, one module.\n");
    for s in sources {
        writeln!(unity, "#include \"{}\"", s.display()).unwrap();
    }
    let unity_path = out_dir.join(format!("all_{stem}.cu"));
    fs::write(&unity_path, unity).expect("write the unity source");
    let fatbin = out_dir.join(format!("{stem}.fatbin"));

    // The one architecture (kernel_constants::CUDA_ARCH): the runtime refuses older GPUs by it.
    let mut cmd = Command::new(nvcc);
    cmd.arg("-fatbin")
        .arg("-std=c++17")
        .arg("-O3")
        .arg("-lineinfo")
        .arg(format!("-gencode=arch=compute_{arch},code=sm_{arch}"))
        .arg(format!("-gencode=arch=compute_{arch},code=compute_{arch}"))
        .arg("-Xptxas=-v")
        .arg("-Werror=all-warnings")
        .arg("-I")
        .arg(kernel_dir)
        .arg("-I")
        .arg(out_dir)
        .arg("-o")
        .arg(&fatbin)
        .arg(&unity_path);
    let output = cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
    let report_name = report;
    let report = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    fs::write(out_dir.join(report_name), &report).expect("write the ptxas report");
    if !output.status.success() {
        panic!("nvcc failed ({}) compiling the {stem} image:\n{report}\ncommand: {cmd:?}", output.status);
    }

    let verbose = env::var("QWEN_AOT_PTXAS_VERBOSE").is_ok_and(|v| v == "1");
    let mut current = String::new();
    for line in report.lines() {
        if let Some(name) = line.split("Function properties for ").nth(1) {
            current = name.trim().to_string();
        }
        let spills = line.contains("spill stores") && !line.contains(" 0 bytes spill stores");
        if verbose || spills {
            println!("cargo:warning=ptxas {current}: {}", line.trim());
        }
    }
    Image { names: entry_points(&report), fatbin }
}

/// nvcc through cc: `NVCC` (cc honours target-prefixed variants), then the project toolchain,
/// then cc's default (`nvcc` on PATH). A candidate counts only if `nvcc --version` runs.
fn find_nvcc(manifest_dir: &Path) -> Option<PathBuf> {
    let from_cc = || -> Option<PathBuf> {
        let tool = cc::Build::new().cuda(true).cargo_metadata(false).cargo_warnings(false).try_get_compiler().ok()?;
        Some(tool.path().to_path_buf())
    };
    let nvcc_env_set =
        env::vars().any(|(k, _)| k == "NVCC" || (k.starts_with("NVCC_") && !k.contains("FLAGS") && k != "NVCC_CCBIN"));
    let mut candidates = Vec::new();
    if nvcc_env_set {
        candidates.extend(from_cc());
    }
    candidates.extend(toolchain_nvcc(manifest_dir));
    if !nvcc_env_set {
        candidates.extend(from_cc());
    }
    candidates.into_iter().find(|p| nvcc_version(p).is_some())
}

/// `.toolchain/cuda/nvidia/cu*/bin/nvcc` (pip --target) or
/// `.toolchain/cuda/lib/python3.*/site-packages/nvidia/cu*/bin/nvcc` (a venv).
fn toolchain_nvcc(manifest_dir: &Path) -> Vec<PathBuf> {
    let prefix = manifest_dir.join(".toolchain/cuda");
    let mut roots = vec![prefix.join("nvidia")];
    if let Ok(rd) = fs::read_dir(prefix.join("lib")) {
        for e in rd.flatten() {
            roots.push(e.path().join("site-packages/nvidia"));
        }
    }
    let mut found = Vec::new();
    for root in roots {
        if let Ok(rd) = fs::read_dir(&root) {
            let mut dirs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            dirs.sort();
            for d in dirs.into_iter().rev() {
                let nvcc = d.join("bin/nvcc");
                if nvcc.is_file() {
                    found.push(nvcc);
                }
            }
        }
    }
    found
}

fn nvcc_version(nvcc: &Path) -> Option<String> {
    let out = Command::new(nvcc).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().last().unwrap_or("").trim().to_string())
}

/// Kernel entry points, in the order ptxas compiled them, from `-Xptxas -v`:
/// `ptxas info    : Compiling entry function 'NAME' for 'sm_90'`.
fn entry_points(report: &str) -> Vec<String> {
    let mut names: Vec<String> = report
        .lines()
        .filter_map(|l| l.split("Compiling entry function '").nth(1))
        .filter_map(|rest| rest.split('\'').next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn write_generated(out_dir: &Path, images: Option<(&Image, &Image)>, version: &str, arch: &str) {
    let mut s = String::from("// Generated by build.rs -- do not edit.\n");
    if images.is_some() {
        writeln!(s, "#[repr(C, align(16))]\nstruct Aligned<T: ?Sized>(T);").unwrap();
    }
    let embed = |s: &mut String, stat: &str, image: Option<&Image>, doc: &str| {
        match image {
            Some(img) => {
                let len = fs::metadata(&img.fatbin).expect("fatbin metadata").len();
                writeln!(
                    s,
                    "static {stat}_ALIGNED: &Aligned<[u8; {len}]> = &Aligned(*include_bytes!({:?}));",
                    img.fatbin.display().to_string()
                )
                .unwrap();
                writeln!(s, "/// {doc} (sm_{arch} SASS + compute_{arch} PTX), 16-byte aligned.").unwrap();
                writeln!(s, "pub static {stat}: &[u8] = &{stat}_ALIGNED.0;").unwrap();
            }
            None => {
                writeln!(s, "/// {doc}: empty, build.rs found no nvcc (the CUDA backend is disabled).").unwrap();
                writeln!(s, "pub static {stat}: &[u8] = &[];").unwrap();
            }
        }
        let names: &[String] = image.map_or(&[], |i| &i.names);
        writeln!(s, "/// Every `extern \"C\"` kernel entry point in [`{stat}`], sorted.").unwrap();
        let names_const = stat.replace("IMAGE", "KERNEL_NAMES");
        writeln!(s, "pub const {names_const}: &[&str] = &{names:?};").unwrap();
    };
    embed(&mut s, "IMAGE", images.map(|i| i.0), "CUDA fatbin of every kernel the runtime launches (kernels/*.cu)");
    embed(
        &mut s,
        "TEST_IMAGE",
        images.map(|i| i.1),
        "CUDA fatbin of the test-only kernels the verification harness launches (kernels/test/*.cu)",
    );
    writeln!(s, "/// True when build.rs found nvcc and compiled the kernels.").unwrap();
    writeln!(s, "pub const KERNELS_AVAILABLE: bool = {};", images.is_some()).unwrap();
    writeln!(s, "/// `nvcc --version` (last line) of the compiler that built [`IMAGE`]; empty without one.").unwrap();
    writeln!(s, "pub const NVCC_VERSION: &str = {version:?};").unwrap();
    writeln!(s, "/// SM architecture of the SASS in [`IMAGE`] (e.g. \"90\"); empty without one.").unwrap();
    writeln!(s, "pub const TARGET_ARCH: &str = {arch:?};").unwrap();
    fs::write(out_dir.join("kernels.rs"), s).expect("write kernels.rs");
}
