//! The NDHTL plastic output layer (spec §3).
//!
//! One step t, with X(t) the `B×D` features and state H(t), E(t):
//!
//! ```text
//! (P1) Z(t)   = b + X(t) · (W + A ⊙ H(t))                 logits, B×C
//! (P2) Y(t)   = softmax_row(Z(t))   (or tanh, --post tanh)  post-synaptic activity
//! (P3) m(t)   = tanh(Y(t) u + c)                          B×1, the "dopamine" signal
//! (P4) M(t)   = mean_b m_b(t)        (fan-out: mean_b m_b(t) · g + h ∈ ℝ^C)
//! (P5) Q(t)   = (1/B) X(t)ᵀ Y(t)                          D×C
//! (P6) H(t+1) = clamp(H(t) + M(t) ⊙ E(t), −κ, κ)          uses the OLD E(t)
//! (P7) E(t+1) = (1 − η) E(t) + η Q(t)
//! ```
//!
//! `--rule simple`: H(t+1) = clamp(H(t) + M(t) ⊙ Q(t), −κ, κ), E unused.
//! Per-sample traces keep one H, E per batch slot (S = B); shared traces keep one (S = 1).

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::tanh;
use burn::tensor::{Device, Tensor};

use super::alexnet::{CifarAlexNet, FEATURE_DIM};
use super::clamp::clamp;
use super::init::{InitStream, default_bound, init_rng, uniform_param};
use super::softmax::softmax;

pub use ndhtl_core::plastic::{PlasticConfig, PlasticityRule, PostActivity, TraceMode};

/// Learned parameters the plastic layer adds to the classifier's W and b.
#[derive(Module, Debug)]
pub struct PlasticParams {
    /// α, per connection, D×C.
    pub alpha: Param<Tensor<2>>,
    /// η, the eligibility-trace rate, a learned scalar (shape `[1]`).
    pub eta: Param<Tensor<1>>,
    /// The modulator head `Linear(C, 1)`: u, c.
    pub modulator: Linear,
    /// Optional fan-out `Linear(1, C)`: g, h.
    pub fanout: Option<Linear>,
}

impl PlasticParams {
    /// α = 0.01·U[0,1), η = `eta0`, modulator and fan-out with `nn.Linear` defaults (D-17).
    pub fn new(num_classes: usize, eta0: f32, fanout: bool, seed: u64, device: &Device) -> Self {
        let mut alpha_rng = init_rng(seed, InitStream::Alpha);
        let alpha = uniform_param(
            &mut alpha_rng,
            [FEATURE_DIM, num_classes],
            0.0,
            0.01,
            device,
        );
        let eta = Param::from_tensor(Tensor::from_floats([eta0], device));
        let mut modulator_rng = init_rng(seed, InitStream::Modulator);
        let mut modulator = LinearConfig::new(num_classes, 1).init(device);
        let bound = default_bound(num_classes);
        modulator.weight =
            uniform_param(&mut modulator_rng, [num_classes, 1], -bound, bound, device);
        modulator.bias = Some(uniform_param(
            &mut modulator_rng,
            [1],
            -bound,
            bound,
            device,
        ));
        let fanout = fanout.then(|| {
            let mut rng = init_rng(seed, InitStream::Fanout);
            let mut layer = LinearConfig::new(1, num_classes).init(device);
            layer.weight = uniform_param(&mut rng, [1, num_classes], -1.0, 1.0, device);
            layer.bias = Some(uniform_param(&mut rng, [num_classes], -1.0, 1.0, device));
            layer
        });
        PlasticParams {
            alpha,
            eta,
            modulator,
            fanout,
        }
    }
}

/// The Hebbian state: H and E, each `S×D×C` (S = 1 shared, S = B per-sample). Not parameters.
#[derive(Debug, Clone)]
pub struct HebbianState {
    pub hebb: Tensor<3>,
    pub elig: Tensor<3>,
}

impl HebbianState {
    pub fn zeros(slots: usize, num_classes: usize, device: &Device) -> Self {
        HebbianState {
            hebb: Tensor::zeros([slots, FEATURE_DIM, num_classes], device),
            elig: Tensor::zeros([slots, FEATURE_DIM, num_classes], device),
        }
    }

    pub fn slots(&self) -> usize {
        self.hebb.dims()[0]
    }

    /// Cuts the autodiff graph; the values carry over (truncated BPTT, spec §4.2).
    pub fn detach(self) -> Self {
        HebbianState {
            hebb: self.hebb.detach(),
            elig: self.elig.detach(),
        }
    }

    /// Moves the state to another device (e.g. the non-autodiff one for evaluation).
    pub fn to_device(self, device: &Device) -> Self {
        HebbianState {
            hebb: self.hebb.to_device(device),
            elig: self.elig.to_device(device),
        }
    }

    /// The frozen H used at evaluation: the trace itself, or the mean over slots (spec §4.3).
    pub fn eval_hebb(&self) -> Tensor<2> {
        let [slots, d, c] = self.hebb.dims();
        if slots == 1 {
            self.hebb.clone().reshape([d, c])
        } else {
            self.hebb.clone().mean_dim(0).reshape([d, c])
        }
    }
}

/// What one plastic step produces.
#[derive(Debug, Clone)]
pub struct PlasticStep {
    /// Z(t), `B×C`: the loss is taken on these.
    pub logits: Tensor<2>,
    /// H(t+1), E(t+1).
    pub state: HebbianState,
    /// m(t) for every sample, `B×1` (logged as "mean m").
    pub modulator: Tensor<2>,
}

impl CifarAlexNet {
    /// The plastic parameters; panics on an STL model (a programming error, not user input).
    pub fn plastic_params(&self) -> &PlasticParams {
        self.plastic
            .as_ref()
            .expect("NDHTL step on a model without plastic parameters")
    }

    /// One plastic step (P1)–(P7) on features `x` (`B×D`).
    pub fn plastic_step(
        &self,
        x: Tensor<2>,
        state: HebbianState,
        config: &PlasticConfig,
    ) -> PlasticStep {
        let params = self.plastic_params();
        let [batch, d] = x.dims();
        let weight = self.classifier.weight.val();
        let c = weight.dims()[1];
        let bias = self
            .classifier
            .bias
            .as_ref()
            .expect("classifier has a bias")
            .val();
        let alpha = params.alpha.val();
        let slots = state.slots();
        debug_assert!(
            slots == 1 || slots == batch,
            "per-sample state must have one slot per sample"
        );

        // (P1) logits with the plastic term.
        let logits = if slots == 1 {
            let effective = weight + alpha * state.hebb.clone().reshape([d, c]);
            x.clone().matmul(effective) + bias.unsqueeze_dim(0)
        } else {
            let effective =
                weight.unsqueeze_dim::<3>(0) + alpha.unsqueeze_dim::<3>(0) * state.hebb.clone();
            x.clone()
                .unsqueeze_dim::<3>(1)
                .matmul(effective)
                .reshape([batch, c])
                + bias.unsqueeze_dim(0)
        };
        // (P2) post-synaptic activity.
        let post = match config.post {
            PostActivity::Softmax => softmax(logits.clone(), 1),
            PostActivity::Tanh => tanh(logits.clone()),
        };
        // (P3) the neuromodulator.
        let modulator = tanh(params.modulator.forward(post.clone()));
        // (P4) M: per slot, scalar (width 1) or fan-out (width C).
        let per_slot = match config.trace {
            // At batch 1 the mean over the batch is the one row itself, bit for bit; skipping
            // it saves its backward's tensor of ones and product (two kernels per image).
            TraceMode::Shared if batch == 1 => modulator.clone(),
            TraceMode::Shared => modulator.clone().mean_dim(0),
            TraceMode::PerSample => modulator.clone(),
        };
        let modulation = match &params.fanout {
            Some(fanout) => fanout.forward(per_slot),
            None => per_slot,
        }
        .unsqueeze_dim::<3>(1); // S×1×(1|C): broadcast over the D rows
        // (P5) the Hebbian product x_i x_j.
        let hebbian_product = match config.trace {
            TraceMode::Shared => {
                let summed = x.transpose().matmul(post);
                // At batch 1 (the paper's regime) the mean is the sum: one kernel fewer.
                let mean = if batch == 1 {
                    summed
                } else {
                    summed.div_scalar(batch as f32)
                };
                mean.unsqueeze_dim::<3>(0)
            }
            TraceMode::PerSample => x.unsqueeze_dim::<3>(2) * post.unsqueeze_dim::<3>(1),
        };
        let clip = config.clip;
        let state = match config.rule {
            PlasticityRule::Retroactive => {
                let eta = params.eta.val().reshape([1, 1, 1]);
                // (P6) uses the old eligibility trace …
                let hebb = clamp(state.hebb + modulation * state.elig.clone(), -clip, clip);
                // (P7) … which is updated afterwards: (1 − η) E + η Q, written E + η (Q − E),
                // three kernels rather than five (the same value, rounded differently).
                let elig = state.elig.clone() + (hebbian_product - state.elig) * eta;
                HebbianState { hebb, elig }
            }
            PlasticityRule::Simple => HebbianState {
                hebb: clamp(state.hebb + modulation * hebbian_product, -clip, clip),
                elig: state.elig,
            },
        };
        PlasticStep {
            logits,
            state,
            modulator,
        }
    }

    /// Evaluation logits with H frozen (spec §4.3): Z = b + X (W + A ⊙ H_eval).
    pub fn plastic_eval_logits(&self, x: Tensor<2>, hebb_eval: Tensor<2>) -> Tensor<2> {
        let params = self.plastic_params();
        let bias = self
            .classifier
            .bias
            .as_ref()
            .expect("classifier has a bias")
            .val();
        let effective = self.classifier.weight.val() + params.alpha.val() * hebb_eval;
        x.matmul(effective) + bias.unsqueeze_dim(0)
    }
}
