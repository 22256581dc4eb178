//! Enqueuing an [`Op`] list on the device's stream: kernel launches (with PDL where the kernel
//! takes it) and cuBLAS GEMMs; and capturing a list into a CUDA graph.

use super::{blas_sys, c_void, sys, CudaCtx, CudaDevice, CudaGraph, Gemm, Launch, Op, RuntimeError, Slot};

use crate::cuda::diag_skip;

impl CudaDevice {
    /// Enqueues `ops` on the stream (no synchronisation; legal during stream capture, cuBLAS'
    /// GEMMs included: the handle has a workspace of its own and never allocates, `device::Blas`).
    ///
    /// # Safety
    /// Every pointer argument of every op must address device memory of the sizes documented on
    /// its builder, valid until the work has completed.
    pub(crate) unsafe fn run_ops(&self, ops: &[Op]) -> Result<(), RuntimeError> {
        self.ctx.bind_to_thread().cuda_ctx(|| "binding the context".into())?;
        for op in ops {
            match op {
                Op::Kernel(l) => self.launch(l)?,
                Op::Gemm(g) => self.gemm(g)?,
            }
        }
        Ok(())
    }

    /// Records `ops` into a CUDA graph (stream capture), instantiated and uploaded; `what` names
    /// the graph in errors. cuBLAS is created before the capture when `ops` hold an [`Op::Gemm`]
    /// (its creation allocates, which a capture forbids).
    ///
    /// # Safety
    /// As [`CudaDevice::run_ops`], until every launch of the graph has completed.
    pub(crate) unsafe fn capture_graph(&self, ops: &[Op], what: &str) -> Result<CudaGraph, RuntimeError> {
        self.ctx.bind_to_thread().cuda_ctx(|| "binding the context".into())?;
        if ops.iter().any(|op| matches!(op, Op::Gemm(_))) && self.blas().is_none() {
            // Created here, before the capture, if it was not yet (creating it allocates).
            return Err(RuntimeError::Cuda(format!("the {what} graph holds GEMMs but cuBLAS is unavailable")));
        }
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .cuda_ctx(|| format!("beginning the capture of the {what} graph"))?;
        // SAFETY: this function's contract.
        let recorded = unsafe { self.run_ops(ops) };
        // Always end the capture, even after an error, so the stream is usable again.
        let ended = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
        recorded?;
        let graph = ended
            .cuda_ctx(|| format!("instantiating the {what} graph"))?
            .ok_or_else(|| RuntimeError::Cuda(format!("the capture of the {what} graph produced no graph")))?;
        graph.upload().cuda_ctx(|| format!("uploading the {what} graph"))?;
        Ok(graph)
    }

    unsafe fn launch(&self, l: &Launch) -> Result<(), RuntimeError> {
        // SAFETY: the function is this device's (its loaded module's) for `l.kernel`; the rest is
        // this function's contract.
        unsafe { self.launch_function(self.func(l.kernel), l.kernel.name(), l) }
    }

    /// Launches `f`, the entry point `name` of a module loaded in this device's context, with
    /// `l`'s shape and arguments (`l.kernel` only identifies it to the caller).
    ///
    /// # Safety
    /// As [`CudaDevice::run_ops`] for the launch, and `f` must take exactly `l.args`.
    pub(crate) unsafe fn launch_function<K>(
        &self,
        f: sys::CUfunction,
        name: &str,
        l: &Launch<K>,
    ) -> Result<(), RuntimeError> {
        if diag_skip::skipped(name) {
            return Ok(()); // a timing diagnostic (diag_skip.rs)
        }
        let mut slots: Vec<Slot> = l.args.iter().map(|a| a.slot()).collect();
        let mut params: Vec<*mut c_void> = slots.iter_mut().map(|s| s.as_mut_ptr() as *mut c_void).collect();
        // Programmatic dependent launch: lets this kernel be scheduled while the previous one
        // drains; every block of every kernel waits (griddepcontrol.wait, kernels/common.cuh
        // `pdl_prologue`) before it reads anything an earlier kernel writes, so data dependencies
        // are unchanged.
        let mut attr = sys::CUlaunchAttribute {
            id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
            pad: [0; 4],
            value: sys::CUlaunchAttributeValue { programmaticStreamSerializationAllowed: 1 },
        };
        let config = sys::CUlaunchConfig {
            gridDimX: l.grid.0,
            gridDimY: l.grid.1,
            gridDimZ: l.grid.2,
            blockDimX: l.block.0,
            blockDimY: l.block.1,
            blockDimZ: l.block.2,
            sharedMemBytes: l.smem,
            hStream: self.cu_stream(),
            attrs: &mut attr,
            numAttrs: if self.pdl() { 1 } else { 0 },
        };
        // SAFETY: the function comes from the loaded module; `params` has one pointer per kernel
        // parameter, in order, each to a slot whose low bytes hold the value (i32/f32/pointer;
        // little-endian; a QParts struct's 120-byte image), alive across the call (the driver
        // copies them); `config` and
        // `attr` outlive the call; the buffers behind the pointers are the caller's obligation
        // (see this function's contract).
        unsafe { sys::cuLaunchKernelEx(&config, f, params.as_mut_ptr(), std::ptr::null_mut()) }
            .result()
            .cuda_ctx(|| format!("launching {name} grid {:?} block {:?}", l.grid, l.block))
    }

    unsafe fn gemm(&self, g: &Gemm) -> Result<(), RuntimeError> {
        let blas =
            self.blas().ok_or_else(|| RuntimeError::Cuda("cuBLAS GEMM requested without a cuBLAS handle".into()))?;
        let (alpha, beta) = (1.0f32, 0.0f32);
        // Column-major view: C (n x rows, ld n) = op(A) op(B) with A = W viewed as k x n (ld k),
        // transposed, and B = X16 viewed as k x rows (ld k).
        // SAFETY: w holds n*k halves, x16 rows*k halves, out (rows-1)*ldc + n floats, with
        // `g.rows` the padded row count (`gemm_rows`; the builders' contract on `matmul`);
        // alpha/beta are host scalars (default pointer mode) alive across the call.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                g.n as i32,
                g.rows as i32,
                g.k as i32,
                &alpha as *const f32 as *const c_void,
                g.w as *const c_void,
                blas_sys::cudaDataType::CUDA_R_16F,
                g.k as i32,
                g.x16 as *const c_void,
                blas_sys::cudaDataType::CUDA_R_16F,
                g.k as i32,
                &beta as *const f32 as *const c_void,
                g.out as *mut c_void,
                blas_sys::cudaDataType::CUDA_R_32F,
                g.ldc as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .cuda_ctx(|| format!("cublasGemmEx n={} k={} rows={}", g.n, g.k, g.rows))
    }
}
