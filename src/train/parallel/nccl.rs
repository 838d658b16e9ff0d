//! Gradients summed across GPUs by NCCL's all-reduce, queued on each engine's own stream in one
//! NCCL group, so each GPU's update waits for its sum without the host waiting. libnccl.so.2 is
//! loaded at run time like cuDNN (the `nvidia-nccl-cu13` wheel or a toolkit); without it, or
//! with fewer GPUs than asked, `NcclSum::new` says so in one line.

use cudarc::nccl::{group_end, group_start, Comm, ReduceOp};

use super::Reduce;
use crate::error::{Error, Result};
use crate::train::engine::cuda::{Cuda, Tensor};

pub struct NcclSum {
    /// One communicator per engine, in team order.
    comms: Vec<Comm>,
}

// SAFETY: each communicator is used only from `sum`, which the training thread calls.
unsafe impl Sync for NcclSum {}
unsafe impl Send for NcclSum {}

/// Whether libnccl can be opened.
pub fn present() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names.
    unsafe { cudarc::nccl::sys::is_culib_present() }
}

impl NcclSum {
    /// Communicators over `engines` (one per GPU, the lead first).
    pub fn new(engines: &[&Cuda]) -> Result<NcclSum> {
        if !present() {
            return Err(Error::Cuda(
                "cannot load libnccl.so.2 (NCCL), needed for more than one GPU: put the nvidia-nccl-cu13 wheel's lib folder on LD_LIBRARY_PATH".into(),
            ));
        }
        let streams = engines.iter().map(|e| e.stream()).collect();
        let comms = Comm::from_devices(streams)
            .map_err(|e| Error::Cuda(format!("NCCL over {} GPUs: {e:?}", engines.len())))?;
        Ok(NcclSum { comms })
    }
}

impl Reduce<Cuda> for NcclSum {
    fn sum(&self, _engines: &[&Cuda], grads: &mut [&mut Vec<Tensor>]) -> Result<()> {
        let fail = |e| Error::Cuda(format!("NCCL all-reduce: {e:?}"));
        group_start().map_err(fail)?;
        let mut queued = Ok(());
        for (comm, g) in self.comms.iter().zip(grads.iter_mut()) {
            for t in g.iter_mut() {
                if let Err(e) = comm.all_reduce_in_place(t, &ReduceOp::Sum) {
                    queued = Err(fail(e));
                }
            }
        }
        // The group is closed even after a failed call, so NCCL is left usable.
        group_end().map_err(fail)?;
        queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where libnccl is absent (this machine and CI), asking for NCCL is one line naming it.
    #[test]
    fn without_nccl_the_error_names_the_library() {
        if present() {
            return;
        }
        let err = NcclSum::new(&[]).err().expect("no NCCL here").to_string();
        assert!(err.contains("libnccl.so.2") && !err.contains('\n'), "{err}");
    }
}
