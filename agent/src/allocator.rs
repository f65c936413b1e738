//! glibc malloc settings for a training process.
//!
//! Every step frees tensors of a few megabytes and allocates new ones of the same sizes
//! (gradients, activations, temporaries). With glibc's defaults a freed block that large goes
//! back to the kernel (blocks above the mmap threshold are unmapped; a heap top above the trim
//! threshold is trimmed), so the next step's allocation faults in fresh zero-filled pages:
//! measured, about 1,700 page faults per batch-1 STL step on libtorch. Keeping freed memory in
//! the heap for reuse took the libtorch batch-1 step from 123 to 175 images/s on 2 cores
//! (`ndhtl bench`, README). PyTorch itself gains nothing from the same settings: its own
//! allocation pattern already reuses blocks.
//!
//! The cost is memory: up to [`TRIM_THRESHOLD`] of freed heap is kept per process instead of
//! being returned to the system.

/// Blocks up to this size come from the heap, not from their own mapping (glibc's maximum on
/// 64-bit targets).
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// Free memory at the top of the heap is returned to the system only beyond this.
pub const TRIM_THRESHOLD: usize = 256 << 20;

/// Why the settings were not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocatorTuningError {
    #[error("the environment sets glibc's malloc itself ({0}); its settings are kept")]
    SetByEnvironment(String),
    #[error("malloc tuning needs glibc on Linux")]
    Unsupported,
    #[error("glibc refused mallopt({parameter}, {value})")]
    Refused {
        parameter: &'static str,
        value: usize,
    },
}

/// Applies [`MMAP_THRESHOLD`] and [`TRIM_THRESHOLD`], unless the environment already sets
/// glibc's malloc (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_`) or
/// `NDHTL_MALLOC_DEFAULTS=1` asks for glibc's defaults. Call it first thing in `main`.
pub fn keep_freed_memory_for_reuse() -> Result<(), AllocatorTuningError> {
    let set_by_environment = [
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
        "MALLOC_TOP_PAD_",
    ]
    .into_iter()
    .find(|name| std::env::var_os(name).is_some());
    if let Some(name) = set_by_environment {
        return Err(AllocatorTuningError::SetByEnvironment(name.to_string()));
    }
    if std::env::var("NDHTL_MALLOC_DEFAULTS").as_deref() == Ok("1") {
        return Err(AllocatorTuningError::SetByEnvironment(
            "NDHTL_MALLOC_DEFAULTS=1".to_string(),
        ));
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> Result<(), AllocatorTuningError> {
    let settings = [
        ("M_MMAP_THRESHOLD", libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        ("M_TRIM_THRESHOLD", libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    ];
    for (parameter, code, value) in settings {
        let as_int = i32::try_from(value).expect("the thresholds fit in a C int");
        // SAFETY: mallopt only changes glibc's allocator parameters; it is thread-safe.
        if unsafe { libc::mallopt(code, as_int) } != 1 {
            return Err(AllocatorTuningError::Refused { parameter, value });
        }
    }
    Ok(())
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> Result<(), AllocatorTuningError> {
    Err(AllocatorTuningError::Unsupported)
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Minor page faults of this thread so far.
    fn minor_faults() -> i64 {
        // SAFETY: getrusage writes into the struct it is given.
        unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut usage), 0);
            usage.ru_minflt
        }
    }

    /// Writes one byte into every page of `bytes` at `block`.
    unsafe fn touch(block: *mut u8, bytes: usize) {
        for offset in (0..bytes).step_by(4096) {
            // SAFETY: `offset < bytes`, inside the caller's allocation.
            unsafe { block.add(offset).write_volatile(1) };
        }
    }

    #[test]
    fn a_freed_block_is_reused_without_faulting_its_pages_in_again() {
        assert_eq!(apply(), Ok(()));
        let bytes = 24 << 20;
        let pages = (bytes / 4096) as i64;
        // SAFETY: plain malloc/free of a block this test owns; every access stays inside it.
        let faults = unsafe {
            let first = libc::malloc(bytes).cast::<u8>();
            assert!(!first.is_null());
            touch(first, bytes);
            libc::free(first.cast());
            let before = minor_faults();
            let second = libc::malloc(bytes).cast::<u8>();
            assert!(!second.is_null());
            touch(second, bytes);
            let faults = minor_faults() - before;
            libc::free(second.cast());
            faults
        };
        // With glibc's defaults the 24 MiB block is unmapped on free and all 6,144 of its pages
        // fault in again.
        assert!(
            faults < pages / 20,
            "{faults} page faults re-touching a freed block of {pages} pages"
        );
    }
}
