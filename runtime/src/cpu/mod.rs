//! The CPU executor: interprets a plan in f32 on all cores. It is the oracle for the GPU and the
//! fallback on machines without one.
pub mod executor;
pub mod kernels;

pub use executor::CpuExecutor;
