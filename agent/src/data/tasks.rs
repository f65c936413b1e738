//! A transfer task's images: selected from a CIFAR split by the task's classes, with labels
//! remapped to `0..C` (spec §6). The tasks themselves, their grammar and the class tables, are
//! `ndhtl_core::task` (shared with the coordinator, which builds without Burn or data).

pub use ndhtl_core::task::{TaskError, TaskSpec};

use super::cifar_format::{IMAGE_BYTES, RawSplit};

/// A task's images with labels remapped to `0..num_classes`; `pixels` is `len × 3072` (CHW).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskImages {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    pub num_classes: usize,
}

impl TaskImages {
    /// Selects `task`'s images from `split` and remaps labels to 0..C-1.
    ///
    /// `per_class_cap` keeps the first N images of each class in file order (the few-label
    /// setting); `None` keeps all.
    pub fn select(
        task: &TaskSpec,
        split: &RawSplit,
        split_name: &'static str,
        per_class_cap: Option<usize>,
    ) -> Result<TaskImages, TaskError> {
        let mut remap = [u8::MAX; 256];
        for (target, &label) in task.classes.iter().enumerate() {
            remap[label as usize] = target as u8;
        }
        let mut taken_per_class = vec![0usize; task.classes.len()];
        let mut images = TaskImages {
            pixels: Vec::new(),
            labels: Vec::new(),
            num_classes: task.classes.len(),
        };
        for index in 0..split.len() {
            let target = remap[split.labels[index] as usize];
            if target == u8::MAX {
                continue;
            }
            if let (Some(allowed), Some(coarse)) = (&task.superclasses, &split.coarse_labels) {
                // The reader already checked coarse against the official table; this guards a
                // task definition that disagrees with the data.
                debug_assert!(allowed.contains(&coarse[index]));
            }
            if let Some(cap) = per_class_cap
                && taken_per_class[target as usize] >= cap
            {
                continue;
            }
            taken_per_class[target as usize] += 1;
            images.labels.push(target);
            images.pixels.extend_from_slice(split.image(index));
        }
        if images.labels.is_empty() {
            return Err(TaskError::NoImages {
                task: task.name.clone(),
                split: split_name,
                dataset: task.dataset,
            });
        }
        Ok(images)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, index: usize) -> &[u8] {
        &self.pixels[index * IMAGE_BYTES..(index + 1) * IMAGE_BYTES]
    }

    /// Images per class, in target-label order.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &label in &self.labels {
            counts[label as usize] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_remaps_and_caps_in_file_order() {
        let labels = vec![9u8, 3, 5, 3, 9, 3, 1];
        let split = RawSplit {
            pixels: labels
                .iter()
                .enumerate()
                .flat_map(|(i, _)| vec![i as u8; IMAGE_BYTES])
                .collect(),
            labels,
            coarse_labels: None,
        };
        let task: TaskSpec = "cifar10:3,9".parse().unwrap();
        let all = TaskImages::select(&task, &split, "train", None).unwrap();
        assert_eq!(all.labels, vec![1, 0, 0, 1, 0]);
        let capped = TaskImages::select(&task, &split, "train", Some(2)).unwrap();
        assert_eq!(capped.labels, vec![1, 0, 0, 1]);
        // The first two of each class, in file order: records 0, 1, 3, 4.
        let firsts: Vec<u8> = (0..capped.len()).map(|i| capped.image(i)[0]).collect();
        assert_eq!(firsts, vec![0, 1, 3, 4]);
        assert_eq!(capped.class_counts(), vec![2, 2]);
        let none: TaskSpec = "cifar10:0,2".parse().unwrap();
        assert!(matches!(
            TaskImages::select(&none, &split, "test", None),
            Err(TaskError::NoImages { .. })
        ));
    }
}
