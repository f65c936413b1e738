//! A source model saved by PyTorch (`torch.save(model.state_dict())` of bearpaw's CIFAR AlexNet)
//! loads into ndhtl and computes the same features as PyTorch. The fixture and PyTorch's output
//! come from `fixtures/make_alexnet_fixture.py` (torch 2.9.0).

use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use ndhtl_agent::model::io::load_source_features;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn a_pytorch_state_dict_gives_pytorchs_features() {
    let device = Device::flex();
    let features = load_source_features(&fixture("alexnet_pattern.pt"), 0, &device).unwrap();

    // The formula the fixture's weights follow, checked on conv1 (PyTorch `features.0.weight`).
    let conv1: Vec<f32> = features
        .conv1
        .weight
        .val()
        .into_data()
        .try_into_vec()
        .unwrap();
    let fan_in = (3 * 11 * 11) as f32;
    for (i, value) in conv1.iter().enumerate().take(50) {
        let expected = (((i * 7) % 23) as f32 - 11.0) / (11.0 * fan_in.sqrt());
        assert!(
            (value - expected).abs() < 1e-6,
            "conv1[{i}] = {value}, expected {expected}"
        );
    }

    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("alexnet_pattern.json")).unwrap()).unwrap();
    let expected: Vec<f64> = reference["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let pixels: Vec<f32> = (0..3 * 32 * 32)
        .map(|i| ((i % 17) as f32 - 8.0) / 4.0)
        .collect();
    let image = Tensor::<4>::from_data(TensorData::new(pixels, [1, 3, 32, 32]), &device);
    let ours: Vec<f32> = features.forward(image).into_data().try_into_vec().unwrap();
    assert_eq!(ours.len(), 256);
    for (i, (a, e)) in ours.iter().zip(&expected).enumerate() {
        assert!(
            (*a as f64 - e).abs() < 1e-4 * (1.0 + e.abs()),
            "feature {i}: ndhtl {a} vs PyTorch {e}"
        );
    }
    assert!(
        expected.iter().filter(|v| **v > 0.0).count() > 200,
        "a meaningful comparison"
    );
}

#[test]
fn a_state_dict_without_the_conv_weights_is_refused_with_their_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.safetensors");
    // A valid safetensors file holding only an unrelated tensor.
    let header = br#"{"other.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&1f32.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let error = load_source_features(&path, 0, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("missing conv weights") && error.contains("conv1.weight"),
        "{error}"
    );
}
