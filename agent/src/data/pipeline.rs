//! The input pipeline: normalisation, random crop with zero padding, horizontal flip, batching.
//!
//! Everything random is drawn from an [`EpochPlan`] that depends only on `(seed, epoch)`, so a
//! run resumed at epoch `e` sees exactly the images, order and augmentation an uninterrupted run
//! would. Batches are assembled on a background thread ([`Prefetcher`]) so the training loop does
//! not wait on them.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::cifar_format::IMAGE_BYTES;
use super::tasks::TaskImages;

/// Per-channel normalisation `(x/255 - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalization {
    /// The CIFAR-10 statistics of the reference recipe (bearpaw/pytorch-classification), used
    /// for source training and both fine-tunings (spec D-18).
    pub const CIFAR10: Normalization = Normalization {
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.2023, 0.1994, 0.2010],
    };

    /// A byte → normalised value table per channel.
    pub fn lookup_table(&self) -> [[f32; 256]; 3] {
        std::array::from_fn(|c| {
            std::array::from_fn(|v| (v as f32 / 255.0 - self.mean[c]) / self.std[c])
        })
    }
}

/// Training-time augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Augmentation {
    /// Zero padding before a random 32×32 crop (4 in the reference recipe; 0 disables cropping).
    pub crop_padding: u8,
    pub horizontal_flip: bool,
}

impl Augmentation {
    pub const STANDARD: Augmentation = Augmentation {
        crop_padding: 4,
        horizontal_flip: true,
    };
    pub const NONE: Augmentation = Augmentation {
        crop_padding: 0,
        horizontal_flip: false,
    };
}

/// One image's augmentation: crop offsets in the padded image and a flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImageTransform {
    pub offset_y: u8,
    pub offset_x: u8,
    pub flip: bool,
}

/// The order and augmentation of one epoch, a pure function of `(seed, epoch)`.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochPlan {
    pub order: Vec<u32>,
    pub transforms: Vec<ImageTransform>,
    pub padding: u8,
}

/// Mixes a seed and an epoch into an independent stream seed (splitmix64 finaliser).
pub fn stream_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl EpochPlan {
    pub fn new(
        len: usize,
        seed: u64,
        epoch: u64,
        augmentation: Augmentation,
        shuffle: bool,
    ) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(seed, epoch));
        let mut order: Vec<u32> = (0..len as u32).collect();
        if shuffle {
            order.shuffle(&mut rng);
        }
        let padding = augmentation.crop_padding;
        let transforms = (0..len)
            .map(|_| ImageTransform {
                offset_y: if padding > 0 {
                    rng.random_range(0..=2 * padding)
                } else {
                    0
                },
                offset_x: if padding > 0 {
                    rng.random_range(0..=2 * padding)
                } else {
                    0
                },
                flip: augmentation.horizontal_flip && rng.random_bool(0.5),
            })
            .collect();
        EpochPlan {
            order,
            transforms,
            padding,
        }
    }

    /// The plan for evaluation: file order, no augmentation.
    pub fn sequential(len: usize) -> Self {
        EpochPlan {
            order: (0..len as u32).collect(),
            transforms: vec![ImageTransform::default(); len],
            padding: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Writes one augmented, normalised image (CHW f32) into `out`.
///
/// The crop reads the image as if zero-padded by `padding` pixels (padding is pixel value 0,
/// normalised afterwards, as torchvision's `RandomCrop(32, padding=4)` before `Normalize`).
pub fn render_image(
    image: &[u8],
    transform: ImageTransform,
    padding: u8,
    lut: &[[f32; 256]; 3],
    out: &mut [f32],
) {
    debug_assert_eq!(image.len(), IMAGE_BYTES);
    debug_assert_eq!(out.len(), IMAGE_BYTES);
    let pad = padding as isize;
    for channel in 0..3 {
        let plane = &image[channel * 1024..(channel + 1) * 1024];
        let target = &mut out[channel * 1024..(channel + 1) * 1024];
        let table = &lut[channel];
        let zero = table[0];
        for y in 0..32isize {
            let source_y = y + transform.offset_y as isize - pad;
            let row = &mut target[(y as usize) * 32..(y as usize + 1) * 32];
            if !(0..32).contains(&source_y) {
                row.fill(zero);
                continue;
            }
            let source_row = &plane[(source_y as usize) * 32..(source_y as usize + 1) * 32];
            for (x, value) in row.iter_mut().enumerate() {
                let output_x = if transform.flip {
                    31 - x as isize
                } else {
                    x as isize
                };
                let source_x = output_x + transform.offset_x as isize - pad;
                *value = if (0..32).contains(&source_x) {
                    table[source_row[source_x as usize] as usize]
                } else {
                    zero
                };
            }
        }
    }
}

/// One mini-batch, ready to become tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `size × 3 × 32 × 32`, normalised.
    pub pixels: Vec<f32>,
    pub labels: Vec<i64>,
    /// Position of this batch in the epoch (0-based).
    pub index: usize,
    /// Whether this is the last batch of the epoch.
    pub is_last: bool,
}

impl Batch {
    pub fn size(&self) -> usize {
        self.labels.len()
    }
}

/// Assembles batch `batch_index` of `plan`.
pub fn assemble_batch(
    images: &TaskImages,
    plan: &EpochPlan,
    lut: &[[f32; 256]; 3],
    batch_size: usize,
    batch_index: usize,
    batch_count: usize,
) -> Batch {
    let start = batch_index * batch_size;
    let end = (start + batch_size).min(plan.len());
    let mut pixels = vec![0f32; (end - start) * IMAGE_BYTES];
    let mut labels = Vec::with_capacity(end - start);
    for (slot, position) in (start..end).enumerate() {
        let image_index = plan.order[position] as usize;
        render_image(
            images.image(image_index),
            plan.transforms[position],
            plan.padding,
            lut,
            &mut pixels[slot * IMAGE_BYTES..(slot + 1) * IMAGE_BYTES],
        );
        labels.push(images.labels[image_index] as i64);
    }
    Batch {
        pixels,
        labels,
        index: batch_index,
        is_last: batch_index + 1 == batch_count,
    }
}

/// Number of batches of an epoch of `len` images.
pub fn batch_count(len: usize, batch_size: usize, drop_last: bool) -> usize {
    if drop_last {
        len / batch_size
    } else {
        len.div_ceil(batch_size)
    }
}

/// Produces an epoch's batches on a background thread, a few ahead of the consumer.
pub struct Prefetcher {
    receiver: Receiver<Batch>,
    worker: Option<JoinHandle<()>>,
    pub batch_count: usize,
}

impl Prefetcher {
    pub const DEPTH: usize = 8;

    pub fn spawn(
        images: Arc<TaskImages>,
        plan: EpochPlan,
        normalization: Normalization,
        batch_size: usize,
        drop_last: bool,
        skip_batches: usize,
    ) -> Self {
        let count = batch_count(plan.len(), batch_size, drop_last);
        let (sender, receiver): (SyncSender<Batch>, Receiver<Batch>) = sync_channel(Self::DEPTH);
        let worker = std::thread::Builder::new()
            .name("ndhtl-prefetch".into())
            .spawn(move || {
                let lut = normalization.lookup_table();
                for index in skip_batches..count {
                    let batch = assemble_batch(&images, &plan, &lut, batch_size, index, count);
                    if sender.send(batch).is_err() {
                        return; // consumer gone (cancelled run)
                    }
                }
            })
            .expect("spawning the prefetch thread");
        Prefetcher {
            receiver,
            worker: Some(worker),
            batch_count: count,
        }
    }
}

impl Iterator for Prefetcher {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if let Ok(batch) = self.receiver.recv() {
            return Some(batch);
        }
        // The worker is done. If it died, its panic is the consumer's: a short epoch must not
        // pass for a whole one (the job fails on its attempt, with the message kept).
        if let Some(worker) = self.worker.take()
            && let Err(panic) = worker.join()
        {
            std::panic::resume_unwind(panic);
        }
        None
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Dropping the receiver unblocks the worker; then reap it.
        let (_, dead) = sync_channel(0);
        self.receiver = dead;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp_image() -> Vec<u8> {
        (0..IMAGE_BYTES)
            .map(|i| (i % 32) as u8 + 100 * (i / 1024) as u8)
            .collect()
    }

    /// The identity normalisation below is exact up to float rounding; compare whole values.
    fn round_into(raw: &[f32], out: &mut [f32]) {
        for (o, r) in out.iter_mut().zip(raw) {
            assert!((r - r.round()).abs() < 1e-3, "{r}");
            *o = r.round();
        }
    }

    const IDENTITY: Normalization = Normalization {
        mean: [0.0; 3],
        std: [1.0 / 255.0; 3],
    };

    #[test]
    fn normalisation_matches_hand_computed_values() {
        let lut = Normalization::CIFAR10.lookup_table();
        assert!((lut[0][0] - (-0.4914 / 0.2023)).abs() < 1e-6);
        assert!((lut[2][255] - ((1.0 - 0.4465) / 0.2010)).abs() < 1e-5);
    }

    #[test]
    fn crop_shifts_and_pads_with_zero_pixels() {
        let image = ramp_image();
        let lut = IDENTITY.lookup_table();
        let mut raw = vec![0f32; IMAGE_BYTES];
        let mut out = vec![0f32; IMAGE_BYTES];
        // Offset (0, 0) in a 4-padded image shifts content right/down by 4.
        render_image(
            &image,
            ImageTransform {
                offset_y: 0,
                offset_x: 0,
                flip: false,
            },
            4,
            &lut,
            &mut raw,
        );
        round_into(&raw, &mut out);
        assert_eq!(out[0], 0.0, "top-left comes from padding");
        assert_eq!(out[4 * 32 + 4], 0.0 + 0.0, "source (0,0) has value 0");
        assert_eq!(out[4 * 32 + 10], 6.0, "source x = 6");
        assert_eq!(out[1024 + 4 * 32 + 10], 106.0, "green plane");
        // Centre offset = identity.
        render_image(
            &image,
            ImageTransform {
                offset_y: 4,
                offset_x: 4,
                flip: false,
            },
            4,
            &lut,
            &mut raw,
        );
        round_into(&raw, &mut out);
        let expected: Vec<f32> = image.iter().map(|&v| v as f32).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn flip_mirrors_columns() {
        let image = ramp_image();
        let lut = IDENTITY.lookup_table();
        let mut raw = vec![0f32; IMAGE_BYTES];
        let mut out = vec![0f32; IMAGE_BYTES];
        render_image(
            &image,
            ImageTransform {
                offset_y: 0,
                offset_x: 0,
                flip: true,
            },
            0,
            &lut,
            &mut raw,
        );
        round_into(&raw, &mut out);
        assert_eq!(out[0], 31.0);
        assert_eq!(out[31], 0.0);
        assert_eq!(out[2048 + 5 * 32 + 1], 230.0);
    }

    #[test]
    fn epoch_plans_depend_only_on_seed_and_epoch() {
        let a = EpochPlan::new(100, 3, 5, Augmentation::STANDARD, true);
        let b = EpochPlan::new(100, 3, 5, Augmentation::STANDARD, true);
        let c = EpochPlan::new(100, 3, 6, Augmentation::STANDARD, true);
        assert_eq!(a, b);
        assert_ne!(a.order, c.order);
        let mut sorted = a.order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<u32>>());
        assert!(
            a.transforms
                .iter()
                .all(|t| t.offset_x <= 8 && t.offset_y <= 8)
        );
        assert!(a.transforms.iter().any(|t| t.flip) && a.transforms.iter().any(|t| !t.flip));
    }

    #[test]
    fn prefetcher_yields_the_same_batches_as_direct_assembly() {
        let images = TaskImages {
            pixels: (0..7)
                .flat_map(|i| vec![i as u8 * 10; IMAGE_BYTES])
                .collect(),
            labels: vec![0, 1, 2, 0, 1, 2, 0],
            num_classes: 3,
        };
        let plan = EpochPlan::new(7, 1, 0, Augmentation::STANDARD, true);
        let lut = Normalization::CIFAR10.lookup_table();
        let direct: Vec<Batch> = (0..3)
            .map(|i| assemble_batch(&images, &plan, &lut, 3, i, 3))
            .collect();
        let fetched: Vec<Batch> = Prefetcher::spawn(
            Arc::new(images.clone()),
            plan.clone(),
            Normalization::CIFAR10,
            3,
            false,
            0,
        )
        .collect();
        assert_eq!(direct, fetched);
        assert_eq!(fetched[2].size(), 1);
        assert!(fetched[2].is_last && !fetched[1].is_last);
        let dropped: Vec<Batch> =
            Prefetcher::spawn(Arc::new(images), plan, Normalization::CIFAR10, 3, true, 1).collect();
        assert_eq!(dropped.len(), 1, "drop_last and skip_batches");
        assert_eq!(dropped[0], direct[1].clone().tap_last());
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn a_panic_on_the_prefetch_thread_reaches_the_consumer() {
        let images = TaskImages {
            pixels: vec![0; 2 * IMAGE_BYTES],
            labels: vec![0, 1],
            num_classes: 2,
        };
        // A plan over more images than there are: assembling the second batch panics.
        let plan = EpochPlan::sequential(4);
        let fetched: Vec<Batch> =
            Prefetcher::spawn(Arc::new(images), plan, Normalization::CIFAR10, 2, false, 0)
                .collect();
        unreachable!("{} batches came back from a failed epoch", fetched.len());
    }

    trait TapLast {
        fn tap_last(self) -> Self;
    }
    impl TapLast for Batch {
        fn tap_last(mut self) -> Self {
            self.is_last = true;
            self
        }
    }
}
