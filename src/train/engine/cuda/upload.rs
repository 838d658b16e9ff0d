//! Batches to the GPU through page-locked memory, whose copies are true DMA. By default each
//! upload goes to a fresh device buffer on the engine's one stream, after the work already
//! queued there. With a copy stream (FC7_COPY_STREAM=1, to become the default once the device
//! measures it) each kind of upload has two page-locked and two device buffers used in turn,
//! so the copy of step k+1's batch runs while step k computes: a slot's copy waits on the GPU
//! for the kernel that read it two uploads ago (`consumed`), the compute stream waits for the
//! copy (`copied`), and the host waits only before refilling a page-locked buffer whose copy
//! has not finished.

use std::sync::Mutex;

use cudarc::driver::{
    CudaEvent, CudaSlice, DevicePtr, DeviceRepr, PinnedHostSlice, ValidAsZeroBits,
};

use super::{alloc_on, cuda_err, Cuda};
use crate::error::Result;

/// The buffers of one kind of upload (pixels, views, colour tables or labels).
pub(super) struct Staging<T> {
    slots: [Slot<T>; 2],
    next: usize,
}

struct Slot<T> {
    host: Option<PinnedHostSlice<T>>,
    dev: Option<CudaSlice<T>>,
    /// The end of the last copy out of `host`.
    copied: Option<CudaEvent>,
    /// The end of the last kernel that read `dev`.
    consumed: Option<CudaEvent>,
}

impl<T> Default for Staging<T> {
    fn default() -> Self {
        let slot = || Slot {
            host: None,
            dev: None,
            copied: None,
            consumed: None,
        };
        Staging {
            slots: [slot(), slot()],
            next: 0,
        }
    }
}

/// An upload's device address, valid until `Cuda::release`.
pub(super) struct Put<T> {
    pub ptr: u64,
    /// The fresh buffer of the one-stream path, freed in stream order after its readers.
    _fresh: Option<CudaSlice<T>>,
    slot: Option<usize>,
}

impl Cuda {
    /// Copies `data` to the GPU through `staging`; the kernels reading `Put::ptr` are queued
    /// next, then `release` is called.
    pub(super) fn put<T: DeviceRepr + ValidAsZeroBits + Copy>(
        &self,
        staging: &Mutex<Staging<T>>,
        data: &[T],
    ) -> Result<Put<T>> {
        let mut st = staging.lock().expect("staging lock");
        let i = st.next;
        if self.copy.is_some() {
            st.next = 1 - i;
        }
        let slot = &mut st.slots[i];
        let copy = self.copy.as_ref().unwrap_or(&self.stream);
        if let Some(done) = &slot.copied {
            done.synchronize().map_err(cuda_err("GPU copy"))?;
        }
        let grow = slot.host.as_ref().is_none_or(|p| p.len() < data.len());
        if grow {
            // SAFETY: written below before any copy reads it.
            let fresh = unsafe { self.ctx.alloc_pinned::<T>(data.len().max(1)) };
            slot.host = Some(fresh.map_err(cuda_err("allocating page-locked memory"))?);
        }
        let pinned = slot.host.as_mut().expect("allocated");
        let host = pinned
            .as_mut_slice()
            .map_err(cuda_err("page-locked memory"))?;
        host[..data.len()].copy_from_slice(data);
        let mut dev = match &self.copy {
            None => alloc_on(copy, pinned.len())?,
            Some(_) => {
                if grow || slot.dev.is_none() {
                    if let Some(used) = &slot.consumed {
                        used.synchronize().map_err(cuda_err("GPU work"))?;
                    }
                    slot.dev = Some(alloc_on(copy, pinned.len())?);
                }
                if let Some(used) = &slot.consumed {
                    copy.wait(used).map_err(cuda_err("GPU event"))?;
                }
                slot.dev.take().expect("allocated")
            }
        };
        copy.memcpy_htod(pinned, &mut dev)
            .map_err(cuda_err("copy to GPU"))?;
        let copied = self.ctx.new_event(None).map_err(cuda_err("GPU event"))?;
        copied.record(copy).map_err(cuda_err("GPU event"))?;
        slot.copied = Some(copied);
        let ptr = dev.device_ptr(copy).0;
        if self.copy.is_none() {
            return Ok(Put {
                ptr,
                _fresh: Some(dev),
                slot: None,
            });
        }
        self.stream
            .wait(slot.copied.as_ref().expect("recorded"))
            .map_err(cuda_err("GPU event"))?;
        slot.dev = Some(dev);
        Ok(Put {
            ptr,
            _fresh: None,
            slot: Some(i),
        })
    }

    /// Marks an upload's readers queued: its slot may be refilled once they have run.
    pub(super) fn release<T>(&self, staging: &Mutex<Staging<T>>, put: Put<T>) -> Result<()> {
        if let Some(i) = put.slot {
            let used = self.ctx.new_event(None).map_err(cuda_err("GPU event"))?;
            used.record(&self.stream).map_err(cuda_err("GPU event"))?;
            staging.lock().expect("staging lock").slots[i].consumed = Some(used);
        }
        Ok(())
    }
}
