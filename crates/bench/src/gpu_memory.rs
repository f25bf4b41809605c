//! Peak GPU memory of a bench row: the high-water mark of the CUDA device's default memory pool,
//! which candle's allocations come from (cudarc allocates stream-ordered, `cuMemAllocAsync`,
//! where the device supports pools). It counts bytes allocated, like PyTorch's
//! `torch.cuda.max_memory_allocated`, not the CUDA context or a caching allocator's reserve.

use candle_core::Device;

/// Resets the pool's high-water mark to what is allocated now. False where there is no pool.
pub fn reset_peak(dev: &Device) -> bool {
    imp::with_pool(dev, imp::reset).unwrap_or(false)
}

/// The pool's high-water mark since the last [`reset_peak`], in bytes.
pub fn peak(dev: &Device) -> Option<u64> {
    imp::with_pool(dev, imp::high).flatten()
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::cuda_backend::cudarc::driver::sys;
    use candle_core::Device;

    pub struct Pool(sys::CUmemoryPool);

    /// Runs `f` on the default pool of `dev`'s CUDA device; None off CUDA or without a pool.
    pub fn with_pool<T>(dev: &Device, f: impl FnOnce(&Pool) -> T) -> Option<T> {
        let Device::Cuda(cuda) = dev else { return None };
        let ordinal = cuda.cuda_stream().context().ordinal() as i32;
        let mut device: sys::CUdevice = 0;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        // SAFETY: plain driver queries with out-pointers to locals; candle opened the device.
        unsafe {
            if sys::cuDeviceGet(&mut device, ordinal) != sys::CUresult::CUDA_SUCCESS
                || sys::cuDeviceGetDefaultMemPool(&mut pool, device) != sys::CUresult::CUDA_SUCCESS
                || pool.is_null()
            {
                return None;
            }
        }
        Some(f(&Pool(pool)))
    }

    const HIGH: sys::CUmemPool_attribute = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;

    pub fn reset(pool: &Pool) -> bool {
        let mut zero: u64 = 0;
        // SAFETY: USED_MEM_HIGH takes a cuuint64_t; setting it (to 0) resets it to the current use.
        unsafe {
            sys::cuMemPoolSetAttribute(pool.0, HIGH, &mut zero as *mut u64 as *mut _)
                == sys::CUresult::CUDA_SUCCESS
        }
    }

    pub fn high(pool: &Pool) -> Option<u64> {
        let mut value: u64 = 0;
        // SAFETY: USED_MEM_HIGH is read into a cuuint64_t.
        let ok = unsafe {
            sys::cuMemPoolGetAttribute(pool.0, HIGH, &mut value as *mut u64 as *mut _)
                == sys::CUresult::CUDA_SUCCESS
        };
        (ok && value > 0).then_some(value)
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::Device;

    pub struct Pool;

    pub fn with_pool<T>(_dev: &Device, _f: impl FnOnce(&Pool) -> T) -> Option<T> {
        None
    }

    pub fn reset(_pool: &Pool) -> bool {
        false
    }

    pub fn high(_pool: &Pool) -> Option<u64> {
        None
    }
}
