//! Batches run through ONNX Runtime's IO binding with the input and outputs in host memory the
//! provider copies by DMA: page-locked (`CudaPinned`) for CUDA. A plain `run` hands CUDA a
//! pageable 154 MB batch (256 × 3 × 224 × 224 floats) that the driver stages through a pinned
//! buffer of its own, serially, inside every run; ONNX Runtime's CUDA performance guide names
//! this as the first cost to remove. The staging tensors are made once per batch size.

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::Tensor;

/// Where the staging tensors live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// Page-locked memory of the CUDA device (the provider's own allocator).
    CudaPinned(i32),
    /// Ordinary memory: the same path on the CPU provider, which tests exercise.
    Cpu,
}

/// Bound input and outputs for batches of `n` images.
pub struct Staging {
    n: usize,
    input_name: String,
    input: Tensor<f32>,
    binding: IoBinding,
    outputs: Vec<(String, usize)>,
    // Dropped after the tensors they made.
    _allocators: Vec<Allocator>,
}

fn allocator(session: &Session, host: Host, kind: MemoryType) -> ort::Result<Allocator> {
    match host {
        Host::Cpu => Ok(Allocator::default()),
        Host::CudaPinned(id) => Allocator::new(
            session,
            MemoryInfo::new(
                AllocationDevice::CUDA_PINNED,
                id,
                AllocatorType::Device,
                kind,
            )?,
        ),
    }
}

impl Staging {
    /// Staging for `n` images of `side`² pixels in, and `outputs` (name, width) out.
    pub fn new(
        session: &Session,
        host: Host,
        input_name: &str,
        side: usize,
        n: usize,
        outputs: &[(String, usize)],
    ) -> ort::Result<Staging> {
        let (ain, aout) = (
            allocator(session, host, MemoryType::CPUInput)?,
            allocator(session, host, MemoryType::CPUOutput)?,
        );
        let input = Tensor::<f32>::new(&ain, [n, 3, side, side])?;
        let mut binding = session.create_binding()?;
        binding.bind_input(input_name, &input)?;
        for (name, width) in outputs {
            binding.bind_output(name.as_str(), Tensor::<f32>::new(&aout, [n, *width])?)?;
        }
        Ok(Staging {
            n,
            input_name: input_name.to_string(),
            input,
            binding,
            outputs: outputs.to_vec(),
            _allocators: vec![ain, aout],
        })
    }

    pub fn batch_size(&self) -> usize {
        self.n
    }

    pub fn outputs(&self) -> &[(String, usize)] {
        &self.outputs
    }

    /// Runs `batch` ([n, 3, S, S], n as made) and returns each output, row-major.
    pub fn run(&mut self, session: &mut Session, batch: &[f32]) -> ort::Result<Vec<Vec<f32>>> {
        let (_, dst) = self.input.extract_tensor_mut();
        dst.copy_from_slice(batch);
        // Binding copies a host input to the device there and then, so each batch binds anew.
        self.binding
            .bind_input(self.input_name.as_str(), &self.input)?;
        let out = session.run_binding(&self.binding)?;
        self.outputs
            .iter()
            .map(|(name, _)| {
                let (_, v) = out[name.as_str()].try_extract_tensor::<f32>()?;
                Ok(v.to_vec())
            })
            .collect()
    }
}
