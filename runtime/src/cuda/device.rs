//! Context, stream, kernel module and device memory.
use std::ffi::{c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{sys, CudaContext, CudaSlice, CudaStream, DevicePtr};

use super::CudaCtx;
use crate::error::RuntimeError;
use crate::phases;

super::kernel_table::kernel_table! {
    /// Every kernel entry point the runtime launches (the `extern "C"` names in kernels/*.cu): the
    /// production image holds these and nothing else (test-only kernels: `TestKernel`).
    pub enum Kernel;
    Embed => "embed_f16",
    RmsNorm => "rms_norm_f32",
    AddRmsNorm => "add_rms_norm_f32",
    Gemv => "gemv_f16",
    GemvRows => "gemv_f16_rows",
    GemvWide => "gemv_f16_wide",
    GemvSwiGlu => "gemv_f16_swiglu",
    GemvSwiGluRows => "gemv_f16_swiglu_rows",
    GemvRope => "gemv_f16_rope",
    GemvQAny => "gemv_qany",
    GemvQAnySwiGlu => "gemv_qany_swiglu",
    GemvQAnyRope => "gemv_qany_rope",
    // kernels/qgemv.cu, one per epilogue and format pair (launch::QGEMV_KERNELS).
    GemvQStoreF32 => "gemv_q_store_f32",
    GemvQSwiGluF32 => "gemv_q_swiglu_f32",
    GemvQRopeF32 => "gemv_q_rope_f32",
    GemvQStoreF16 => "gemv_q_store_f16",
    GemvQSwiGluF16 => "gemv_q_swiglu_f16",
    GemvQRopeF16 => "gemv_q_rope_f16",
    GemvQStoreBf16 => "gemv_q_store_bf16",
    GemvQSwiGluBf16 => "gemv_q_swiglu_bf16",
    GemvQRopeBf16 => "gemv_q_rope_bf16",
    GemvQStoreQ40 => "gemv_q_store_q4_0",
    GemvQSwiGluQ40 => "gemv_q_swiglu_q4_0",
    GemvQRopeQ40 => "gemv_q_rope_q4_0",
    GemvQStoreQ41 => "gemv_q_store_q4_1",
    GemvQSwiGluQ41 => "gemv_q_swiglu_q4_1",
    GemvQRopeQ41 => "gemv_q_rope_q4_1",
    GemvQStoreQ50 => "gemv_q_store_q5_0",
    GemvQSwiGluQ50 => "gemv_q_swiglu_q5_0",
    GemvQRopeQ50 => "gemv_q_rope_q5_0",
    GemvQStoreQ51 => "gemv_q_store_q5_1",
    GemvQSwiGluQ51 => "gemv_q_swiglu_q5_1",
    GemvQRopeQ51 => "gemv_q_rope_q5_1",
    GemvQStoreQ80 => "gemv_q_store_q8_0",
    GemvQSwiGluQ80 => "gemv_q_swiglu_q8_0",
    GemvQRopeQ80 => "gemv_q_rope_q8_0",
    GemvQStoreQ2K => "gemv_q_store_q2_k",
    GemvQSwiGluQ2K => "gemv_q_swiglu_q2_k",
    GemvQRopeQ2K => "gemv_q_rope_q2_k",
    GemvQStoreQ3K => "gemv_q_store_q3_k",
    GemvQSwiGluQ3K => "gemv_q_swiglu_q3_k",
    GemvQRopeQ3K => "gemv_q_rope_q3_k",
    GemvQStoreQ4K => "gemv_q_store_q4_k",
    GemvQSwiGluQ4K => "gemv_q_swiglu_q4_k",
    GemvQRopeQ4K => "gemv_q_rope_q4_k",
    GemvQStoreQ5K => "gemv_q_store_q5_k",
    GemvQSwiGluQ5K => "gemv_q_swiglu_q5_k",
    GemvQRopeQ5K => "gemv_q_rope_q5_k",
    GemvQStoreQ6K => "gemv_q_store_q6_k",
    GemvQSwiGluQ6K => "gemv_q_swiglu_q6_k",
    GemvQRopeQ6K => "gemv_q_rope_q6_k",
    GemvQStoreQ40Q80 => "gemv_q_store_q4_0_q8_0",
    GemvQSwiGluQ40Q80 => "gemv_q_swiglu_q4_0_q8_0",
    GemvQRopeQ40Q80 => "gemv_q_rope_q4_0_q8_0",
    GemvQStoreQ41Q80 => "gemv_q_store_q4_1_q8_0",
    GemvQSwiGluQ41Q80 => "gemv_q_swiglu_q4_1_q8_0",
    GemvQRopeQ41Q80 => "gemv_q_rope_q4_1_q8_0",
    GemvQStoreQ50Q80 => "gemv_q_store_q5_0_q8_0",
    GemvQSwiGluQ50Q80 => "gemv_q_swiglu_q5_0_q8_0",
    GemvQRopeQ50Q80 => "gemv_q_rope_q5_0_q8_0",
    GemvQStoreQ51Q80 => "gemv_q_store_q5_1_q8_0",
    GemvQSwiGluQ51Q80 => "gemv_q_swiglu_q5_1_q8_0",
    GemvQRopeQ51Q80 => "gemv_q_rope_q5_1_q8_0",
    GemvQStoreQ3KQ6K => "gemv_q_store_q3_k_q6_k",
    GemvQSwiGluQ3KQ6K => "gemv_q_swiglu_q3_k_q6_k",
    GemvQRopeQ3KQ6K => "gemv_q_rope_q3_k_q6_k",
    GemvQStoreQ4KQ6K => "gemv_q_store_q4_k_q6_k",
    GemvQSwiGluQ4KQ6K => "gemv_q_swiglu_q4_k_q6_k",
    GemvQRopeQ4KQ6K => "gemv_q_rope_q4_k_q6_k",
    GemvQStoreQ5KQ6K => "gemv_q_store_q5_k_q6_k",
    GemvQSwiGluQ5KQ6K => "gemv_q_swiglu_q5_k_q6_k",
    GemvQRopeQ5KQ6K => "gemv_q_rope_q5_k_q6_k",
    GemvQStoreQ3KQ4K => "gemv_q_store_q3_k_q4_k",
    GemvQSwiGluQ3KQ4K => "gemv_q_swiglu_q3_k_q4_k",
    GemvQRopeQ3KQ4K => "gemv_q_rope_q3_k_q4_k",
    GemvQStoreQ3KQ5K => "gemv_q_store_q3_k_q5_k",
    GemvQSwiGluQ3KQ5K => "gemv_q_swiglu_q3_k_q5_k",
    GemvQRopeQ3KQ5K => "gemv_q_rope_q3_k_q5_k",
    GemvQStoreQ2KQ3K => "gemv_q_store_q2_k_q3_k",
    GemvQSwiGluQ2KQ3K => "gemv_q_swiglu_q2_k_q3_k",
    GemvQRopeQ2KQ3K => "gemv_q_rope_q2_k_q3_k",
    // kernels/qmma.cu, one per epilogue and format pair (qmma::QMMA_KERNELS).
    GemvMStoreQ40 => "gemv_m_store_q4_0",
    GemvMStoreWideQ40 => "gemv_m_store_wide_q4_0",
    GemvMSwiGluQ40 => "gemv_m_swiglu_q4_0",
    GemvMRopeQ40 => "gemv_m_rope_q4_0",
    GemvMStoreQ41 => "gemv_m_store_q4_1",
    GemvMStoreWideQ41 => "gemv_m_store_wide_q4_1",
    GemvMSwiGluQ41 => "gemv_m_swiglu_q4_1",
    GemvMRopeQ41 => "gemv_m_rope_q4_1",
    GemvMStoreQ50 => "gemv_m_store_q5_0",
    GemvMStoreWideQ50 => "gemv_m_store_wide_q5_0",
    GemvMSwiGluQ50 => "gemv_m_swiglu_q5_0",
    GemvMRopeQ50 => "gemv_m_rope_q5_0",
    GemvMStoreQ51 => "gemv_m_store_q5_1",
    GemvMStoreWideQ51 => "gemv_m_store_wide_q5_1",
    GemvMSwiGluQ51 => "gemv_m_swiglu_q5_1",
    GemvMRopeQ51 => "gemv_m_rope_q5_1",
    GemvMStoreQ80 => "gemv_m_store_q8_0",
    GemvMStoreWideQ80 => "gemv_m_store_wide_q8_0",
    GemvMSwiGluQ80 => "gemv_m_swiglu_q8_0",
    GemvMRopeQ80 => "gemv_m_rope_q8_0",
    GemvMStoreQ4K => "gemv_m_store_q4_k",
    GemvMStoreWideQ4K => "gemv_m_store_wide_q4_k",
    GemvMSwiGluQ4K => "gemv_m_swiglu_q4_k",
    GemvMRopeQ4K => "gemv_m_rope_q4_k",
    GemvMStoreQ5K => "gemv_m_store_q5_k",
    GemvMStoreWideQ5K => "gemv_m_store_wide_q5_k",
    GemvMSwiGluQ5K => "gemv_m_swiglu_q5_k",
    GemvMRopeQ5K => "gemv_m_rope_q5_k",
    GemvMStoreQ6K => "gemv_m_store_q6_k",
    GemvMStoreWideQ6K => "gemv_m_store_wide_q6_k",
    GemvMSwiGluQ6K => "gemv_m_swiglu_q6_k",
    GemvMRopeQ6K => "gemv_m_rope_q6_k",
    GemvMStoreQ40Q80 => "gemv_m_store_q4_0_q8_0",
    GemvMStoreWideQ40Q80 => "gemv_m_store_wide_q4_0_q8_0",
    GemvMSwiGluQ40Q80 => "gemv_m_swiglu_q4_0_q8_0",
    GemvMRopeQ40Q80 => "gemv_m_rope_q4_0_q8_0",
    GemvMStoreQ41Q80 => "gemv_m_store_q4_1_q8_0",
    GemvMStoreWideQ41Q80 => "gemv_m_store_wide_q4_1_q8_0",
    GemvMSwiGluQ41Q80 => "gemv_m_swiglu_q4_1_q8_0",
    GemvMRopeQ41Q80 => "gemv_m_rope_q4_1_q8_0",
    GemvMStoreQ50Q80 => "gemv_m_store_q5_0_q8_0",
    GemvMStoreWideQ50Q80 => "gemv_m_store_wide_q5_0_q8_0",
    GemvMSwiGluQ50Q80 => "gemv_m_swiglu_q5_0_q8_0",
    GemvMRopeQ50Q80 => "gemv_m_rope_q5_0_q8_0",
    GemvMStoreQ51Q80 => "gemv_m_store_q5_1_q8_0",
    GemvMStoreWideQ51Q80 => "gemv_m_store_wide_q5_1_q8_0",
    GemvMSwiGluQ51Q80 => "gemv_m_swiglu_q5_1_q8_0",
    GemvMRopeQ51Q80 => "gemv_m_rope_q5_1_q8_0",
    GemvMStoreQ4KQ6K => "gemv_m_store_q4_k_q6_k",
    GemvMStoreWideQ4KQ6K => "gemv_m_store_wide_q4_k_q6_k",
    GemvMSwiGluQ4KQ6K => "gemv_m_swiglu_q4_k_q6_k",
    GemvMRopeQ4KQ6K => "gemv_m_rope_q4_k_q6_k",
    GemvMStoreQ5KQ6K => "gemv_m_store_q5_k_q6_k",
    GemvMStoreWideQ5KQ6K => "gemv_m_store_wide_q5_k_q6_k",
    GemvMSwiGluQ5KQ6K => "gemv_m_swiglu_q5_k_q6_k",
    GemvMRopeQ5KQ6K => "gemv_m_rope_q5_k_q6_k",
    GemvMStoreArgmaxQ40 => "gemv_m_store_argmax_q4_0",
    GemvMStoreArgmaxQ41 => "gemv_m_store_argmax_q4_1",
    GemvMStoreArgmaxQ50 => "gemv_m_store_argmax_q5_0",
    GemvMStoreArgmaxQ51 => "gemv_m_store_argmax_q5_1",
    GemvMStoreArgmaxQ80 => "gemv_m_store_argmax_q8_0",
    GemvMStoreArgmaxQ4K => "gemv_m_store_argmax_q4_k",
    GemvMStoreArgmaxQ5K => "gemv_m_store_argmax_q5_k",
    GemvMStoreArgmaxQ6K => "gemv_m_store_argmax_q6_k",
    GemvQ8DirectStore => "gemv_q8_direct_store",
    GemvQ8DirectArgmax => "gemv_q8_direct_argmax",
    GemvQ5DirectStore => "gemv_q5_direct_store",
    GemvQ5DirectStoreFold => "gemv_q5_direct_store_fold",
    GemvQ5DirectArgmax => "gemv_q5_direct_argmax",
    GemvQ5DirectSwiGlu => "gemv_q5_direct_swiglu",
    DequantQF16 => "dequant_q_f16",
    DequantQF16x4 => "dequant_q_f16_x4",
    EmbedQ => "embed_q",
    ConvertRowsF16 => "convert_rows_f16",
    GemmEpilogue => "gemm_epilogue",
    GemmEpilogueResidual => "gemm_epilogue_residual",
    BiasRopeKvWrite => "bias_rope_kv_write",
    AttentionSplitD64 => "attention_split_d64",
    AttentionSplitD128 => "attention_split_d128",
    AttentionRowsD64 => "attention_rows_d64",
    AttentionRowsD128 => "attention_rows_d128",
    SwiGlu => "swiglu_f32",
    Argmax => "argmax_f32",
    RowScores => "row_scores",
    SamplePrep => "sample_prep",
    SamplePick => "sample_pick",
}

/// Shared memory a quantized GEMV block may use for its x row (4 * k bytes): k up to 24,576.
pub(crate) const QGEMV_MAX_SMEM: u32 = 96 * 1024;

/// A loaded module; unloaded on drop (with its context bound).
pub(crate) struct Module {
    raw: sys::CUmodule,
    ctx: Arc<CudaContext>,
}

impl Module {
    /// Loads `image` (a fatbin) into `ctx`; `what` says which image on which GPU, for errors.
    pub(crate) fn load(ctx: &Arc<CudaContext>, image: &[u8], what: &str) -> Result<Module, RuntimeError> {
        // cuModuleLoadData reads the fatbin header in place: give it an 8-byte aligned copy.
        let mut aligned = vec![0u64; image.len().div_ceil(8)];
        // SAFETY: `aligned` has at least image.len() bytes; u8 has no alignment requirement.
        unsafe { std::ptr::copy_nonoverlapping(image.as_ptr(), aligned.as_mut_ptr() as *mut u8, image.len()) };
        let mut raw: sys::CUmodule = std::ptr::null_mut();
        ctx.bind_to_thread().cuda_ctx(|| "binding the context".into())?;
        // SAFETY: `aligned` holds a complete fatbin (built by build.rs) and outlives the call; the
        // driver copies what it needs; `raw` is a valid out-pointer.
        let r = unsafe { sys::cuModuleLoadData(&mut raw, aligned.as_ptr() as *const c_void) };
        r.result().cuda_ctx(|| format!("loading {what}"))?;
        Ok(Module { raw, ctx: ctx.clone() })
    }

    /// The entry point of each name, in order; `what` names the image in errors.
    pub(crate) fn functions<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
        what: &str,
    ) -> Result<Vec<sys::CUfunction>, RuntimeError> {
        names
            .into_iter()
            .map(|name| {
                let c_name = CString::new(name).expect("kernel names have no NUL");
                let mut f: sys::CUfunction = std::ptr::null_mut();
                // SAFETY: self.raw is a loaded module, `c_name` a NUL-terminated string, `f` an
                // out-pointer.
                unsafe { sys::cuModuleGetFunction(&mut f, self.raw, c_name.as_ptr()) }
                    .result()
                    .cuda_ctx(|| format!("kernel {name} is missing from {what} (rebuild)"))?;
                Ok(f)
            })
            .collect()
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: `raw` came from cuModuleLoadData in this context and is unloaded exactly once;
            // every CUfunction taken from it lives in the CudaDevice that owns this Module.
            unsafe {
                let _ = sys::cuModuleUnload(self.raw);
            }
        }
    }
}

/// The cuBLAS handle and the workspace it owns: a fixed buffer of its own (cublasSetWorkspace),
/// so that a GEMM never allocates, which keeps GEMMs legal inside a stream capture (the prefill
/// graphs) and their memory accounted once. Field order = drop order: the handle first.
pub(crate) struct Blas {
    handle: CudaBlas,
    _workspace: CudaSlice<u8>,
}

/// Bytes of the cuBLAS workspace: what NVIDIA recommends for Hopper (32 MiB; cuBLAS' own default
/// pool on sm_90 is the same size).
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// One GPU: context, the single stream every launch goes to, the kernel module and cuBLAS.
pub struct CudaDevice {
    // Field order = drop order: the function table and module go before the stream and context.
    funcs: Vec<sys::CUfunction>,
    module: Module,
    /// cuBLAS, created on first use (`blas()`): its handle and first GEMM cost ~200 ms, which a
    /// one-shot run with a short prompt never needs (short prefills run on the GEMV kernels).
    blas: OnceLock<Option<Blas>>,
    /// Whether cuBLAS may be used at all (QWEN_AOT_NO_CUBLAS=1 turns it off).
    blas_allowed: bool,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) ctx: Arc<CudaContext>,
    name: String,
    sm_count: u32,
    compute_capability: (i32, i32),
    pdl: bool,
}

/// Device memory of `bytes` bytes (zeroed at allocation), freed on drop.
pub struct DevBuf {
    slice: CudaSlice<u8>,
    ptr: u64,
}

impl DevBuf {
    /// Raw device address (kernel argument).
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    pub fn bytes(&self) -> usize {
        self.slice.len()
    }
}

fn unavailable(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::CudaUnavailable(msg.into())
}

/// Why a GPU of compute capability `cc` cannot run the kernels, or None when it can. The image
/// holds sm_90 SASS and compute_90 PTX (`kernel_constants::CUDA_ARCH`): Hopper runs the SASS,
/// newer GPUs JIT-compile the PTX, and nothing older can load either (the kernels also use
/// `griddepcontrol`, an sm_90 instruction). Checked before the image is loaded, so an older GPU
/// gets this one line instead of the driver's "no kernel image is available".
pub(crate) fn unsupported_gpu(name: &str, cc: (i32, i32)) -> Option<String> {
    let need = (crate::kernel_constants::CUDA_ARCH / 10) as i32;
    let need = (need, (crate::kernel_constants::CUDA_ARCH % 10) as i32);
    (cc < need).then(|| {
        format!(
            "{name} (compute capability {}.{}) is older than the GPUs the kernels are built for: compute \
             capability {}.{} (Hopper: H100, H200, GH200) and newer",
            cc.0, cc.1, need.0, need.1
        )
    })
}

/// `QWEN_AOT_SMEM_CARVEOUT` (tuning): the preferred L1/shared-memory split, in percent of the
/// maximum shared memory (-1 = the driver's choice), as a list `prefix=pct,...` applied to the
/// kernels whose names start with a prefix; an item without a prefix (or `*`) applies to every
/// kernel, and the last valid item that matches wins, so `43` alone sets every kernel. Invalid
/// items are ignored, as with the other tuning variables. Why: an SM runs blocks of two kernels
/// side by side only under one split, and the driver gives the decode kernels different ones
/// (experiments/LOG.md, sixth session: making them equal measured no gain).
fn carveout_override(kernel: &str) -> Option<i32> {
    carveout_for(&std::env::var("QWEN_AOT_SMEM_CARVEOUT").ok()?, kernel)
}

/// The carveout `spec` gives `kernel` (see [`carveout_override`]); None for no valid match.
fn carveout_for(spec: &str, kernel: &str) -> Option<i32> {
    let valid = |v: &str| v.trim().parse::<i32>().ok().filter(|v| (-1..=100).contains(v));
    spec.split(',')
        .rev()
        .map(|item| item.split_once('=').unwrap_or(("*", item)))
        .filter(|(prefix, _)| {
            let prefix = prefix.trim();
            prefix == "*" || (!prefix.is_empty() && kernel.starts_with(prefix))
        })
        .find_map(|(_, v)| valid(v))
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

impl CudaDevice {
    /// Opens GPU 0 and loads `image` (the fatbin `qwen_aot::kernels::IMAGE`).
    ///
    /// Errors: [`RuntimeError::CudaUnavailable`] when the image is empty (built without nvcc), no
    /// driver library is installed, or no GPU is visible; [`RuntimeError::Cuda`] for any other
    /// failure (e.g. the image has no code for this GPU).
    /// Whether the NVIDIA driver library can be loaded (milliseconds; no GPU is opened).
    pub fn driver_present() -> bool {
        // cudarc's dynamic loading panics when libcuda is missing: check first, and catch any panic.
        // SAFETY: is_culib_present only tries to dlopen the driver library candidates.
        catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false)
    }

    pub fn new(image: &[u8]) -> Result<CudaDevice, RuntimeError> {
        CudaDevice::new_then(image, || {})
    }

    /// [`Self::new`], calling `after_context` once GPU 0's context exists (before the kernels'
    /// load): work to overlap with the rest of the start-up that is worth starting only when a
    /// GPU is there.
    pub fn new_then(image: &[u8], after_context: impl FnOnce()) -> Result<CudaDevice, RuntimeError> {
        if image.is_empty() {
            return Err(unavailable(
                "this binary was built without nvcc (no CUDA kernels embedded); run scripts/setup-cuda.sh and rebuild",
            ));
        }
        if !CudaDevice::driver_present() {
            return Err(unavailable("the NVIDIA driver library (libcuda.so) was not found"));
        }
        let span = phases::span("CUDA: driver, context, stream");
        let ctx = match catch_unwind(|| CudaContext::new(0)) {
            Ok(Ok(ctx)) => ctx,
            Ok(Err(e)) => return Err(unavailable(format!("cannot open GPU 0: {e}"))),
            Err(p) => return Err(unavailable(format!("cannot initialise the CUDA driver: {}", panic_message(p)))),
        };
        after_context();
        // SAFETY: everything runs on one stream, so cross-stream event synchronisation is not
        // needed; and its event records would be illegal during stream capture.
        unsafe { ctx.disable_event_tracking() };
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let (major, minor) = ctx.compute_capability().cuda_ctx(|| "querying compute capability".into())?;
        if let Some(why) = unsupported_gpu(&name, (major, minor)) {
            return Err(unavailable(why));
        }
        let stream = ctx.new_stream().cuda_ctx(|| "creating a stream".into())?;
        drop(span);
        let span = phases::span("CUDA: kernel module load");

        let what =
            format!("the kernel image ({} bytes, sm_90 SASS + compute_90 PTX) on a sm_{major}{minor} GPU", image.len());
        let module = Module::load(&ctx, image, &what)?;
        let funcs = module.functions(Kernel::ALL.iter().map(|k| k.name()), "the kernel image")?;
        for (k, &f) in Kernel::ALL.iter().zip(&funcs) {
            let Some(pct) = carveout_override(k.name()) else { continue };
            // SAFETY: `f` is a function of the module loaded above; the attribute takes a
            // percentage (or -1) and only changes the driver's L1/shared split preference.
            unsafe {
                sys::cuFuncSetAttribute(
                    f,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
                    pct,
                )
            }
            .result()
            .cuda_ctx(|| format!("setting the shared-memory carveout of {} to {pct} %", k.name()))?;
        }
        let dynamic_smem = [Kernel::GemvQAny, Kernel::GemvQAnySwiGlu, Kernel::GemvQAnyRope]
            .into_iter()
            .chain(super::launch::QGEMV_KERNELS.iter().flat_map(|(_, _, k)| *k))
            .map(|k| (k, QGEMV_MAX_SMEM))
            .chain(super::qmma::smem_limits())
            .chain(
                super::launch::ATTENTION_KERNELS.map(|(k, d, rows)| (k, super::launch::attention_smem_bytes(d, rows))),
            );
        for (k, smem) in dynamic_smem {
            // SAFETY: as above; the attribute only raises the dynamic shared memory a launch may
            // ask for (qgemv.cu: the x row, 4 * k bytes; qmma.cu: the weight rings and the x
            // digits; attention.cu: its K/V tiles), which sm_90 allows up to 227 KB per block.
            unsafe {
                sys::cuFuncSetAttribute(
                    funcs[k as usize],
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    smem as i32,
                )
            }
            .result()
            .cuda_ctx(|| format!("allowing {smem} bytes of shared memory to {}", k.name()))?;
        }
        drop(span);
        let sm_count = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .cuda_ctx(|| "querying the SM count".into())? as u32;

        let blas_allowed = !std::env::var("QWEN_AOT_NO_CUBLAS").is_ok_and(|v| v == "1");
        // Programmatic dependent launch needs sm_90; QWEN_AOT_NO_PDL=1 turns it off (debugging,
        // or to measure what it gains).
        let pdl = major >= 9 && !std::env::var("QWEN_AOT_NO_PDL").is_ok_and(|v| v == "1");
        Ok(CudaDevice {
            funcs,
            module,
            blas: OnceLock::new(),
            blas_allowed,
            stream,
            ctx,
            name,
            sm_count,
            compute_capability: (major, minor),
            pdl,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn sm_count(&self) -> u32 {
        self.sm_count
    }
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }
    /// How many blocks of `block_threads` threads of `kernel`, each with `dynamic_smem` bytes of
    /// dynamic shared memory, fit on one SM at once (its registers and shared memory decide), as
    /// the driver computes it; 1 if the query fails. Launchers use it to size grids that run in
    /// one wave.
    pub(crate) fn resident_blocks_per_sm(&self, kernel: Kernel, block_threads: u32, dynamic_smem: u32) -> u32 {
        let mut n: std::ffi::c_int = 0;
        // SAFETY: the function handle comes from this device's loaded module; `n` is a valid
        // out-pointer; the sizes are plain values.
        let r = unsafe {
            sys::cuOccupancyMaxActiveBlocksPerMultiprocessor(
                &mut n,
                self.func(kernel),
                block_threads as std::ffi::c_int,
                dynamic_smem as usize,
            )
        };
        if r.result().is_ok() {
            (n as u32).max(1)
        } else {
            1
        }
    }
    /// Whether prefill GEMMs can run on cuBLAS (else the GEMV kernel, one launch row per token).
    /// Creates the cuBLAS handle on first call (see [`CudaDevice::cublas_ready`]).
    pub fn has_cublas(&self) -> bool {
        self.blas().is_some()
    }
    /// Whether cuBLAS has been created already (without creating it).
    pub fn cublas_ready(&self) -> bool {
        self.blas.get().is_some_and(|b| b.is_some())
    }
    /// Whether kernels are launched with programmatic dependent launch (sm_90+, not disabled).
    pub fn pdl(&self) -> bool {
        self.pdl
    }
    /// cuBLAS on this device's stream, created on first call; None when disabled or when the
    /// library is missing or fails to start (prefill then runs on the GEMV kernels).
    pub(crate) fn blas(&self) -> Option<&CudaBlas> {
        self.blas
            .get_or_init(|| {
                if !self.blas_allowed {
                    return None;
                }
                let _span = phases::span("CUDA: cuBLAS handle (first long prefill)");
                // SAFETY: only tries to dlopen libcublas.
                let present = catch_unwind(|| unsafe { cudarc::cublas::sys::is_culib_present() }).unwrap_or(false);
                if !present {
                    return None;
                }
                let s = self.stream.clone();
                let handle = catch_unwind(AssertUnwindSafe(move || CudaBlas::new(s))).ok().and_then(Result::ok)?;
                let workspace = self.stream.alloc_zeros::<u8>(CUBLAS_WORKSPACE_BYTES).ok()?;
                let ptr = {
                    let (p, _sync) = workspace.device_ptr(&self.stream);
                    p
                };
                // SAFETY: the handle is live; the buffer is device memory of the given size in this
                // context, owned next to the handle in `Blas` and dropped after it.
                let set = unsafe {
                    cudarc::cublas::sys::cublasSetWorkspace_v2(
                        *handle.handle(),
                        ptr as *mut std::ffi::c_void,
                        CUBLAS_WORKSPACE_BYTES,
                    )
                };
                (set == cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS)
                    .then_some(Blas { handle, _workspace: workspace })
            })
            .as_ref()
            .map(|b| &b.handle)
    }
    pub(crate) fn func(&self, k: Kernel) -> sys::CUfunction {
        self.funcs[k as usize]
    }
    pub(crate) fn cu_stream(&self) -> sys::CUstream {
        self.stream.cu_stream()
    }
    #[allow(dead_code)]
    fn module(&self) -> sys::CUmodule {
        self.module.raw
    }

    /// Zeroed device memory.
    pub fn alloc(&self, bytes: usize, what: &str) -> Result<DevBuf, RuntimeError> {
        let slice = match self.stream.alloc_zeros::<u8>(bytes.max(1)) {
            Ok(s) => s,
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                let (free, total) = self.memory_info().unwrap_or((0, 0));
                let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
                return Err(RuntimeError::OutOfDeviceMemory {
                    what: what.to_string(),
                    needed_mib: mib(bytes as u64),
                    free_mib: mib(free),
                    total_mib: mib(total),
                });
            }
            Err(e) => return Err(e).cuda_ctx(|| format!("allocating {bytes} bytes for {what}")),
        };
        let ptr = {
            let (p, _sync) = slice.device_ptr(&self.stream);
            p
        };
        Ok(DevBuf { slice, ptr })
    }

    /// Device memory holding `data`.
    pub fn upload<T: Copy>(&self, data: &[T], what: &str) -> Result<DevBuf, RuntimeError> {
        let bytes = std::mem::size_of_val(data);
        let buf = self.alloc(bytes, what)?;
        self.htod(buf.ptr, data, what)?;
        Ok(buf)
    }

    /// Copies `data` to `dst` (ordered on the stream; pageable source is staged before return).
    pub fn htod<T: Copy>(&self, dst: u64, data: &[T], what: &str) -> Result<(), RuntimeError> {
        if data.is_empty() {
            return Ok(());
        }
        self.ctx.bind_to_thread().cuda_ctx(|| "binding the context".into())?;
        // SAFETY: `dst` points at device memory of at least size_of_val(data) bytes (callers pass
        // buffers they sized for it); the source slice is valid for the duration of the call and the
        // driver stages pageable memory before returning.
        unsafe {
            sys::cuMemcpyHtoDAsync_v2(
                dst,
                data.as_ptr() as *const c_void,
                std::mem::size_of_val(data),
                self.cu_stream(),
            )
        }
        .result()
        .cuda_ctx(|| format!("copying {} bytes to the device ({what})", std::mem::size_of_val(data)))
    }

    /// Copies device memory into `out` and waits for the stream (so `out` is filled on return).
    pub fn dtoh<T: Copy>(&self, src: u64, out: &mut [T], what: &str) -> Result<(), RuntimeError> {
        if !out.is_empty() {
            self.ctx.bind_to_thread().cuda_ctx(|| "binding the context".into())?;
            // SAFETY: `src` holds at least size_of_val(out) bytes; `out` stays borrowed until the
            // stream synchronisation below has completed the copy.
            unsafe {
                sys::cuMemcpyDtoHAsync_v2(
                    out.as_mut_ptr() as *mut c_void,
                    src,
                    std::mem::size_of_val(out),
                    self.cu_stream(),
                )
            }
            .result()
            .cuda_ctx(|| format!("copying {} bytes to the host ({what})", std::mem::size_of_val(out)))?;
        }
        self.sync(what)
    }

    /// Sets `count` 32-bit words at `dst` to `value` (ordered on the stream).
    pub fn memset_u32(&self, dst: u64, value: u32, count: usize, what: &str) -> Result<(), RuntimeError> {
        // SAFETY: `dst` is 4-byte aligned device memory with room for `count` words.
        unsafe { sys::cuMemsetD32Async(dst, value, count, self.cu_stream()) }
            .result()
            .cuda_ctx(|| format!("memset ({what})"))
    }

    /// Fills `bytes` bytes at `dst` with `value` (used to poison outputs in checks).
    pub fn memset_u8(&self, dst: u64, value: u8, bytes: usize, what: &str) -> Result<(), RuntimeError> {
        // SAFETY: `dst` is device memory with room for `bytes` bytes.
        unsafe { sys::cuMemsetD8Async(dst, value, bytes, self.cu_stream()) }
            .result()
            .cuda_ctx(|| format!("memset ({what})"))
    }

    /// (free, total) device memory in bytes (`cuMemGetInfo`).
    pub fn memory_info(&self) -> Result<(u64, u64), RuntimeError> {
        self.ctx.bind_to_thread().cuda_ctx(|| "binding the context".into())?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: two valid out-pointers to locals; the context is bound to this thread.
        unsafe { sys::cuMemGetInfo_v2(&mut free, &mut total) }.result().cuda_ctx(|| "cuMemGetInfo".into())?;
        Ok((free as u64, total as u64))
    }

    /// Device memory in use on this GPU, all processes together (total - free).
    pub fn memory_used(&self) -> Result<u64, RuntimeError> {
        let (free, total) = self.memory_info()?;
        Ok(total.saturating_sub(free))
    }

    /// Waits for all work on the stream; reports asynchronous kernel faults with `what`.
    pub fn sync(&self, what: &str) -> Result<(), RuntimeError> {
        self.stream.synchronize().cuda_ctx(|| format!("synchronising after {what}"))
    }
}

#[cfg(test)]
mod tests {
    use super::{carveout_for, unsupported_gpu};

    /// Hopper and newer (Blackwell 10.0, 12.0 through the PTX) run; Ampere and Ada are refused
    /// with one line naming the GPU, its capability and what is needed.
    #[test]
    fn gpus_older_than_hopper_are_refused() {
        for cc in [(9, 0), (10, 0), (12, 0)] {
            assert_eq!(unsupported_gpu("NVIDIA H200", cc), None, "{cc:?}");
        }
        assert_eq!(
            unsupported_gpu("NVIDIA A100-SXM4-80GB", (8, 0)).unwrap(),
            "NVIDIA A100-SXM4-80GB (compute capability 8.0) is older than the GPUs the kernels are built for: \
             compute capability 9.0 (Hopper: H100, H200, GH200) and newer"
        );
        assert!(unsupported_gpu("NVIDIA L4", (8, 9)).unwrap().contains("compute capability 8.9"));
        assert!(unsupported_gpu("old", (7, 5)).is_some());
    }

    #[test]
    fn carveout_spec_matches_by_prefix_and_the_last_match_wins() {
        assert_eq!(carveout_for("43", "gemv_f16"), Some(43));
        assert_eq!(carveout_for("101", "gemv_f16"), None, "out of range");
        assert_eq!(carveout_for("*=0,attention=43", "attention_split_d64"), Some(43));
        assert_eq!(carveout_for("*=0,attention=43", "gemv_f16_rope"), Some(0));
        assert_eq!(carveout_for("attention=43", "gemv_f16"), None);
        assert_eq!(carveout_for("gemv=20,gemv_f16_wide=30", "gemv_f16_wide"), Some(30));
        assert_eq!(carveout_for("gemv=20,gemv_f16_wide=x", "gemv_f16_wide"), Some(20), "an invalid value is skipped");
        assert_eq!(carveout_for(" gemv = 20 , attention = -1 ", "attention_split_d64"), Some(-1), "whitespace");
        assert_eq!(carveout_for("-2", "gemv_f16"), None);
        assert_eq!(carveout_for("", "gemv_f16"), None);
        assert_eq!(carveout_for("43,attention=20", "gemv_f16"), Some(43), "an item without a prefix applies to all");
        assert_eq!(carveout_for("43,attention=20", "attention_split_d64"), Some(20));
        assert_eq!(carveout_for("=43", "gemv_f16"), None, "an empty prefix matches nothing");
        assert_eq!(carveout_for("gemv=20;attention=43", "gemv_f16"), None, "not a list: one invalid value");
    }
}
