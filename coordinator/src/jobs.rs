//! Building job specs from configurations: ids are the content hash of the training code
//! version, the kind, the canonical configuration and the dependency, so the same job asked for
//! by two sweeps is one job, and a fine-tune of a different source is a different job.

use ndhtl_core::config::{FinetuneConfig, SourceConfig};
use ndhtl_core::ids::{TRAINING_CODE_VERSION, content_hash};

use crate::domain::{JobKind, JobSpec, Resources};

fn canonical<T: serde::Serialize>(config: &T) -> String {
    serde_json::to_string(config).expect("configurations serialise")
}

/// A source-training job.
pub fn source_job(config: &SourceConfig, resources: Resources) -> JobSpec {
    let config_json = canonical(config);
    JobSpec {
        id: content_hash(&(
            TRAINING_CODE_VERSION,
            JobKind::Source,
            &config_json,
            None::<&str>,
        )),
        kind: JobKind::Source,
        config_json,
        depends_on: None,
        resources,
    }
}

/// A fine-tune of `source`'s output.
pub fn finetune_job(config: &FinetuneConfig, source: &JobSpec, resources: Resources) -> JobSpec {
    let config_json = canonical(config);
    JobSpec {
        id: content_hash(&(
            TRAINING_CODE_VERSION,
            JobKind::Finetune,
            &config_json,
            Some(&source.id),
        )),
        kind: JobKind::Finetune,
        config_json,
        depends_on: Some(source.id.clone()),
        resources,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_content_and_dependency() {
        let source = source_job(&SourceConfig::default(), Resources::ANY);
        let other_source = source_job(
            &SourceConfig {
                epochs: 10,
                ..SourceConfig::default()
            },
            Resources::ANY,
        );
        let tune = finetune_job(&FinetuneConfig::default(), &source, Resources::ANY);
        assert_eq!(
            tune.id,
            finetune_job(&FinetuneConfig::default(), &source, Resources::ANY).id
        );
        assert_ne!(
            tune.id,
            finetune_job(&FinetuneConfig::default(), &other_source, Resources::ANY).id
        );
        assert_ne!(
            tune.id,
            finetune_job(
                &FinetuneConfig {
                    seed: 1,
                    ..FinetuneConfig::default()
                },
                &source,
                Resources::ANY
            )
            .id
        );
        assert_eq!(tune.depends_on.as_deref(), Some(source.id.as_str()));
        let parsed: FinetuneConfig = serde_json::from_str(&tune.config_json).unwrap();
        assert_eq!(parsed, FinetuneConfig::default());
    }
}
