//! The CPU executor: interprets a plan in f32 on all cores. It is the oracle for the GPU and the
//! fallback on machines without one.
pub mod executor;
pub mod kernels;
pub mod qdot;
pub mod qmatmul;

pub use executor::CpuExecutor;
