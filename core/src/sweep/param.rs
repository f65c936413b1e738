//! The parameter grammar of a sweep: every parameter is one of
//!
//! - a single value: `lr: 1e-3`;
//! - a list, one job per value (a grid axis): `k: [5, 10, 20]`;
//! - a range with a step, ends included: `eta: {range: {from: 0.05, to: 0.2, step: 0.05}}`;
//! - a distribution for random search, drawn `samples` times: `{uniform: [a, b]}`,
//!   `{log_uniform: [a, b]}`, `{choice: [x, y, z]}`.
//!
//! Values are checked while they are parsed (see [`Checked`]), so an error carries the line and
//! column of the value that caused it.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{F64Deserializer, I64Deserializer, U64Deserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// A type whose values are checked when a sweep is parsed.
pub trait Checked: Sized {
    /// `Err(reason)` when the value cannot work (`k: 0`, `lr: -1`).
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

macro_rules! unchecked {
    ($($t:ty),*) => { $(impl Checked for $t {})* };
}
unchecked!(bool, u64, String);

/// Declares a checked newtype over a number: `name(inner): condition, "reason"`.
macro_rules! checked_number {
    ($(#[$doc:meta])* $name:ident($inner:ty): |$v:ident| $ok:expr, $reason:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl Checked for $name {
            fn check(&self) -> Result<(), String> {
                let $v = self.0;
                if $ok { Ok(()) } else { Err(format!("{} {}", $v, $reason)) }
            }
        }
    };
}

checked_number!(
    /// A count of at least 1 (K, lifetimes, epochs, batch sizes).
    AtLeastOne(usize): |v| v >= 1, "is too small: it must be at least 1"
);
checked_number!(
    /// A rate above zero (learning rates).
    Positive(f64): |v| v > 0.0 && v.is_finite(), "is not allowed: it must be a number above 0"
);
checked_number!(
    /// A finite number ≥ 0 (weight decay, the clip κ).
    NonNegative(f64): |v| v >= 0.0 && v.is_finite(), "is not allowed: it must be a number ≥ 0"
);
checked_number!(
    /// Momentum, in [0, 1).
    Momentum(f64): |v| (0.0..1.0).contains(&v), "is not allowed: momentum must be in [0, 1)"
);
checked_number!(
    /// Any finite number (η₀ may be negative).
    Finite(f64): |v| v.is_finite(), "is not allowed: it must be a finite number"
);
checked_number!(
    /// A factor in (0, 1] (the source schedule's decay).
    Fraction(f64): |v| v > 0.0 && v <= 1.0, "is not allowed: it must be in (0, 1]"
);

impl Checked for crate::config::Method {}
impl Checked for crate::config::ResetPolicy {}
impl Checked for crate::config::LossSteps {}
impl Checked for crate::config::KReduce {}
impl Checked for crate::plastic::PlasticityRule {}
impl Checked for crate::plastic::PostActivity {}
impl Checked for crate::plastic::TraceMode {}
impl Checked for crate::plastic::LossKind {}

/// A random-search distribution.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution<T> {
    /// Uniform between two numbers.
    Uniform(f64, f64),
    /// Uniform in log space between two positive numbers.
    LogUniform(f64, f64),
    /// One of the values, each equally likely.
    Choice(Vec<T>),
}

/// One parameter of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub enum Param<T> {
    /// Every value is a grid point (a single value is a list of one).
    Values(Vec<T>),
    /// Drawn once per sample.
    Sampled(Distribution<T>),
}

impl<T> Param<T> {
    pub fn single(value: T) -> Self {
        Param::Values(vec![value])
    }

    /// Grid points this parameter contributes (1 for a distribution: it multiplies the samples).
    pub fn grid_len(&self) -> usize {
        match self {
            Param::Values(values) => values.len(),
            Param::Sampled(_) => 1,
        }
    }

    pub fn is_sampled(&self) -> bool {
        matches!(self, Param::Sampled(_))
    }
}

/// A number drawn by a distribution, as `T` (rounded when `T` is an integer type).
pub fn number_as<T: DeserializeOwned>(value: f64) -> Result<T, String> {
    let as_float: Result<T, de::value::Error> = T::deserialize(F64Deserializer::new(value));
    as_float.or_else(|float_error| {
        let rounded = value.round();
        let as_integer: Result<T, de::value::Error> = if rounded >= 0.0 {
            T::deserialize(U64Deserializer::new(rounded as u64))
        } else {
            T::deserialize(I64Deserializer::new(rounded as i64))
        };
        as_integer.map_err(|_| float_error.to_string())
    })
}

fn checked<T: Checked, E: de::Error>(value: T) -> Result<T, E> {
    value.check().map_err(E::custom)?;
    Ok(value)
}

/// A range `{from, to, step}`, ends included.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeSpec {
    from: f64,
    to: f64,
    step: f64,
}

/// A range must not be longer than this: a typo in `step` should not make a million jobs.
const MAX_RANGE_POINTS: f64 = 100_000.0;

impl RangeSpec {
    fn points(&self) -> Result<Vec<f64>, String> {
        if !(self.step > 0.0 && self.step.is_finite()) {
            return Err(format!("range step {} must be above 0", self.step));
        }
        if self.to < self.from {
            return Err(format!(
                "range goes from {} down to {}: `to` must be ≥ `from`",
                self.from, self.to
            ));
        }
        let count = ((self.to - self.from) / self.step + 1e-9).floor() + 1.0;
        if count > MAX_RANGE_POINTS {
            return Err(format!(
                "range has {count} points, more than {MAX_RANGE_POINTS}"
            ));
        }
        // Multiplying (not accumulating) keeps 0.1 + 0.1 + 0.1 from drifting.
        Ok((0..count as usize)
            .map(|i| {
                let value = self.from + i as f64 * self.step;
                (value * 1e12).round() / 1e12
            })
            .collect())
    }
}

struct ParamVisitor<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned + Checked> Visitor<'de> for ParamVisitor<T> {
    type Value = Param<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a value, a list of values, {range: {from, to, step}}, {uniform: [a, b]}, \
             {log_uniform: [a, b]} or {choice: [...]}",
        )
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Param::single(checked(T::deserialize(
            v.into_deserializer(),
        )?)?))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Param::single(checked(T::deserialize(
            v.into_deserializer(),
        )?)?))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Param::single(checked(T::deserialize(
            v.into_deserializer(),
        )?)?))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Param::single(checked(T::deserialize(
            v.into_deserializer(),
        )?)?))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Param::single(checked(T::deserialize(
            v.into_deserializer(),
        )?)?))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut values = Vec::new();
        while let Some(value) = seq.next_element::<CheckedValue<T>>()? {
            values.push(value.0);
        }
        if values.is_empty() {
            return Err(de::Error::custom("an empty list gives no jobs"));
        }
        Ok(Param::Values(values))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some(key) = map.next_key::<String>()? else {
            return Err(de::Error::custom("an empty map is not a parameter value"));
        };
        let param = match key.as_str() {
            "range" => {
                let range: RangeSpec = map.next_value()?;
                let points = range.points().map_err(de::Error::custom)?;
                let values = points
                    .into_iter()
                    .map(|point| {
                        number_as::<T>(point)
                            .map_err(de::Error::custom)
                            .and_then(checked)
                    })
                    .collect::<Result<Vec<T>, _>>()?;
                Param::Values(values)
            }
            "uniform" | "log_uniform" => {
                let [low, high]: [f64; 2] = map.next_value()?;
                if low >= high || low.is_nan() || high.is_nan() {
                    return Err(de::Error::custom(format!(
                        "{key}: the first bound ({low}) must be below the second ({high})"
                    )));
                }
                if key == "log_uniform" && low <= 0.0 {
                    return Err(de::Error::custom(format!(
                        "log_uniform needs bounds above 0, got {low}"
                    )));
                }
                for bound in [low, high] {
                    checked(number_as::<T>(bound).map_err(de::Error::custom)?)?;
                }
                Param::Sampled(if key == "uniform" {
                    Distribution::Uniform(low, high)
                } else {
                    Distribution::LogUniform(low, high)
                })
            }
            "choice" => {
                let values: Vec<CheckedValue<T>> = map.next_value()?;
                if values.is_empty() {
                    return Err(de::Error::custom("choice needs at least one value"));
                }
                Param::Sampled(Distribution::Choice(
                    values.into_iter().map(|value| value.0).collect(),
                ))
            }
            other => {
                return Err(de::Error::custom(format!(
                    "unknown parameter form `{other}`: use a value, a list, range, uniform, \
                     log_uniform or choice"
                )));
            }
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!(
                "`{key}` and `{extra}` in one parameter: give one form"
            )));
        }
        Ok(param)
    }
}

impl<'de, T: DeserializeOwned + Checked> Deserialize<'de> for Param<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ParamVisitor(PhantomData))
    }
}

/// A value checked as it is parsed (list elements, choices).
struct CheckedValue<T>(T);

impl<'de, T: DeserializeOwned + Checked> Deserialize<'de> for CheckedValue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = T::deserialize(deserializer)?;
        value.check().map_err(de::Error::custom)?;
        Ok(CheckedValue(value))
    }
}
