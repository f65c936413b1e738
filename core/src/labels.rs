//! The official CIFAR label tables, in index order.
//!
//! Indices follow the alphabetical `fine_label_names` / `coarse_label_names` of the official
//! CIFAR-100 release and `batches.meta.txt` of CIFAR-10.

/// CIFAR-10 class names, index 0..9.
pub const CIFAR10_CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR-100 fine label names, index 0..99.
pub const CIFAR100_FINE_NAMES: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

/// CIFAR-100 coarse (superclass) names, index 0..19.
pub const CIFAR100_COARSE_NAMES: [&str; 20] = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
];

/// The standard fine-to-coarse table: `CIFAR100_FINE_TO_COARSE[fine] == coarse`.
pub const CIFAR100_FINE_TO_COARSE: [u8; 100] = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15,
    3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4,
    2, 0, 17, 4, 18, 17, 10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
];

/// Index of a CIFAR-10 class name.
pub fn cifar10_class_index(name: &str) -> Option<u8> {
    CIFAR10_CLASS_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u8)
}

/// Index of a CIFAR-100 fine label name.
pub fn cifar100_fine_index(name: &str) -> Option<u8> {
    CIFAR100_FINE_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u8)
}

/// Index of a CIFAR-100 superclass name.
pub fn cifar100_coarse_index(name: &str) -> Option<u8> {
    CIFAR100_COARSE_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u8)
}

/// The five fine labels of a superclass, ascending.
pub fn cifar100_fine_labels_of_coarse(coarse: u8) -> Vec<u8> {
    (0u8..100)
        .filter(|&fine| CIFAR100_FINE_TO_COARSE[fine as usize] == coarse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_superclass_has_exactly_five_fine_labels() {
        for coarse in 0..20u8 {
            assert_eq!(
                cifar100_fine_labels_of_coarse(coarse).len(),
                5,
                "coarse {coarse}"
            );
        }
    }

    #[test]
    fn names_resolve_to_their_index() {
        assert_eq!(cifar100_fine_index("aquarium_fish"), Some(1));
        assert_eq!(cifar100_fine_index("worm"), Some(99));
        assert_eq!(cifar100_coarse_index("vehicles_2"), Some(19));
        assert_eq!(cifar10_class_index("truck"), Some(9));
        assert_eq!(cifar100_fine_index("willow"), None);
    }
}
