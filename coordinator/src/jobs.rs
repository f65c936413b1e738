//! Building job specs from configurations: ids are the content hash of the training code
//! version, the kind, the canonical configuration and the dependency, so the same job asked for
//! by two sweeps is one job, and a fine-tune of a different source is a different job.

use ndhtl_core::config::{FinetuneConfig, SourceConfig};
use ndhtl_core::ids::{TRAINING_CODE_VERSION, content_hash};
use ndhtl_core::sweep::{BackendName, DeviceName, ResourceRequest, SweepPlan};

use crate::domain::{DeviceKind, JobKind, JobSpec, Resources};

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

/// What a sweep's `resources` section asks of agents.
pub fn resources_of(request: &ResourceRequest) -> Resources {
    Resources {
        backend: request.backend.map(|backend| {
            match backend {
                BackendName::Flex => "flex",
                BackendName::Tch => "tch",
            }
            .to_string()
        }),
        device: request.device.map(|device| match device {
            DeviceName::Cpu => DeviceKind::Cpu,
            DeviceName::Cuda => DeviceKind::Cuda,
        }),
    }
}

/// Every job of an expanded sweep: its source jobs first, then the fine-tunes of each source.
pub fn jobs_of_plan(plan: &SweepPlan) -> Vec<JobSpec> {
    let resources = resources_of(&plan.resources);
    let sources: Vec<JobSpec> = plan
        .sources
        .iter()
        .map(|config| source_job(config, resources.clone()))
        .collect();
    let finetunes = plan
        .finetunes
        .iter()
        .map(|planned| finetune_job(&planned.config, &sources[planned.source], resources.clone()));
    let mut jobs = sources.clone();
    jobs.extend(finetunes);
    jobs
}

/// A sweep's id: its name (as a slug) and a hash of its jobs, so submitting the same sweep
/// twice names the same sweep, and a changed sweep gets a new id.
pub fn sweep_id(name: &str, jobs: &[JobSpec]) -> String {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let ids: Vec<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
    format!(
        "{}-{}",
        if slug.is_empty() { "sweep" } else { &slug },
        &content_hash(&ids)[..10]
    )
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
