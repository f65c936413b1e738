//! Transfer tasks: which classes of which dataset make up a source or a target.
//!
//! - `T1`..`T10`: the paper's ten CIFAR-100 targets (spec §6), each the union of two superclasses.
//! - Custom tasks: `cifar100:apple,bear,3`, `cifar10:cat,dog`, `cifar100:super=fish,flowers`,
//!   `cifar10` (all classes). Classes are names or indices; `super=` takes CIFAR-100 superclasses.
//!
//! Target label `k` is the `k`-th smallest dataset label of the task (spec §6).
//!
//! The grammar and the class tables live here, without Burn or data, so that the coordinator
//! checks a sweep's targets as fully as an agent does; agents select a task's images
//! (`ndhtl_agent::data::TaskImages::select`).

use std::fmt;
use std::str::FromStr;

use crate::dataset::DatasetKind;
use crate::labels::{
    CIFAR10_CLASS_NAMES, CIFAR100_COARSE_NAMES, CIFAR100_FINE_NAMES, cifar10_class_index,
    cifar100_coarse_index, cifar100_fine_index, cifar100_fine_labels_of_coarse,
};

/// The superclass pairs of the paper's ten target tasks (spec §6, Table 2 reconstructed).
/// T6 follows its class list (large carnivores + large omnivores/herbivores), not its header.
pub const PAPER_TASK_SUPERCLASSES: [[u8; 2]; 10] = [
    [0, 1],   // T1 aquatic_mammals + fish
    [2, 4],   // T2 flowers + fruit_and_vegetables
    [3, 5],   // T3 food_containers + household_electrical_devices
    [6, 9],   // T4 household_furniture + large_man-made_outdoor_things
    [7, 13],  // T5 insects + non-insect_invertebrates
    [8, 11],  // T6 large_carnivores + large_omnivores_and_herbivores
    [12, 16], // T7 medium_mammals + small_mammals
    [14, 15], // T8 people + reptiles
    [10, 17], // T9 large_natural_outdoor_scenes + trees
    [18, 19], // T10 vehicles_1 + vehicles_2
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error(
        "unknown task `{0}`: use T1..T10, or `cifar10:` / `cifar100:` followed by class names or indices (e.g. `cifar100:apple,bear` or `cifar100:super=fish,flowers`)"
    )]
    UnknownTask(String),
    #[error("task `{task}`: unknown {dataset} class `{class}`{}", did_you_mean(*.suggestion))]
    UnknownClass {
        task: String,
        dataset: DatasetKind,
        class: String,
        /// The official name closest to `class`, when one is close.
        suggestion: Option<&'static str>,
    },
    #[error("task `{task}`: unknown CIFAR-100 superclass `{superclass}`{}", did_you_mean(*.suggestion))]
    UnknownSuperclass {
        task: String,
        superclass: String,
        suggestion: Option<&'static str>,
    },
    #[error(
        "task `{task}`: `super=` must start the list and stand alone, as in `cifar100:super=fish,flowers`"
    )]
    SuperclassAfterClasses { task: String },
    #[error("task `{task}`: superclasses only exist in CIFAR-100")]
    SuperclassOnCifar10 { task: String },
    #[error("task `{task}`: needs at least 2 classes, got {count}")]
    TooFewClasses { task: String, count: usize },
    #[error("task `{task}` selected no images from the {split} split of {dataset}")]
    NoImages {
        task: String,
        split: &'static str,
        dataset: DatasetKind,
    },
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|name| format!("; did you mean `{name}`?"))
        .unwrap_or_default()
}

/// The name in `names` closest to `typed` by edit distance, ignoring case and writing spaces
/// and hyphens as underscores, if it is within a third of the longer of the two (at least 1)
/// and no other name is as close.
fn closest_name(typed: &str, names: &[&'static str]) -> Option<&'static str> {
    let typed: Vec<char> = typed
        .to_lowercase()
        .chars()
        .map(|c| if c == ' ' || c == '-' { '_' } else { c })
        .collect();
    let mut best: Option<(usize, &'static str)> = None;
    let mut tied = false;
    for &name in names {
        let distance = edit_distance(&typed, &name.chars().collect::<Vec<_>>());
        match best {
            Some((closest, _)) if distance > closest => {}
            Some((closest, _)) if distance == closest => tied = true,
            _ => {
                best = Some((distance, name));
                tied = false;
            }
        }
    }
    let (distance, name) = best?;
    let allowed = (name.chars().count().max(typed.len()) / 3).max(1);
    (distance <= allowed && !tied).then_some(name)
}

/// Levenshtein distance: insertions, deletions and substitutions of one character each.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, &a_char) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, &b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != b_char);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// A set of classes of one dataset, forming a classification problem.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskSpec {
    /// How the user wrote it (`T3`, `cifar10:cat,dog`, …); stable, used in ids and reports.
    pub name: String,
    pub dataset: DatasetKind,
    /// Dataset labels of the task, ascending and unique. Target label k is `classes[k]`.
    pub classes: Vec<u8>,
    /// For superclass-defined tasks: the superclasses every selected image must belong to.
    pub superclasses: Option<Vec<u8>>,
}

impl TaskSpec {
    /// The paper's target task `T{number}` (1-based).
    pub fn paper_task(number: usize) -> Option<TaskSpec> {
        let pair = PAPER_TASK_SUPERCLASSES.get(number.checked_sub(1)?)?;
        let mut classes: Vec<u8> = pair
            .iter()
            .flat_map(|&c| cifar100_fine_labels_of_coarse(c))
            .collect();
        classes.sort_unstable();
        Some(TaskSpec {
            name: format!("T{number}"),
            dataset: DatasetKind::Cifar100,
            classes,
            superclasses: Some(pair.to_vec()),
        })
    }

    /// All classes of a dataset (e.g. the default CIFAR-10 source).
    pub fn whole_dataset(dataset: DatasetKind) -> TaskSpec {
        TaskSpec {
            name: dataset.as_str().into(),
            dataset,
            classes: (0..dataset.num_classes() as u8).collect(),
            superclasses: None,
        }
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// Human-readable class names, in target-label order.
    pub fn class_names(&self) -> Vec<&'static str> {
        self.classes
            .iter()
            .map(|&c| match self.dataset {
                DatasetKind::Cifar10 => CIFAR10_CLASS_NAMES[c as usize],
                DatasetKind::Cifar100 => CIFAR100_FINE_NAMES[c as usize],
            })
            .collect()
    }
}

impl fmt::Display for TaskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl FromStr for TaskSpec {
    type Err = TaskError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        if let Some(number) = trimmed
            .strip_prefix('T')
            .or_else(|| trimmed.strip_prefix('t'))
            .and_then(|n| n.parse::<usize>().ok())
        {
            return TaskSpec::paper_task(number)
                .ok_or_else(|| TaskError::UnknownTask(text.to_string()));
        }
        let (dataset_text, classes_text) = trimmed.split_once(':').unwrap_or((trimmed, ""));
        let dataset = match dataset_text.to_ascii_lowercase().as_str() {
            "cifar10" | "cifar-10" => DatasetKind::Cifar10,
            "cifar100" | "cifar-100" => DatasetKind::Cifar100,
            _ => return Err(TaskError::UnknownTask(text.to_string())),
        };
        if classes_text.trim().is_empty() {
            let mut spec = TaskSpec::whole_dataset(dataset);
            spec.name = trimmed.to_string();
            return Ok(spec);
        }
        let mut classes = Vec::new();
        let mut superclasses = None;
        if let Some(super_list) = classes_text.trim().strip_prefix("super=") {
            if dataset != DatasetKind::Cifar100 {
                return Err(TaskError::SuperclassOnCifar10 {
                    task: text.to_string(),
                });
            }
            let mut chosen = Vec::new();
            for item in super_list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                let coarse = item
                    .parse::<u8>()
                    .ok()
                    .filter(|&c| (c as usize) < CIFAR100_COARSE_NAMES.len())
                    .or_else(|| cifar100_coarse_index(item))
                    .ok_or_else(|| TaskError::UnknownSuperclass {
                        task: text.to_string(),
                        superclass: item.to_string(),
                        suggestion: closest_name(item, &CIFAR100_COARSE_NAMES),
                    })?;
                chosen.push(coarse);
                classes.extend(cifar100_fine_labels_of_coarse(coarse));
            }
            chosen.sort_unstable();
            chosen.dedup();
            superclasses = Some(chosen);
        } else {
            for item in classes_text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                if item.starts_with("super=") {
                    return Err(TaskError::SuperclassAfterClasses {
                        task: text.to_string(),
                    });
                }
                let by_index = item
                    .parse::<u8>()
                    .ok()
                    .filter(|&c| (c as usize) < dataset.num_classes());
                let by_name = || match dataset {
                    DatasetKind::Cifar10 => cifar10_class_index(item),
                    DatasetKind::Cifar100 => cifar100_fine_index(item),
                };
                let class = by_index
                    .or_else(by_name)
                    .ok_or_else(|| TaskError::UnknownClass {
                        task: text.to_string(),
                        dataset,
                        class: item.to_string(),
                        suggestion: closest_name(
                            item,
                            match dataset {
                                DatasetKind::Cifar10 => &CIFAR10_CLASS_NAMES,
                                DatasetKind::Cifar100 => &CIFAR100_FINE_NAMES,
                            },
                        ),
                    })?;
                classes.push(class);
            }
        }
        classes.sort_unstable();
        classes.dedup();
        if classes.len() < 2 {
            return Err(TaskError::TooFewClasses {
                task: text.to_string(),
                count: classes.len(),
            });
        }
        Ok(TaskSpec {
            name: trimmed.to_string(),
            dataset,
            classes,
            superclasses,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_of(task: &str) -> Vec<&'static str> {
        task.parse::<TaskSpec>().unwrap().class_names()
    }

    #[test]
    fn t1_maps_labels_as_in_the_spec() {
        let t1: TaskSpec = "T1".parse().unwrap();
        assert_eq!(t1.classes, vec![1, 4, 30, 32, 55, 67, 72, 73, 91, 95]);
        assert_eq!(
            t1.class_names(),
            vec![
                "aquarium_fish",
                "beaver",
                "dolphin",
                "flatfish",
                "otter",
                "ray",
                "seal",
                "shark",
                "trout",
                "whale"
            ]
        );
    }

    #[test]
    fn every_paper_task_matches_the_spec_class_lists() {
        // Spec §6, in the paper's order, normalised to the official names.
        let expected: [&[&str]; 10] = [
            &[
                "trout",
                "shark",
                "ray",
                "flatfish",
                "aquarium_fish",
                "whale",
                "seal",
                "dolphin",
                "otter",
                "beaver",
            ],
            &[
                "sweet_pepper",
                "pear",
                "orange",
                "mushroom",
                "apple",
                "tulip",
                "sunflower",
                "rose",
                "poppy",
                "orchid",
            ],
            &[
                "television",
                "telephone",
                "lamp",
                "keyboard",
                "clock",
                "plate",
                "cup",
                "can",
                "bowl",
                "bottle",
            ],
            &[
                "skyscraper",
                "road",
                "house",
                "castle",
                "bridge",
                "wardrobe",
                "table",
                "couch",
                "chair",
                "bed",
            ],
            &[
                "worm",
                "spider",
                "lobster",
                "crab",
                "cockroach",
                "caterpillar",
                "butterfly",
                "beetle",
                "snail",
                "bee",
            ],
            &[
                "kangaroo",
                "elephant",
                "chimpanzee",
                "cattle",
                "camel",
                "wolf",
                "tiger",
                "lion",
                "leopard",
                "bear",
            ],
            &[
                "squirrel",
                "rabbit",
                "shrew",
                "mouse",
                "hamster",
                "skunk",
                "raccoon",
                "possum",
                "porcupine",
                "fox",
            ],
            &[
                "turtle",
                "snake",
                "lizard",
                "dinosaur",
                "crocodile",
                "woman",
                "man",
                "girl",
                "boy",
                "baby",
            ],
            &[
                "sea",
                "plain",
                "mountain",
                "forest",
                "cloud",
                "willow_tree",
                "palm_tree",
                "oak_tree",
                "pine_tree",
                "maple_tree",
            ],
            &[
                "tractor",
                "tank",
                "rocket",
                "streetcar",
                "lawn_mower",
                "train",
                "pickup_truck",
                "motorcycle",
                "bicycle",
                "bus",
            ],
        ];
        let mut all_superclasses = Vec::new();
        for (i, names) in expected.iter().enumerate() {
            let mut want: Vec<&str> = names.to_vec();
            want.sort_by_key(|n| cifar100_fine_index(n).unwrap());
            let task = TaskSpec::paper_task(i + 1).unwrap();
            assert_eq!(task.class_names(), want, "T{}", i + 1);
            all_superclasses.extend(task.superclasses.unwrap());
        }
        all_superclasses.sort_unstable();
        assert_eq!(
            all_superclasses,
            (0..20).collect::<Vec<u8>>(),
            "every superclass exactly once"
        );
    }

    #[test]
    fn custom_tasks_by_name_index_and_superclass() {
        assert_eq!(names_of("cifar10:dog,cat"), vec!["cat", "dog"]);
        assert_eq!(names_of("cifar10:0,truck"), vec!["airplane", "truck"]);
        let t: TaskSpec = "cifar100:super=fish,vehicles_2".parse().unwrap();
        assert_eq!(t.num_classes(), 10);
        assert_eq!(t.superclasses, Some(vec![1, 19]));
        assert_eq!("cifar10".parse::<TaskSpec>().unwrap().num_classes(), 10);
        assert_eq!("t10".parse::<TaskSpec>().unwrap().name, "T10");
    }

    #[test]
    fn edit_distances_are_the_hand_counted_ones() {
        let chars = |s: &str| s.chars().collect::<Vec<_>>();
        assert_eq!(edit_distance(&chars("aple"), &chars("apple")), 1);
        assert_eq!(edit_distance(&chars("kitten"), &chars("sitting")), 3);
        assert_eq!(edit_distance(&chars(""), &chars("cat")), 3);
        assert_eq!(edit_distance(&chars("flaw"), &chars("lawn")), 2);
        assert_eq!(edit_distance(&chars("same"), &chars("same")), 0);
    }

    #[test]
    fn a_misspelt_class_gets_the_nearest_official_name_and_a_stranger_none() {
        let suggestion = |task: &str| match task.parse::<TaskSpec>() {
            Err(TaskError::UnknownClass { suggestion, .. })
            | Err(TaskError::UnknownSuperclass { suggestion, .. }) => suggestion,
            other => panic!("{task}: {other:?}"),
        };
        assert_eq!(suggestion("cifar100:aple,bear"), Some("apple"));
        assert_eq!(
            suggestion("cifar100:Aquarium Fish,bear"),
            Some("aquarium_fish")
        );
        assert_eq!(suggestion("cifar100:apple,maple-tree"), Some("maple_tree"));
        assert_eq!(suggestion("cifar10:cat,airplain"), Some("airplane"));
        assert_eq!(suggestion("cifar100:super=fishes"), Some("fish"));
        assert_eq!(suggestion("cifar10:cat,wolf"), None, "not a CIFAR-10 class");
        assert_eq!(suggestion("cifar100:super=dragons"), None);
        let message = "cifar100:aple,bear"
            .parse::<TaskSpec>()
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "task `cifar100:aple,bear`: unknown cifar100 class `aple`; did you mean `apple`?"
        );
        let message = "cifar10:cat,wolf"
            .parse::<TaskSpec>()
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "task `cifar10:cat,wolf`: unknown cifar10 class `wolf`"
        );
    }

    #[test]
    fn bad_tasks_are_explained() {
        assert!(matches!(
            "T11".parse::<TaskSpec>(),
            Err(TaskError::UnknownTask(_))
        ));
        assert!(matches!(
            "imagenet:cat".parse::<TaskSpec>(),
            Err(TaskError::UnknownTask(_))
        ));
        assert!(matches!(
            "cifar10:cat,wolf".parse::<TaskSpec>(),
            Err(TaskError::UnknownClass { class, .. }) if class == "wolf"
        ));
        assert!(matches!(
            "cifar10:cat".parse::<TaskSpec>(),
            Err(TaskError::TooFewClasses { .. })
        ));
        assert!(matches!(
            "cifar10:super=fish".parse::<TaskSpec>(),
            Err(TaskError::SuperclassOnCifar10 { .. })
        ));
        assert!(matches!(
            "cifar100:apple,super=fish".parse::<TaskSpec>(),
            Err(TaskError::SuperclassAfterClasses { .. })
        ));
        assert!(matches!(
            "cifar100:super=dragons".parse::<TaskSpec>(),
            Err(TaskError::UnknownSuperclass { .. })
        ));
    }
}
