//! A process-wide choice among a few values, read from the environment at start and switched
//! by benchmarks for side-by-side rows: [`crate::model::conv::ConvolutionGradients`],
//! [`crate::model::softmax::SoftmaxKernels`], [`crate::train::optimizer::SgdKernel`] and
//! [`crate::upload::HostUploads`]. One atomic load to read, so it can sit on a hot path.

use std::sync::atomic::{AtomicU8, Ordering};

/// One of `choices`, the first until replaced.
pub struct ProcessSetting<T: 'static> {
    choices: &'static [T],
    index: AtomicU8,
}

impl<T: Copy + PartialEq + 'static> ProcessSetting<T> {
    /// A setting over `choices` (at most 256), starting at the first.
    pub const fn new(choices: &'static [T]) -> Self {
        assert!(!choices.is_empty() && choices.len() <= 256);
        ProcessSetting {
            choices,
            index: AtomicU8::new(0),
        }
    }

    /// The value now in force.
    pub fn current(&self) -> T {
        self.choices[usize::from(self.index.load(Ordering::Relaxed))]
    }

    /// Makes `value` the setting; returns the previous one. `value` must be one of the choices.
    pub fn replace(&self, value: T) -> T {
        let index = self.choices.iter().position(|choice| *choice == value);
        let index = index.expect("the value is one of the setting's choices") as u8;
        self.choices[usize::from(self.index.swap(index, Ordering::Relaxed))]
    }
}

/// What the environment variable `name` asks for, parsed; `T::default()` when it is unset.
pub fn from_environment<T: std::str::FromStr + Default>(name: &str) -> Result<T, T::Err> {
    std::env::var(name).map_or(Ok(T::default()), |value| value.parse())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_the_first_choice_and_replace_returns_the_previous_value() {
        static SETTING: ProcessSetting<char> = ProcessSetting::new(&['a', 'b', 'c']);
        assert_eq!(SETTING.current(), 'a');
        assert_eq!(SETTING.replace('c'), 'a');
        assert_eq!(SETTING.current(), 'c');
        assert_eq!(SETTING.replace('b'), 'c');
        assert_eq!(SETTING.current(), 'b');
    }
}
